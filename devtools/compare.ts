// The paths side by side in one run: alternating rounds (normal, tc, tc +
// sockmap, normal, …) so drift hits all alike; medians over the rounds and
// ratios against the normal path. Used by `podwarp demo` and test/bench/run.ts.
import type { Datapath } from '../loader/datapath.js';
import { expectPath, POD_PATH, SIDECAR_PATH, withEvidence, type PathEvidence } from './evidence.js';
import * as iptables from './iptables.js';
import type { Snapshot } from '../src/model.js';
import { iperf3, mediansAndRatios, rr, sink, type Server } from './perf.js';
import { reconcile } from '../src/reconciler.js';
import type { SandboxPod } from './sandbox.js';
import { table } from '../src/table.js';

export const MODES = ['normal', 'tc', 'sockmap'] as const;
export type Mode = (typeof MODES)[number];
export const MODE_LABEL: Record<Mode, string> = { normal: 'NORMAL PATH', tc: 'TC FAST PATH', sockmap: 'TC + SOCKMAP' };

export interface RoundResult {
  round: number;
  mode: Mode;
  p50_us: number;
  p99_us: number;
  exchanges: number;
  gbps: number;
  /** iperf3 single stream, when iperf3 is installed */
  iperf3_gbps?: number;
  /** how far the counters moved during the round (devtools/evidence.ts) */
  evidence: PathEvidence;
}

type Metric = 'p50_us' | 'p99_us' | 'gbps' | 'iperf3_gbps';

export interface Comparison {
  modes: Mode[];
  rounds: RoundResult[];
  median: Partial<Record<Mode, Partial<Record<Metric, number>>>>;
  /** mode / normal, per metric */
  ratio: Partial<Record<Mode, Partial<Record<Metric, number>>>>;
}

export function withAccel(snap: Snapshot, on: boolean, only?: string): Snapshot {
  return { ...snap, namespaces: snap.namespaces.map((n) => (only && n.name !== only ? n : { ...n, accelerate: on })) };
}

/** Puts the datapath into `mode` for every namespace of `base`. */
export async function setMode(dp: Datapath, base: Snapshot, mode: Mode): Promise<void> {
  await reconcile(dp, withAccel(base, mode !== 'normal'), undefined, { sockmap: mode === 'sockmap' });
}

export async function compare(o: {
  dp: Datapath;
  base: Snapshot;
  client: SandboxPod;
  server: SandboxPod;
  port: number;
  /** iperf3 server already listening in the server pod on this port */
  iperf3Port?: number;
  rounds: number;
  seconds: number;
  cpu?: number;
  modes?: Mode[];
  onRound?: (r: RoundResult) => void;
}): Promise<Comparison> {
  const modes = o.modes ?? [...MODES];
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    for (const mode of modes) {
      await setMode(o.dp, o.base, mode);
      const { result: r, evidence } = await withEvidence(o.dp, async () => {
        const lat = await rr(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu });
        const bulk = await sink(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu });
        if (!bulk.ok) throw new Error(`bulk transfer lost bytes: sent ${bulk.bytes}, server got ${bulk.received}`);
        const res: Omit<RoundResult, 'evidence'> = {
          round,
          mode,
          p50_us: lat.p50_us,
          p99_us: lat.p99_us,
          exchanges: lat.n,
          gbps: bulk.gbps,
        };
        if (o.iperf3Port) res.iperf3_gbps = await iperf3(o.client, o.server.ip, o.iperf3Port, { seconds: o.seconds, cpu: o.cpu });
        return res;
      });
      expectPath(`round ${round}, ${MODE_LABEL[mode].toLowerCase()}`, evidence, POD_PATH[mode]);
      const done: RoundResult = { ...r, evidence };
      rounds.push(done);
      o.onRound?.(done);
    }
  }
  const metrics: Metric[] = ['p50_us', 'p99_us', 'gbps', ...(o.iperf3Port ? (['iperf3_gbps'] as const) : [])];
  const { median: med, ratio } = mediansAndRatios(
    rounds,
    (r) => r.mode,
    modes,
    metrics,
    (r, k) => r[k]!,
    'normal',
  );
  return { modes, rounds, median: med, ratio };
}

export function roundLine(r: RoundResult): string {
  const ip = r.iperf3_gbps === undefined ? '' : `, iperf3 ${r.iperf3_gbps.toFixed(2)} Gbit/s`;
  return `round ${r.round} ${MODE_LABEL[r.mode].toLowerCase().padEnd(12)}: rr p50 ${r.p50_us.toFixed(1)}µs p99 ${r.p99_us.toFixed(1)}µs (${r.exchanges} exchanges), bulk ${r.gbps.toFixed(2)} Gbit/s${ip}\n`;
}

export function comparisonTable(c: Comparison): string {
  const rows: [string, Metric, string, string][] = [
    ['TCP RR latency p50', 'p50_us', 'µs', 'lower is better'],
    ['TCP RR latency p99', 'p99_us', 'µs', 'lower is better'],
    ['TCP bulk (pwperf)', 'gbps', 'Gbit/s', 'higher is better'],
    ['TCP bulk (iperf3)', 'iperf3_gbps', 'Gbit/s', 'higher is better'],
  ];
  const others = c.modes.filter((m) => m !== 'normal');
  return table(
    ['METRIC (median)', ...c.modes.map((m) => MODE_LABEL[m]), ...others.map((m) => `${m.toUpperCase()}/NORMAL`), ''],
    rows
      .filter(([, k]) => c.median.normal?.[k] !== undefined)
      .map(([name, k, unit, better]) => [
        name,
        ...c.modes.map((m) => `${c.median[m]![k]!.toFixed(2)} ${unit}`),
        ...others.map((m) => `${c.ratio[m]![k]!.toFixed(2)}×`),
        better,
      ]),
  );
}

export type { Server };

export interface SidecarComparison {
  rounds: { round: number; mode: 'iptables' | 'podwarp'; p50_us: number; p99_us: number; evidence: PathEvidence }[];
  median: Record<'iptables' | 'podwarp', { p50_us: number; p99_us: number }>;
  ratio: { p50: number; p99: number };
}

/**
 * App → sidecar proxy → server pod request/response: Istio's iptables
 * REDIRECT (acceleration off, NAT rule in the app pod) against podwarp
 * (connect4 to the proxy, SO_ORIGINAL_DST from a map, sockmap on both hops),
 * alternating rounds. The proxy (uid `proxyUid`, port `proxyPort`) must be
 * running in the client pod, whose snapshot entry has `sidecar: true`.
 */
export async function compareSidecar(o: {
  dp: Datapath;
  base: Snapshot;
  client: SandboxPod;
  server: SandboxPod;
  port: number;
  proxyPort: number;
  proxyUid: number;
  rounds: number;
  seconds: number;
  cpu?: number;
  onRound?: (line: string) => void;
}): Promise<SidecarComparison> {
  const rounds: SidecarComparison['rounds'] = [];
  for (let round = 1; round <= o.rounds; round++) {
    for (const mode of ['iptables', 'podwarp'] as const) {
      if (mode === 'iptables') {
        await setMode(o.dp, o.base, 'normal');
        await iptables.addOutboundRedirect(o.client.netns, o.proxyPort, o.proxyUid);
      } else {
        await setMode(o.dp, o.base, 'sockmap');
      }
      try {
        const { result: lat, evidence } = await withEvidence(o.dp, () =>
          rr(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu }),
        );
        expectPath(`round ${round}, app→sidecar ${mode}`, evidence, SIDECAR_PATH[mode]);
        rounds.push({ round, mode, p50_us: lat.p50_us, p99_us: lat.p99_us, evidence });
        o.onRound?.(
          `round ${round} ${mode === 'iptables' ? 'iptables REDIRECT' : 'podwarp          '}: app→proxy→server rr p50 ${lat.p50_us.toFixed(1)}µs p99 ${lat.p99_us.toFixed(1)}µs\n`,
        );
      } finally {
        if (mode === 'iptables') await iptables.removeOutboundRedirect(o.client.netns, o.proxyPort, o.proxyUid);
      }
    }
  }
  const m = mediansAndRatios(
    rounds,
    (r) => r.mode,
    ['iptables', 'podwarp'] as const,
    ['p50_us', 'p99_us'] as const,
    (r, k) => r[k],
    'iptables',
  );
  return { rounds, median: m.median, ratio: { p50: m.ratio.podwarp.p50_us, p99: m.ratio.podwarp.p99_us } };
}

export function sidecarTable(c: SidecarComparison): string {
  return table(
    ['APP↔SIDECAR (median)', 'IPTABLES REDIRECT', 'PODWARP', 'PODWARP/IPTABLES', ''],
    [
      [
        'RR latency p50',
        `${c.median.iptables.p50_us.toFixed(2)} µs`,
        `${c.median.podwarp.p50_us.toFixed(2)} µs`,
        `${c.ratio.p50.toFixed(2)}×`,
        'lower is better',
      ],
      [
        'RR latency p99',
        `${c.median.iptables.p99_us.toFixed(2)} µs`,
        `${c.median.podwarp.p99_us.toFixed(2)} µs`,
        `${c.ratio.p99.toFixed(2)}×`,
        'lower is better',
      ],
    ],
  );
}
