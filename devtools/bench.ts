// `podwarp-dev bench`: every path side by side on sandbox nodes, in one run,
// with the measurement code of the demo (compare.ts) and of the service
// benchmark (bench-services.ts). The result is one JSON document (every
// round, medians, ratios against the path podwarp replaces, machine facts)
// and a self-contained HTML report of it (bench-report.ts).
//   groups: pod→pod TCP in routed and bridge wiring (normal / tc / tc + sockmap),
//           app→sidecar→pod (iptables REDIRECT / podwarp),
//           new connections pod→pod and pod→ClusterIP, one long transfer, a slow
//           reader (normal / tc / tc + sockmap; bench-flows.ts),
//           ClusterIP connects per number of services (iptables / socket LB)
import fs from 'node:fs';
import os from 'node:os';
import {
  compare,
  compareSidecar,
  comparisonTable,
  MODE_LABEL,
  roundLine,
  sidecarTable,
  type Comparison,
  type SidecarComparison,
} from './compare.js';
import { measureServices, servicesTable, type ServicesResult } from './bench-services.js';
import { connClusterIp, connPodPod, longTransfer, slowReader, type FlowsSetup } from './bench-flows.js';
import { hasIperf3, median, prepareTools, scratchDatapath, startIperf3Server, startProxy, startServer } from './perf.js';
import * as sandbox from './sandbox.js';
import type { BenchGroup, Figure } from './bench-group.js';
import { loadStateFile } from '../src/state/load.js';

export const BENCH_FORMAT = 'podwarp-bench/1';

export type { BenchGroup, Figure };

export interface BenchReport {
  format: typeof BENCH_FORMAT;
  machine: { kernel: string; cores: number; cpu: string; memoryGiB: number; node: string; hostname: string; loadavg: number[] };
  started: string;
  finished: string;
  options: {
    rounds: number;
    seconds: number;
    /** the long transfer's length (absent in results written before that group existed) */
    longSeconds?: number;
    cpu: number | null;
    quick: boolean;
    wirings: sandbox.Wiring[];
    sidecar: boolean;
    services: number[];
  };
  groups: BenchGroup[];
}

export interface BenchOptions {
  rounds: number;
  seconds: number;
  /** the long transfer's length */
  longSeconds: number;
  /** pin client and server to this CPU (undefined: unpinned) */
  cpu?: number;
  quick: boolean;
  wirings: sandbox.Wiring[];
  sidecar: boolean;
  /** numbers of installed services for the ClusterIP comparison (empty: skipped) */
  services: number[];
  backends: number;
  say: (s: string) => void;
}

/** --quick: the CI smoke, every group once at a small size. */
export const QUICK = { rounds: 2, seconds: 0.5, longSeconds: 1, services: [200] };

const POD_FIGURES: Figure[] = [
  { key: 'p50_us', label: 'TCP RR latency p50', unit: 'µs', better: 'lower' },
  { key: 'p99_us', label: 'TCP RR latency p99', unit: 'µs', better: 'lower' },
  { key: 'gbps', label: 'TCP bulk (pwperf)', unit: 'Gbit/s', better: 'higher' },
  { key: 'iperf3_gbps', label: 'TCP bulk (iperf3)', unit: 'Gbit/s', better: 'higher' },
];

export function podGroup(c: Comparison, wiring: sandbox.Wiring): BenchGroup {
  const figures = POD_FIGURES.filter((f) => c.median.normal?.[f.key as keyof Comparison['median']['normal']] !== undefined);
  return {
    id: `pod-pod-${wiring}`,
    title: `pod→pod TCP, ${wiring} wiring`,
    what:
      'Two sandbox pods in different namespaces. Latency: 64-byte request/response on one connection (pwperf rr); ' +
      'throughput: one TCP stream (pwperf sink, iperf3 when installed).',
    baseline: 'normal',
    paths: c.modes.map((m) => ({ id: m, label: MODE_LABEL[m].toLowerCase() })),
    figures,
    rounds: c.rounds.map((r) => ({
      round: r.round,
      path: r.mode,
      values: Object.fromEntries(figures.map((f) => [f.key, r[f.key as 'p50_us']])),
      evidence: r.evidence,
    })),
    median: c.median as BenchGroup['median'],
    ratio: c.ratio as BenchGroup['ratio'],
  };
}

export function sidecarGroup(c: SidecarComparison): BenchGroup {
  return {
    id: 'sidecar',
    title: 'app → sidecar proxy → pod',
    what: "Istio-style: the app's connect goes to the proxy fixture (uid 1337, :15001), which connects to the server pod. 64-byte request/response.",
    baseline: 'iptables',
    paths: [
      { id: 'iptables', label: 'iptables redirect' },
      { id: 'podwarp', label: 'podwarp' },
    ],
    figures: POD_FIGURES.slice(0, 2),
    rounds: c.rounds.map((r) => ({ round: r.round, path: r.mode, values: { p50_us: r.p50_us, p99_us: r.p99_us }, evidence: r.evidence })),
    median: c.median,
    ratio: { iptables: { p50_us: 1, p99_us: 1 }, podwarp: { p50_us: c.ratio.p50, p99_us: c.ratio.p99 } },
  };
}

export function servicesGroup(s: ServicesResult): BenchGroup {
  const med = (mode: string) => median(s.rounds.filter((r) => r.mode === mode).map((r) => r.perSecond));
  const fig: Figure = { key: 'conn_per_s', label: 'new connections/s to a ClusterIP', unit: 'conn/s', better: 'higher' };
  return {
    id: `services-${s.services}`,
    title: `ClusterIP connects, ${s.services.toLocaleString('en-US')} services × ${s.backendsPerService} backends`,
    what:
      'New TCP connections one after another to the last service in the chain: kube-proxy-style iptables DNAT per packet ' +
      "against podwarp's rewrite at connect(); both with the tc fast path on and the sockmap off.",
    baseline: 'iptables',
    paths: [
      { id: 'iptables', label: 'iptables (kube-proxy)' },
      { id: 'socket-lb', label: 'podwarp socket LB' },
    ],
    figures: [fig],
    rounds: s.rounds.map((r) => ({ round: r.round, path: r.mode, values: { conn_per_s: r.perSecond }, evidence: r.evidence })),
    // from the rounds: ServicesResult's medians are rounded for its table
    median: { iptables: { conn_per_s: med('iptables') }, 'socket-lb': { conn_per_s: med('socket-lb') } },
    ratio: { iptables: { conn_per_s: 1 }, 'socket-lb': { conn_per_s: med('socket-lb') / med('iptables') } },
    extra: [
      { label: 'iptables-restore of the kube-proxy rules', value: s.iptablesRestoreMs, unit: 'ms' },
      { label: 'all services written into empty maps', value: s.coldSyncMs, unit: 'ms' },
      { label: 'one changed service (full pass)', value: s.oneChangeMs, unit: 'ms' },
    ],
  };
}

export function machineInfo(): BenchReport['machine'] {
  const cpus = os.cpus();
  return {
    kernel: os.release(),
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    hostname: os.hostname(),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

// Teardown of what is up now; a signal runs it, then exits 130. `on`, not
// `once`: execa's child cleanup (signal-exit) re-raises a signal that no
// other listener is left for, which would kill the process mid-teardown.
let current: (() => Promise<void>) | undefined;
let signalsHooked = false;
function hookSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  let stopping: Promise<void> | undefined;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.on(sig, () => {
      if (stopping) return;
      process.stderr.write(`bench: ${sig}, tearing down\n`);
      stopping = (current?.() ?? Promise.resolve()).finally(() => process.exit(130));
    });
}

/**
 * pod→pod (and, on the routed sandbox, app→sidecar; with `flows`, the groups
 * of bench-flows.ts) on one sandbox; everything removed afterwards, also on failure.
 */
async function podToPod(
  o: BenchOptions,
  objs: string[],
  wiring: sandbox.Wiring,
  flows: boolean,
): Promise<{ pod: Comparison; sidecar?: SidecarComparison; flows: BenchGroup[] }> {
  const { id, dir, dp } = await scratchDatapath('bench');
  let stop: (() => Promise<void>) | undefined;
  let done: Promise<void> | undefined;
  const teardown = async () => {
    await stop?.();
    await dp.uninstall({ force: true }).catch(() => undefined);
    await sandbox.down(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  current = () => (done ??= teardown());
  try {
    const m = await sandbox.up({ dir, id, pods: 2, namespaces: ['bench-a', 'bench-b'], wiring });
    await dp.load(objs);
    const srv = await startServer(m.pods[1]!, 7300, o.cpu);
    const ip3 = (await hasIperf3()) ? await startIperf3Server(m.pods[1]!, 7301) : undefined;
    stop = async () => {
      await srv.stop();
      await ip3?.stop();
    };
    o.say(`== pod→pod, ${wiring}: ${o.rounds} rounds × ${o.seconds}s, ${o.cpu === undefined ? 'unpinned' : `pinned to CPU ${o.cpu}`}\n`);
    const snap = loadStateFile(m.stateFile).snapshot;
    const pod = await compare({
      dp,
      base: snap,
      client: m.pods[0]!,
      server: m.pods[1]!,
      port: 7300,
      iperf3Port: ip3 ? 7301 : undefined,
      rounds: o.rounds,
      seconds: o.seconds,
      cpu: o.cpu,
      onRound: (r) => o.say(roundLine(r)),
    });
    o.say(comparisonTable(pod) + '\n');
    const more: BenchGroup[] = [];
    if (flows) {
      const f: FlowsSetup = {
        dp,
        m,
        base: snap,
        client: m.pods[0]!,
        server: m.pods[1]!,
        srv,
        port: 7300,
        iperf3Port: ip3 ? 7301 : undefined,
        rounds: o.rounds,
        seconds: o.seconds,
        longSeconds: o.longSeconds,
        cpu: o.cpu,
        say: o.say,
      };
      for (const group of [connPodPod, connClusterIp, longTransfer, slowReader]) more.push(await group(f));
    }
    if (!o.sidecar || wiring !== 'routed') return { pod, flows: more };
    o.say(`== app → sidecar → pod (routed): ${o.rounds} rounds × ${o.seconds}s\n`);
    const proxy = await startProxy(m.pods[0]!, 15001, 1337, o.cpu);
    try {
      const sidecar = await compareSidecar({
        dp,
        base: { ...snap, pods: snap.pods.map((p) => (p.name === 'pod-0' ? { ...p, sidecar: true } : p)) },
        client: m.pods[0]!,
        server: m.pods[1]!,
        port: 7300,
        proxyPort: 15001,
        proxyUid: 1337,
        rounds: o.rounds,
        seconds: o.seconds,
        cpu: o.cpu,
        onRound: o.say,
      });
      o.say(sidecarTable(sidecar) + '\n');
      return { pod, sidecar, flows: more };
    } finally {
      await proxy.stop();
    }
  } finally {
    await (done ??= teardown());
    current = undefined;
  }
}

/** Runs every group; the sandboxes and datapaths are gone when it returns or throws. */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  hookSignals();
  const started = new Date().toISOString();
  const machine = machineInfo();
  const objs = await prepareTools();
  const groups: BenchGroup[] = [];
  let sidecar: SidecarComparison | undefined;
  const flows: BenchGroup[] = [];
  for (const [i, wiring] of o.wirings.entries()) {
    const r = await podToPod(o, objs, wiring, i === 0);
    groups.push(podGroup(r.pod, wiring));
    sidecar ??= r.sidecar;
    flows.push(...r.flows);
  }
  if (sidecar) groups.push(sidecarGroup(sidecar));
  groups.push(...flows);
  if (o.services.length) {
    const svc = await measureServices({
      objs,
      sizes: o.services,
      backends: o.backends,
      rounds: o.rounds,
      seconds: o.seconds,
      cpu: o.cpu,
      say: o.say,
      onTeardown: (t) => (current = t),
    });
    current = undefined;
    o.say('\n' + servicesTable(svc));
    groups.push(...svc.map(servicesGroup));
  }
  return {
    format: BENCH_FORMAT,
    machine,
    started,
    finished: new Date().toISOString(),
    options: {
      rounds: o.rounds,
      seconds: o.seconds,
      longSeconds: o.longSeconds,
      cpu: o.cpu ?? null,
      quick: o.quick,
      wirings: o.wirings,
      sidecar: o.sidecar,
      services: o.services,
    },
    groups,
  };
}
