// The parts of the datapath and what podwarp does when the kernel refuses
// one (any errno, any reason: an LSM, lockdown, a vendor kernel, seccomp).
// Only the tc program is required; every core feature is switched off alone,
// and every optional part has a designed fallback inside a feature that
// stays on. Each refusal is recorded with the kernel's own words for
// `status`, `doctor`, /metrics and the log (loader/datapath.ts loads them).
//
//   part          objects                        without it
//   (tc)          pw_tc_egress                   cannot run: the agent stays up, not ready
//   sockmap       pw_sockops, pw_sk_msg          pod↔pod TCP on the tc fast path only; no sidecar capture
//   socket-lb     pw_lb_*                        kube-proxy translates Service addresses
//   sidecar       pw_proxy_*                     the pod's own iptables redirect
//   map-dump      bpf/iter/pw_{svc,backends,count}_iter  maps are read (and LRU maps counted) with `bpftool map dump`
//   drain         bpf/iter/pw_sock_iter            a drained socket stays in pw_sock on TCP until it closes
//   read-counter  bpf/trace/<fn>                  every redirected byte counts as unread (psock kernels need none)
import path from 'node:path';
import { FLOW_CONTROL } from '../abi/schema.js';
import { ToolError, errorMessage } from '../host/errors.js';

/** Core features: the tc fast path is required; the others are switched off alone when the kernel refuses them. */
export type CorePartId = 'sockmap' | 'socket-lb' | 'sidecar';
/** Optional parts: each has a designed fallback inside a feature that stays on. */
export type OptionalPartId = 'map-dump' | 'drain' | 'read-counter';
export type PartId = CorePartId | OptionalPartId;
export const PART_IDS: readonly PartId[] = ['sockmap', 'socket-lb', 'sidecar', 'map-dump', 'drain', 'read-counter'];

/** active: loaded and in use; refused: the kernel (or the test switch) said no; not-needed: the kernel does it itself. */
export type PartState = 'active' | 'refused' | 'not-needed';

export interface Part {
  part: PartId;
  state: PartState;
  /** The objects of this part (file names under build/bpf). */
  objects: string[];
  /** The kernel's reason, when refused: errno name and the tool's last words. */
  reason?: string;
  /** What podwarp does now, in a platform engineer's words. */
  effect: string;
}

/** What podwarp does without each part. */
export const WITHOUT: Record<PartId, string> = {
  sockmap: 'pod↔pod TCP takes the tc fast path without socket redirection, and app↔sidecar capture is off (it needs sock_ops)',
  'socket-lb': 'Service addresses are translated by kube-proxy per packet, as without podwarp',
  sidecar: "app↔sidecar traffic takes the pod's own redirect (iptables), as without podwarp",
  'map-dump':
    'map dumps, the agent read-back and the map fill gauge use `bpftool map dump` (one process per map instead of one read; the gauge at most once a minute)',
  drain:
    'a socket taken out of acceleration (pod disabled, passthrough) stays in pw_sock on the TCP path until it closes; uninstall waits for accelerated sockets to close',
  'read-counter': `no read counter: every redirected byte counts as unread, so a flow moves to TCP after ${FLOW_CONTROL.QUEUE_MAX_BYTES >> 20} MiB`,
};

const WITH: Record<PartId, string> = {
  sockmap: 'sock_ops fills pw_sock, sk_msg redirects pod↔pod TCP between sockets',
  'socket-lb': 'Service addresses resolved at connect() by cgroup sock_addr programs',
  sidecar: 'app↔sidecar connects captured by cgroup programs, SO_ORIGINAL_DST answered from a map',
  'map-dump': 'map dumps and LRU map fill read by a bpf_map_elem iterator (one read per map)',
  drain: 'the sockmap iterator tells when a socket queue is empty: drained sockets leave pw_sock at once',
  'read-counter': 'reads counted by a tracing program (fexit)',
};

/** The core object of each feature; undefined: not a core object. pw_tc_egress is the required core ('tc'). */
export function coreOf(obj: string): CorePartId | 'tc' | undefined {
  const base = path.basename(obj, '.o');
  if (base === 'pw_tc_egress') return 'tc';
  if (base === 'pw_sockops' || base === 'pw_sk_msg') return 'sockmap';
  if (base.startsWith('pw_lb_')) return 'socket-lb';
  if (base.startsWith('pw_proxy_')) return 'sidecar';
  return undefined;
}

export function isCore(p: PartId): p is CorePartId {
  return p === 'sockmap' || p === 'socket-lb' || p === 'sidecar';
}

/** A core feature that needs another one loaded (sidecar capture: sock_ops moves the original destination). */
export const NEEDS: Partial<Record<CorePartId, CorePartId>> = { sidecar: 'sockmap' };

/** Which optional part an object belongs to; undefined: a core object. */
export function partOf(obj: string): OptionalPartId | undefined {
  const dir = path.basename(path.dirname(obj));
  const base = path.basename(obj, '.o');
  if (dir === 'trace') return 'read-counter';
  if (dir === 'iter') return base === 'pw_sock_iter' ? 'drain' : 'map-dump';
  return undefined;
}

export function activePart(part: PartId, objects: string[], detail?: string): Part {
  return { part, state: 'active', objects, effect: detail ? `${WITH[part]}: ${detail}` : WITH[part] };
}

export function refusedPart(part: PartId, objects: string[], reason: string): Part {
  return { part, state: 'refused', objects, reason, effect: WITHOUT[part] };
}

/**
 * The test switch: PODWARP_TEST_REFUSE=part[,part…] makes the loader treat
 * those parts as refused by the kernel, on any kernel, so every test runs in
 * both worlds: `tracing` is what a kernel refusing BPF tracing programs takes
 * (map-dump, drain, read-counter), `all` every part but the tc program, `tc`
 * the tc program (podwarp cannot run). Never set in production; `status`
 * shows it.
 */
export function testRefused(part: PartId | 'tc' | 'kernel-read', env = process.env.PODWARP_TEST_REFUSE): boolean {
  if (!env) return false;
  const want = env.split(',').flatMap((s) => ALIASES[s.trim()] ?? [s.trim()]);
  for (const w of want)
    if (w !== 'all' && w !== 'tc' && w !== 'kernel-read' && !PART_IDS.includes(w as PartId))
      throw new Error(
        `PODWARP_TEST_REFUSE: "${w}" is not a part (${['tc', ...PART_IDS, 'kernel-read', ...Object.keys(ALIASES), 'all'].join(', ')})`,
      );
  return want.includes(part) || (want.includes('all') && part !== 'tc');
}
/** The parts a kernel that refuses BPF tracing programs (fentry/fexit, map iterators) takes away. */
export const TRACING: OptionalPartId[] = ['map-dump', 'drain', 'read-counter'];
/**
 * Test switch words for what a kind of kernel refuses: `tracing` (BPF
 * tracing programs refused, as some hardened builds do), `lockdown`
 * (lockdown=confidentiality: every object calling bpf_probe_read_kernel, so
 * pw_sk_msg.o, whose bpf/fallback/ twin loads instead, the drain iterator and
 * the read counter). `kernel-read` alone refuses pw_sk_msg.o's kernel read.
 */
const ALIASES: Record<string, string[]> = { tracing: TRACING, lockdown: ['drain', 'read-counter', 'kernel-read'] };
export const TEST_REFUSAL = 'refused by PODWARP_TEST_REFUSE (test switch, as a kernel that refuses it)';

const ERRNO: [RegExp, string][] = [
  [/Operation not permitted/, 'EPERM'],
  [/Permission denied/, 'EACCES'],
  [/Invalid argument/, 'EINVAL'],
  [/Argument list too long/, 'E2BIG'],
  [/Unknown error 524|Operation not supported/, 'EOPNOTSUPP'],
  [/No such file or directory/, 'ENOENT'],
  [/No such process/, 'ESRCH'],
  [/Bad address/, 'EFAULT'],
  [/Cannot allocate memory/, 'ENOMEM'],
];

/**
 * The kernel's reason for a refused load, as an engineer reads it: the errno
 * name and the tool's own last line. libbpf's guess "try raising 'ulimit -l'"
 * is dropped: bpftool lifts RLIMIT_MEMLOCK itself before it loads, and
 * kernels ≥ 5.11 charge BPF memory to the cgroup instead, so memlock is never
 * the cause of a refusal here.
 */
export function kernelReason(e: unknown): string {
  const text = e instanceof ToolError ? `${e.stderr}\n${e.message}` : errorMessage(e);
  const errno = ERRNO.find(([re]) => re.test(text))?.[1];
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/ulimit -l|libbpf strict mode|If it used to work|^-- (BEGIN|END) PROG LOAD LOG|^processed \d+ insns/.test(l));
  const load = lines.find((l) => /BPF program load failed|failed to (load|attach|create)|attach.*failed/i.test(l)) ?? lines[0] ?? '';
  const words = load.replace(/^libbpf: /, '').replace(/^prog '[^']*': /, '');
  return errno ? `${errno}: ${words}` : words;
}

/** One reason for several objects: said once when they agree, else each with its object. */
export function joinReasons(byObject: [string, string][]): string {
  const distinct = [...new Set(byObject.map(([, r]) => r))];
  return distinct.length === 1 ? distinct[0]! : byObject.map(([o, r]) => `${o}: ${r}`).join('; ');
}

/** The reason of a part that the pins show missing, seen by a process that did not load (status without a running agent). */
export const NOT_PINNED = 'not pinned by the last load (its log, the agent report or `podwarp doctor` has the kernel reason)';

/** One line per part, for the log, status and doctor. */
export function describePart(p: Part): string {
  if (p.state === 'not-needed') return `${p.part}: not needed on this kernel (${p.effect})`;
  if (p.state === 'active') return `${p.part}: active (${p.effect})`;
  if (p.reason === NOT_PINNED) return `${p.part}: off — ${p.objects.join(', ')} ${NOT_PINNED}; ${p.effect}`;
  return `${p.part}: off — kernel refused ${p.objects.join(', ')} (${p.reason}); ${p.effect}`;
}
