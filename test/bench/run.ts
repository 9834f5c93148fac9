// Benchmark: normal path vs accelerated, both wiring styles, side by side in
// one run (alternating rounds, medians, ratios). Not a timed test.
//   npm run bench -- [--rounds 5] [--seconds 3] [--cpu 0|none] [--json FILE] [--smoke]
// --smoke: 1 round of 0.5 s per wiring, to prove the benchmark runs (CI).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import {
  compare,
  compareSidecar,
  comparisonTable,
  roundLine,
  sidecarTable,
  type Comparison,
  type SidecarComparison,
} from '../../devtools/compare.js';
import { hasIperf3, prepareTools, scratchDatapath, startIperf3Server, startProxy, startServer } from '../../devtools/perf.js';
import * as sandbox from '../../devtools/sandbox.js';
import { loadStateFile } from '../../src/state/load.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    cpu: { type: 'string', default: '0' },
    json: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});
const rounds = values.smoke ? 1 : Number(values.rounds);
const seconds = values.smoke ? 0.5 : Number(values.seconds);
const cpu = values.cpu === 'none' ? undefined : Number(values.cpu);

const objs = await prepareTools();
let current: (() => Promise<void>) | undefined;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.once(sig, () => void (current?.() ?? Promise.resolve()).finally(() => process.exit(130)));
const results: Record<string, Comparison> = {};
let sidecar: SidecarComparison | undefined;
for (const wiring of ['routed', 'bridge'] as const) {
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
    const srv = await startServer(m.pods[1]!, 7300, cpu);
    const ip3 = (await hasIperf3()) ? await startIperf3Server(m.pods[1]!, 7301) : undefined;
    stop = async () => {
      await srv.stop();
      await ip3?.stop();
    };
    process.stdout.write(`== ${wiring}: ${rounds} rounds × ${seconds}s, ${cpu === undefined ? 'unpinned' : `pinned to CPU ${cpu}`}\n`);
    const c = await compare({
      dp,
      base: loadStateFile(m.stateFile).snapshot,
      client: m.pods[0]!,
      server: m.pods[1]!,
      port: 7300,
      iperf3Port: ip3 ? 7301 : undefined,
      rounds,
      seconds,
      cpu,
      onRound: (r) => process.stdout.write(roundLine(r)),
    });
    results[wiring] = c;
    process.stdout.write(comparisonTable(c) + '\n');
    if (wiring === 'routed') {
      const proxy = await startProxy(m.pods[0]!, 15001, 1337, cpu);
      try {
        const snap = loadStateFile(m.stateFile).snapshot;
        const sc = await compareSidecar({
          dp,
          base: { ...snap, pods: snap.pods.map((p) => (p.name === 'pod-0' ? { ...p, sidecar: true } : p)) },
          client: m.pods[0]!,
          server: m.pods[1]!,
          port: 7300,
          proxyPort: 15001,
          proxyUid: 1337,
          rounds,
          seconds,
          cpu,
          onRound: (line) => process.stdout.write(line),
        });
        sidecar = sc;
        process.stdout.write(sidecarTable(sc) + '\n');
      } finally {
        await proxy.stop();
      }
    }
  } finally {
    await (done ??= teardown());
  }
}
const summary = Object.fromEntries(Object.entries(results).map(([w, c]) => [w, { median: c.median, ratio: c.ratio }]));
const sidecarSummary = sidecar && { median: sidecar.median, ratio: sidecar.ratio };
process.stdout.write(JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results: summary, sidecar: sidecarSummary }) + '\n');
if (values.json) fs.writeFileSync(values.json, JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results, sidecar }, null, 2) + '\n');
