// Find bpffs and cgroup2 from /proc/mounts (never hard-coded).
import fs from 'node:fs';
import { FeatureMissingError } from './errors.js';
import { run } from './exec.js';

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
}

export function parseMounts(text: string): MountEntry[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source = '', target = '', fstype = ''] = l.split(' ');
      // /proc/mounts escapes space, tab, newline and backslash as octal
      return { source, target: target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), fstype };
    });
}

export function findMount(fstype: string, mountsText = fs.readFileSync('/proc/mounts', 'utf8')): string | undefined {
  return parseMounts(mountsText).find((m) => m.fstype === fstype)?.target;
}

export function cgroup2Root(): string {
  const p = findMount('cgroup2');
  if (!p) throw new FeatureMissingError('cgroup2', 'no cgroup2 mount in /proc/mounts');
  return p;
}

/** The bpffs mount; mounts one at /sys/fs/bpf if there is none (left mounted, as Cilium does). */
export async function ensureBpffs(): Promise<string> {
  const p = findMount('bpf');
  if (p) return p;
  const target = '/sys/fs/bpf';
  fs.mkdirSync(target, { recursive: true });
  await run('mount bpffs', ['mount', '-t', 'bpf', 'bpf', target]);
  const again = findMount('bpf');
  if (!again) throw new FeatureMissingError('bpffs', `mounted bpffs at ${target} but it is not in /proc/mounts`);
  return again;
}
