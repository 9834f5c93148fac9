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

/** Where this process mounted a bpffs because the node had none (ensureBpffs), if it did. */
let mountedHere: string | undefined;
export function bpffsMountedByPodwarp(): string | undefined {
  return mountedHere;
}

/** Whether this process runs in a Kubernetes pod (the kubelet sets these for every container). */
export function inPod(env = process.env): boolean {
  return !!env.KUBERNETES_SERVICE_HOST;
}

/**
 * Whether a mount made at `target` propagates to the mount namespace it came
 * from: the mount holding `target` (the longest mount point that prefixes
 * it, from /proc/self/mountinfo) is in a peer group ("shared:N"). In a pod
 * that is the DaemonSet's hostPath volume with mountPropagation Bidirectional.
 */
export function propagates(target: string, mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8')): boolean {
  let best: { point: string; shared: boolean } | undefined;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length < 7) continue;
    const point = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const under = target === point || target.startsWith(point.endsWith('/') ? point : `${point}/`);
    if (!under || (best && best.point.length > point.length)) continue;
    const opt = f.slice(6, f.indexOf('-'));
    best = { point, shared: opt.some((o) => o.startsWith('shared:')) };
  }
  return best?.shared ?? false;
}

/**
 * The bpffs mount; mounts one at /sys/fs/bpf if there is none (left mounted,
 * as Cilium does: pins outlive the agent). In a pod the mount must reach the
 * host: it is made only where the mount propagates (the DaemonSet's bpffs
 * volume, Bidirectional); elsewhere it would vanish with the container, and
 * the error says what the DaemonSet needs.
 */
export async function ensureBpffs(): Promise<string> {
  const p = findMount('bpf');
  if (p) return p;
  const target = '/sys/fs/bpf';
  if (inPod() && !propagates(target))
    throw new FeatureMissingError(
      'bpffs',
      `no bpf file system at ${target} in this container, and a mount made here would not reach the node: the DaemonSet mounts the host's ${target} as a hostPath volume with mountPropagation: Bidirectional (deploy/podwarp.yaml), or the node mounts one (mount -t bpf bpf ${target})`,
    );
  fs.mkdirSync(target, { recursive: true });
  await run('mount bpffs', ['mount', '-t', 'bpf', 'bpf', target]);
  const again = findMount('bpf');
  if (!again) throw new FeatureMissingError('bpffs', `mounted bpffs at ${target} but it is not in /proc/mounts`);
  mountedHere = again;
  return again;
}
