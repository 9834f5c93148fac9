// Normal path vs accelerated, side by side in one run: alternating rounds
// (normal, accelerated, normal, …) so drift hits both alike; medians and
// ratios over the rounds. Used by `podwarp demo` and test/bench/run.ts.
import type { Datapath } from '../loader/datapath.js';
import type { Snapshot } from './model.js';
import { median, rr, sink } from './perf.js';
import { reconcile } from './reconciler.js';
import type { SandboxPod } from './sandbox.js';
import { table } from './table.js';

export type Mode = 'normal' | 'accel';

export interface RoundResult {
  round: number;
  mode: Mode;
  p50_us: number;
  p99_us: number;
  exchanges: number;
  gbps: number;
}

export interface Comparison {
  rounds: RoundResult[];
  median: Record<Mode, { p50_us: number; p99_us: number; gbps: number }>;
  ratio: { p50: number; p99: number; gbps: number };
}

export function withAccel(snap: Snapshot, on: boolean, only?: string): Snapshot {
  return { ...snap, namespaces: snap.namespaces.map((n) => (only && n.name !== only ? n : { ...n, accelerate: on })) };
}

export async function compare(o: {
  dp: Datapath;
  base: Snapshot;
  client: SandboxPod;
  server: SandboxPod;
  port: number;
  rounds: number;
  seconds: number;
  cpu?: number;
  onRound?: (r: RoundResult) => void;
}): Promise<Comparison> {
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    for (const mode of ['normal', 'accel'] as const) {
      await reconcile(o.dp, withAccel(o.base, mode === 'accel'));
      const lat = await rr(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu });
      const bulk = await sink(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu });
      if (!bulk.ok) throw new Error(`bulk transfer lost bytes: sent ${bulk.bytes}, server got ${bulk.received}`);
      const r = { round, mode, p50_us: lat.p50_us, p99_us: lat.p99_us, exchanges: lat.n, gbps: bulk.gbps };
      rounds.push(r);
      o.onRound?.(r);
    }
  }
  const med = (mode: Mode, k: 'p50_us' | 'p99_us' | 'gbps') => median(rounds.filter((r) => r.mode === mode).map((r) => r[k]));
  const m = {
    normal: { p50_us: med('normal', 'p50_us'), p99_us: med('normal', 'p99_us'), gbps: med('normal', 'gbps') },
    accel: { p50_us: med('accel', 'p50_us'), p99_us: med('accel', 'p99_us'), gbps: med('accel', 'gbps') },
  };
  return {
    rounds,
    median: m,
    ratio: { p50: m.accel.p50_us / m.normal.p50_us, p99: m.accel.p99_us / m.normal.p99_us, gbps: m.accel.gbps / m.normal.gbps },
  };
}

export function roundLine(r: RoundResult): string {
  return `round ${r.round} ${r.mode === 'accel' ? 'accelerated' : 'normal     '}: rr p50 ${r.p50_us.toFixed(1)}µs p99 ${r.p99_us.toFixed(1)}µs (${r.exchanges} exchanges), bulk ${r.gbps.toFixed(2)} Gbit/s\n`;
}

export function comparisonTable(c: Comparison): string {
  const { normal: n, accel: a } = c.median;
  return table(
    ['METRIC (median)', 'NORMAL PATH', 'ACCELERATED', 'RATIO', ''],
    [
      ['TCP RR latency p50', `${n.p50_us.toFixed(2)} µs`, `${a.p50_us.toFixed(2)} µs`, `${c.ratio.p50.toFixed(2)}×`, 'lower is better'],
      ['TCP RR latency p99', `${n.p99_us.toFixed(2)} µs`, `${a.p99_us.toFixed(2)} µs`, `${c.ratio.p99.toFixed(2)}×`, 'lower is better'],
      ['TCP bulk throughput', `${n.gbps.toFixed(2)} Gbit/s`, `${a.gbps.toFixed(2)} Gbit/s`, `${c.ratio.gbps.toFixed(2)}×`, 'higher is better'],
    ],
  );
}
