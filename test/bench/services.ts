// Benchmark: service load balancing at connect() against kube-proxy-style
// iptables, with 1,000 / 5,000 / 10,000 services installed both ways, and the
// time to write services into the maps. Not a timed test. The measurement is
// devtools/bench-services.ts (also a group of `podwarp-dev bench`).
//   npm run bench:services -- [--sizes 1000,5000,10000] [--backends 10] [--rounds 3] [--seconds 2] [--json FILE] [--smoke]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { measureServices, servicesTable } from '../../devtools/bench-services.js';
import { prepareTools } from '../../devtools/perf.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,5000,10000' },
    backends: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '2' },
    cpu: { type: 'string', default: '0' },
    json: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});
const sizes = values.smoke ? [200] : values.sizes.split(',').map(Number);
const rounds = values.smoke ? 1 : Number(values.rounds);
const seconds = values.smoke ? 0.5 : Number(values.seconds);
const cpu = values.cpu === 'none' ? undefined : Number(values.cpu);
const say = (s: string) => process.stdout.write(s);

const objs = await prepareTools();
let teardown: (() => Promise<void>) | undefined;
// Ctrl-C / SIGTERM still end in the teardown
// (`on`, not `once`: see devtools/bench.ts)
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    void (teardown?.() ?? Promise.resolve()).finally(() => process.exit(130));
  });
const results = await measureServices({
  objs,
  sizes,
  backends: Number(values.backends),
  rounds,
  seconds,
  cpu,
  say,
  onTeardown: (t) => (teardown = t),
});
say('\n' + servicesTable(results));
say(JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results: results.map(({ rounds: _, ...r }) => r) }) + '\n');
if (values.json) fs.writeFileSync(values.json, JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results }, null, 2) + '\n');
