// Benchmark: what the drain's fallback costs (README "Parts the kernel may
// refuse"). Without the drain iterator, a socket taken out of acceleration
// stays in pw_sock on passthrough until it closes: its sends take TCP, but
// it keeps the sockmap's receive path (tcp_bpf) and pw_sk_msg runs on every
// send. Side by side, rounds interleaved, medians and ratios:
//   tcp          sockmap off: plain TCP (through the tc fast path)
//   passthrough  sockmap on, every flow passthrough from its first message
//                (pw_config bulk_bytes = 1), sockets left in pw_sock
//   redirect     sockmap on, flows redirected (the accelerated path)
// Not a timed test.
//   npm run bench:passthrough -- [--rounds 5] [--seconds 2] [--cpu 0|none] [--json FILE]
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { median, prepareTools, rr, scratchDatapath, sink, startServer } from '../../devtools/perf.js';
import { setMode } from '../../devtools/compare.js';
import * as sandbox from '../../devtools/sandbox.js';
import { readConfig, writeConfig } from '../../src/pods/apply.js';
import { socketRows } from '../../src/commands/dump.js';
import { loadStateFile } from '../../src/state/load.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '2' },
    cpu: { type: 'string', default: '0' },
    json: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const cpu = values.cpu === 'none' ? undefined : Number(values.cpu);
const MODES = ['tcp', 'passthrough', 'redirect'] as const;
type Mode = (typeof MODES)[number];

// the fallback's world on any kernel: the drain iterator refused, so passthrough sockets stay
process.env.PODWARP_TEST_REFUSE = 'drain';
const objs = await prepareTools();
const { id, dir, dp } = await scratchDatapath('passthrough');
const say = (s: string) => process.stdout.write(s);
const results: { round: number; mode: Mode; gbps: number; p50_us: number; p99_us: number; inSock: number }[] = [];
let srv: Awaited<ReturnType<typeof startServer>> | undefined;
try {
  const m = await sandbox.up({ dir, id, pods: 2, namespaces: ['bench-a'], wiring: 'routed' });
  await dp.load(objs);
  srv = await startServer(m.pods[1]!, 7700, cpu);
  const base = loadStateFile(m.stateFile).snapshot;
  const [client, server] = [m.pods[0]!, m.pods[1]!];
  say(
    `== passthrough cost: ${rounds} rounds × ${seconds}s, ${cpu === undefined ? 'unpinned' : `pinned to CPU ${cpu}`}; ${os.cpus().length} CPUs, kernel ${os.release()}\n`,
  );
  for (let round = 1; round <= rounds; round++) {
    for (const mode of MODES) {
      await setMode(dp, base, mode === 'tcp' ? 'tc' : 'sockmap');
      const c = (await readConfig(dp))!;
      await writeConfig(dp, { ...c, bulkBytes: mode === 'passthrough' ? 1 : 0 });
      const lat = await rr(client, server.ip, 7700, { seconds, cpu });
      const bulk = await sink(client, server.ip, 7700, { seconds, cpu });
      if (!bulk.ok) throw new Error(`bulk transfer lost bytes: sent ${bulk.bytes}, server got ${bulk.received}`);
      // what stays behind in pw_sock: closed sockets leave it by themselves
      const inSock = (await socketRows(dp)).length;
      results.push({ round, mode, gbps: bulk.gbps, p50_us: lat.p50_us, p99_us: lat.p99_us, inSock });
      say(
        `round ${round} ${mode.padEnd(11)}: rr p50 ${lat.p50_us.toFixed(1)}µs p99 ${lat.p99_us.toFixed(1)}µs, bulk ${bulk.gbps.toFixed(2)} Gbit/s\n`,
      );
    }
  }
} finally {
  await srv?.stop();
  await dp.uninstall({ force: true }).catch(() => undefined);
  await sandbox.down(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}
const med = (mode: Mode, k: 'gbps' | 'p50_us' | 'p99_us') => median(results.filter((r) => r.mode === mode).map((r) => r[k]));
const summary = Object.fromEntries(
  MODES.map((mode) => [
    mode,
    {
      gbps: med(mode, 'gbps'),
      p50_us: med(mode, 'p50_us'),
      p99_us: med(mode, 'p99_us'),
      ratio_vs_tcp: { gbps: med(mode, 'gbps') / med('tcp', 'gbps'), p50_us: med(mode, 'p50_us') / med('tcp', 'p50_us') },
    },
  ]),
);
say('MODE         BULK Gbit/s  RR p50 µs  RR p99 µs  BULK/TCP  P50/TCP\n');
for (const mode of MODES) {
  const s = summary[mode]!;
  say(
    `${mode.padEnd(12)} ${s.gbps.toFixed(2).padStart(11)}  ${s.p50_us.toFixed(1).padStart(9)}  ${s.p99_us.toFixed(1).padStart(9)}  ${s.ratio_vs_tcp.gbps.toFixed(2).padStart(7)}×  ${s.ratio_vs_tcp.p50_us.toFixed(2).padStart(6)}×\n`,
  );
}
say(JSON.stringify({ rounds, seconds, cpu, kernel: os.release(), cpus: os.cpus().length, results: summary }) + '\n');
if (values.json) fs.writeFileSync(values.json, JSON.stringify({ rounds, seconds, cpu, results, summary }, null, 2) + '\n');
