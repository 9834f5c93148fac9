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

/** statfs f_type of the file systems podwarp looks up. */
const FS_MAGIC: Record<string, number> = { bpf: 0xcafe4a11, cgroup2: 0x63677270 };

/**
 * Whether a listed mount can be reached through its mount point: one that
 * another mount hides (mounted on top of it, e.g. a bpffs some tool mounted on
 * `/`, which path lookups never enter) is listed in /proc/mounts but unusable.
 */
function reachable(m: MountEntry): boolean {
  const magic = FS_MAGIC[m.fstype];
  if (magic === undefined) return true;
  try {
    return fs.statfsSync(m.target).type === magic;
  } catch {
    return false;
  }
}

/** /proc/mounts without the lines of mounts that cannot be reached (see reachable()). */
export function reachableMounts(): string {
  const text = fs.readFileSync('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter((l) => {
      const [m] = parseMounts(l);
      return !m || reachable(m);
    })
    .join('\n');
}

/** The first mount of `fstype` in `mountsText` (default: the reachable mounts of /proc/mounts). */
export function findMount(fstype: string, mountsText = reachableMounts()): string | undefined {
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
