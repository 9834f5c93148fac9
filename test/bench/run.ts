// Benchmark: normal path vs accelerated, both wiring styles, and app↔sidecar,
// side by side in one run (alternating rounds, medians, ratios). Not a timed
// test. The same as `podwarp-dev bench` without the services group and
// without the HTML report (devtools/bench.ts does the work).
//   npm run bench -- [--rounds 5] [--seconds 3] [--long-seconds 30] [--cpu 0|none] [--json FILE] [--smoke]
// --smoke: 1 round of 0.5 s per wiring (a 1 s long transfer), to prove the benchmark runs.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { runBench } from '../../devtools/bench.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    'long-seconds': { type: 'string', default: '30' },
    cpu: { type: 'string', default: '0' },
    json: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});
const report = await runBench({
  rounds: values.smoke ? 1 : Number(values.rounds),
  seconds: values.smoke ? 0.5 : Number(values.seconds),
  longSeconds: values.smoke ? 1 : Number(values['long-seconds']),
  cpu: values.cpu === 'none' ? undefined : Number(values.cpu),
  quick: values.smoke,
  wirings: ['routed', 'bridge'],
  sidecar: true,
  services: [],
  backends: 10,
  say: (s) => process.stdout.write(s),
});
const summary = Object.fromEntries(report.groups.map((g) => [g.id, { median: g.median, ratio: g.ratio }]));
process.stdout.write(JSON.stringify({ ...report.options, results: summary }) + '\n');
if (values.json) fs.writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
