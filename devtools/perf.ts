// Traffic between sandbox pods with pwperf (devtools/tools/pwperf.c): used by the
// demo, the integration tests and the benchmarks.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileHost } from '../loader/clang.js';
import { onLines, run, spawnHolder, spawnLong, which } from '../host/exec.js';
import { BUILD, ROOT, build } from '../loader/build.js';
import { Datapath } from '../loader/datapath.js';
import { requireDatapathFeatures } from '../src/doctor/probe.js';
import { scaled } from './slowdown.js';
import { podCommand, type SandboxPod } from './sandbox.js';

export const PWPERF = path.join(BUILD, 'pwperf');
export const PWPROXY = path.join(BUILD, 'pwproxy');

/** Builds the traffic tool and the sidecar proxy fixture (devtools/tools/*.c) when out of date. */
export async function ensurePwperf(): Promise<string> {
  for (const [bin, src] of [
    [PWPERF, path.join(ROOT, 'devtools', 'tools', 'pwperf.c')],
    [PWPROXY, path.join(ROOT, 'devtools', 'tools', 'pwproxy.c')],
  ] as const) {
    if (!fs.existsSync(bin) || fs.statSync(bin).mtimeMs < fs.statSync(src).mtimeMs) {
      fs.mkdirSync(BUILD, { recursive: true });
      await compileHost(src, bin + '.tmp');
      fs.renameSync(bin + '.tmp', bin);
    }
  }
  return PWPERF;
}

export interface Server {
  stop(): Promise<void>;
  /** JSON lines the server printed after its first (stream results). */
  lines(): Record<string, unknown>[];
  /** lines()[index], once the server has printed it (a stream's line comes after the client has seen its end); rejects after `ms`. */
  line(index: number, ms: number): Promise<Record<string, unknown>>;
}

/** Starts `pwperf server` in a pod and waits until it listens. */
export async function startServer(pod: SandboxPod, port: number, cpu?: number): Promise<Server> {
  return startListener(pod, [PWPERF, 'server', '-p', String(port), ...cpuArgs(cpu)]);
}

/** Starts the sidecar proxy fixture in a pod (as `uid`); its lines() are one per proxied connection. */
export async function startProxy(pod: SandboxPod, port: number, uid: number, cpu?: number): Promise<Server> {
  return startListener(pod, [PWPROXY, '-p', String(port), '-u', String(uid), ...cpuArgs(cpu)]);
}

/** Starts a long-running program in a pod and waits until it prints a line containing "listening". */
export async function startListener(pod: SandboxPod, argv: string[]): Promise<Server> {
  const child = spawnLong(podCommand(pod, argv));
  const lines: Record<string, unknown>[] = [];
  const printed = new EventEmitter();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${path.basename(argv[0]!)} in ${pod.name} did not start`)), scaled(5000));
    onLines(child.stdout, (line) => {
      if (line.includes('listening')) {
        clearTimeout(timer);
        resolve();
      } else if (line.startsWith('{')) {
        lines.push(JSON.parse(line) as Record<string, unknown>);
        printed.emit('line');
      }
    });
    void child.then((r) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(argv[0]!)} in ${pod.name} exited: ${String(r.stderr)}`));
    });
  });
  return {
    async stop() {
      child.kill('SIGKILL');
      // a forked helper may still hold the output pipe: do not wait on it forever
      await Promise.race([child, new Promise((r) => setTimeout(r, 2000))]);
    },
    lines: () => lines,
    line: (index, ms) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (index >= lines.length) return;
          done();
          resolve(lines[index]!);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${path.basename(argv[0]!)} in ${pod.name} printed no line ${index + 1} within ${ms} ms`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          printed.off('line', check);
        };
        printed.on('line', check);
        check();
      }),
  };
}

export interface RrResult {
  n: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  mean_us: number;
  eagain: number;
}

export interface SinkResult {
  bytes: number;
  received: number;
  seconds: number;
  gbps: number;
  ok: boolean;
  hash: string;
  server_hash: string;
  /** Spurious EAGAINs on the blocking socket (kernel sockmap receive path), waited out. */
  eagain: number;
}

const cpuArgs = (cpu?: number) => (cpu === undefined ? [] : ['-a', String(cpu)]);
/** `v6`: an AF_INET6 (dual-stack) socket dialling the v4-mapped ::ffff:ip; results compare the embedded IPv4 address. */
const v6Args = (v6?: boolean) => (v6 ? ['-6'] : []);

async function client<T>(pod: SandboxPod, args: string[]): Promise<T> {
  const r = await run(`pwperf ${args[0]} from ${pod.name}`, podCommand(pod, [PWPERF, ...args]), { timeoutMs: scaled(300_000) });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

export function rr(
  pod: SandboxPod,
  ip: string,
  port: number,
  o: { seconds?: number; n?: number; size?: number; paceUs?: number; cpu?: number; v6?: boolean },
): Promise<RrResult> {
  const args = ['rr', '-c', ip, '-p', String(port), '-s', String(o.size ?? 64), ...cpuArgs(o.cpu), ...v6Args(o.v6)];
  if (o.n) args.push('-n', String(o.n));
  else args.push('-d', String(o.seconds ?? 2));
  if (o.paceUs) args.push('-i', String(o.paceUs), '-w', '0');
  return client<RrResult>(pod, args);
}

export function sink(
  pod: SandboxPod,
  ip: string,
  port: number,
  o: { seconds?: number; bytes?: number; verify?: boolean; cpu?: number },
): Promise<SinkResult> {
  const args = ['sink', '-c', ip, '-p', String(port), ...cpuArgs(o.cpu)];
  if (o.bytes) args.push('-b', String(o.bytes));
  else args.push('-d', String(o.seconds ?? 2));
  if (o.verify) args.push('-v');
  return client<SinkResult>(pod, args);
}

export interface ConnResult {
  connections: number;
  errors: number;
  /** failed connects by what the application saw: ECONNREFUSED, or no answer (the 2 s connect timeout) */
  refused: number;
  timeouts: number;
  peer_mismatch: number;
  per_second: number;
  backends: Record<string, number>;
}

/** New connections one after another to ip:port (a ClusterIP): rate, errors, backend spread. */
export async function conn(
  pod: SandboxPod,
  ip: string,
  port: number,
  o: { seconds?: number; n?: number; cpu?: number; v6?: boolean },
): Promise<ConnResult & { error?: string }> {
  const args = [
    'conn',
    '-c',
    ip,
    '-p',
    String(port),
    ...(o.n ? ['-n', String(o.n)] : ['-d', String(o.seconds ?? 2)]),
    ...cpuArgs(o.cpu),
    ...v6Args(o.v6),
  ];
  const r = await run(`pwperf conn from ${pod.name}`, podCommand(pod, [PWPERF, ...args]), { reject: false, timeoutMs: scaled(300_000) });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (!last.startsWith('{')) throw new Error(`pwperf conn: ${r.stderr.trim()}`);
  const res = JSON.parse(last) as ConnResult;
  return r.exitCode === 0 ? res : { ...res, error: r.stderr.trim() };
}

export interface UdpResult {
  replies: number;
  errors: number;
  /** requests without a reply: ECONNREFUSED (connected sockets learn of ICMP unreachable), or the 1 s receive timeout */
  refused: number;
  timeouts: number;
  wrong_source: number;
  peer_ok: boolean;
  backends: Record<string, number>;
}

/** UDP requests to ip:port; every reply must come from ip:port. `renew`: a new socket (a new flow) per request. */
export async function udp(
  pod: SandboxPod,
  ip: string,
  port: number,
  o: {
    n: number;
    connected?: boolean;
    renew?: boolean;
    /** with renew: every new socket follows one that takes a socket cookie (pwperf -K), as a client alternating "look up, connect" */
    cookieGaps?: boolean;
    v6?: boolean;
  },
): Promise<UdpResult & { error?: string }> {
  const args = ['udp', '-c', ip, '-p', String(port), '-n', String(o.n), ...udpArgs(o)];
  const r = await run(`pwperf udp from ${pod.name}`, podCommand(pod, [PWPERF, ...args]), { reject: false, timeoutMs: scaled(120_000) });
  const res = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as UdpResult;
  return r.exitCode === 0 ? res : { ...res, error: r.stderr.trim() || `exit ${r.exitCode}` };
}

const udpArgs = (o: { connected?: boolean; renew?: boolean; cookieGaps?: boolean; v6?: boolean }) => [
  ...(o.connected ? ['-C'] : []),
  ...(o.renew ? ['-R'] : []),
  ...(o.cookieGaps ? ['-K'] : []),
  ...v6Args(o.v6),
];

/** One request of a UdpSession: the backend that answered and whether the reply came from the address dialled, or what went wrong. */
export type UdpStep = { backend: string; source_ok: boolean } | { error: 'refused' | 'timeout' | 'error' };

export interface UdpSession {
  /** Sends one request on the session's socket and waits for its outcome (1 s receive timeout in pwperf). */
  request(): Promise<UdpStep>;
  /** Closes the socket; the session's totals (getpeername() checked at the end). */
  close(): Promise<UdpResult & { error?: string }>;
}

/** A long-lived UDP socket in `pod` (pwperf udp -S) whose requests the caller paces: the Service may change between two. */
export function udpSession(pod: SandboxPod, ip: string, port: number, o: { connected?: boolean; v6?: boolean }): UdpSession {
  return udpSessionOf(podCommand(pod, [PWPERF, 'udp', '-c', ip, '-p', String(port), '-S', ...udpArgs(o)]));
}

/** The same session from any argv that runs `pwperf udp … -S` with its stdin piped (e.g. `kubectl exec -i`). */
export function udpSessionOf(argv: string[]): UdpSession {
  const child = spawnHolder(argv);
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  onLines(child.stdout, (line) => {
    const w = waiting.shift();
    if (w) w(line);
    else lines.push(line);
  });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      waiting.push(resolve);
      void child.then((r) => reject(new Error(`pwperf udp -S exited: ${String(r.stderr)}`)));
    });
  return {
    async request() {
      child.stdin.write('\n');
      return JSON.parse(await next()) as UdpStep;
    },
    async close() {
      child.stdin.end();
      const r = await child;
      const res = JSON.parse(lines.pop() ?? '{}') as UdpResult;
      return r.exitCode === 0 ? res : { ...res, error: `exit ${r.exitCode}` };
    },
  };
}

export interface StreamResult {
  seconds: number;
  sent: number;
  received: number;
  ok: boolean;
}

/** Bidirectional checksummed stream for `seconds` (see pwperf.c). Resolves even on failure: check `ok`/`error`. */
export async function stream(
  pod: SandboxPod,
  ip: string,
  port: number,
  o: { seconds: number; paceUs?: number; stopFile?: string; cpu?: number },
): Promise<StreamResult & { error?: string }> {
  const args = ['stream', '-c', ip, '-p', String(port), '-d', String(o.seconds), ...(o.paceUs ? ['-i', String(o.paceUs)] : [])];
  args.push(...cpuArgs(o.cpu));
  // -x: the stream ends early (cleanly, both directions drained and checked) once this file exists
  if (o.stopFile) args.push('-x', o.stopFile);
  const r = await run(`pwperf stream from ${pod.name}`, podCommand(pod, [PWPERF, ...args]), {
    reject: false,
    timeoutMs: scaled((o.seconds + 60) * 1000),
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  const res = last.startsWith('{') ? (JSON.parse(last) as StreamResult) : { seconds: 0, sent: 0, received: 0, ok: false };
  return r.exitCode === 0 ? res : { ...res, ok: false, error: r.stderr.trim() || `exit ${r.exitCode}` };
}

export async function hasIperf3(): Promise<boolean> {
  return (await which('iperf3')) !== undefined;
}

/** `iperf3 -s` in a pod (the reference bulk tool: dual-stack listener, select() loop). */
export async function startIperf3Server(pod: SandboxPod, port: number): Promise<Server> {
  const child = spawnLong(podCommand(pod, ['iperf3', '-s', '-p', String(port), '--forceflush']));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`iperf3 server in ${pod.name} did not start`)), scaled(5000));
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void child.then((r) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server in ${pod.name} exited: ${String(r.stderr)}`));
    });
  });
  return {
    async stop() {
      child.kill('SIGKILL');
      await child;
    },
    lines: () => [],
    line: () => Promise.reject(new Error('iperf3 -s prints no result lines')),
  };
}

/** One iperf3 stream for `seconds`; Gbit/s received. */
export async function iperf3(pod: SandboxPod, ip: string, port: number, o: { seconds: number; cpu?: number }): Promise<number> {
  const args = ['iperf3', '-c', ip, '-p', String(port), '-t', String(Math.max(1, Math.round(o.seconds))), '-J'];
  if (o.cpu !== undefined) args.push('-A', `${o.cpu},${o.cpu}`);
  const r = await run(`iperf3 from ${pod.name}`, podCommand(pod, args), { timeoutMs: scaled((o.seconds + 30) * 1000) });
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Interleaved rounds → the median of each figure per path, and each
 * median's ratio to the baseline path's: how every bench and demo table
 * compares paths (ratios of medians, never medians of ratios).
 */
export function mediansAndRatios<R, P extends string, K extends string>(
  rounds: readonly R[],
  pathOf: (r: R) => P,
  paths: readonly P[],
  keys: readonly K[],
  value: (r: R, k: K) => number,
  baseline: P,
): { median: Record<P, Record<K, number>>; ratio: Record<P, Record<K, number>> } {
  const each = <V>(f: (p: P, k: K) => V) =>
    Object.fromEntries(paths.map((p) => [p, Object.fromEntries(keys.map((k) => [k, f(p, k)]))])) as Record<P, Record<K, V>>;
  const med = each((p, k) => median(rounds.filter((r) => pathOf(r) === p).map((r) => value(r, k))));
  return { median: med, ratio: each((p, k) => med[p][k] / med[baseline][k]) };
}

/** Built objects and tools, after the kernel feature check (once per run). */
export async function prepareTools(): Promise<string[]> {
  await requireDatapathFeatures();
  const objs = await build();
  await ensurePwperf();
  return objs;
}

/** A scratch sandbox directory and a datapath under its own pin name, never the agent's. */
export async function scratchDatapath(kind: string): Promise<{ id: string; dir: string; dp: Datapath }> {
  const id = crypto.randomBytes(2).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `podwarp-${kind}-`));
  return { id, dir, dp: await Datapath.open(`podwarp_${kind.replace(/-/g, '_')}_${id}`) };
}
