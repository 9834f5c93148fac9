#!/usr/bin/env node
// podwarp-dev: the podwarp CLI plus the developer commands that never ship in
// the image (dist/ holds no devtools): `demo`, `sandbox` and `bench`. bin/podwarp-dev
// runs it from a checkout.
import type { Command } from 'commander';
import { InputError } from '../host/errors.js';
import { configureLog } from '../host/log.js';
import { out, podwarpProgram, runCli } from '../src/cli.js';
import { QUICK, runBench } from './bench.js';
import * as sandbox from './sandbox.js';

const program = podwarpProgram('podwarp-dev');

const sb = program.command('sandbox').description('a node in miniature: pods as netns + veth + cgroup');
sb.command('up')
  .description('create pods and write <dir>/state.yaml')
  .option('--dir <dir>', 'where the state file and manifest go', '.sandbox')
  .option('--pods <n>', 'number of pods', '4')
  .option('--namespaces <list>', 'comma-separated Kubernetes namespaces', 'team-a,team-b')
  .option('--bridge', 'docker0/cni0-style bridge instead of kindnet-style routing')
  .option('--accelerate', 'mark every namespace accelerate: true in the state file')
  .action(async (o: { dir: string; pods: string; namespaces: string; bridge?: boolean; accelerate?: boolean }) => {
    const m = await sandbox.up({
      dir: o.dir,
      pods: Number(o.pods),
      namespaces: o.namespaces.split(',').filter(Boolean),
      wiring: o.bridge ? 'bridge' : 'routed',
      accelerate: o.accelerate,
    });
    out(`sandbox ${m.id} (${m.wiring}, ${m.subnet}): ${m.pods.length} pods; state file ${m.stateFile}\n`);
    for (const p of m.pods) out(`  ${p.namespace}/${p.name}  ${p.ip}  netns ${p.netns}  host ${p.hostInterface}\n`);
  });
sb.command('down')
  .description('remove everything the sandbox in <dir> created')
  .option('--dir <dir>', 'sandbox directory', '.sandbox')
  .action(async (o: { dir: string }) => {
    const r = await sandbox.down(o.dir);
    out(`removed ${r.removed.length} objects\n`);
    if (r.errors.length) throw new Error(`sandbox down left things behind:\n  ${r.errors.join('\n  ')}`);
  });
sb.command('exec')
  .description('run a command in a sandbox pod: podwarp sandbox exec NAMESPACE/POD -- CMD…')
  .option('--dir <dir>', 'sandbox directory', '.sandbox')
  .argument('<pod>')
  .argument('<cmd...>')
  .action(async (pod: string, cmd: string[], o: { dir: string }) => {
    const m = sandbox.readManifest(o.dir);
    const p = m.pods.find((x) => `${x.namespace}/${x.name}` === pod || x.name === pod);
    if (!p) throw new InputError(`no pod ${pod} in sandbox ${m.id}`);
    const r = await sandbox.execInPod(p, cmd);
    out(r.stdout);
    process.stderr.write(r.stderr);
    process.exitCode = r.exitCode;
  });

program
  .command('demo')
  .description('build, bring up a sandbox, measure normal vs accelerated pod→pod TCP, show maps and counters, tear down')
  .option('--seconds <s>', 'seconds per measurement', '3')
  .option('--rounds <n>', 'alternating baseline/accelerated rounds (medians are reported)', '3')
  .option('--bridge', 'bridge wiring instead of routed')
  .option('--cpu <n|none>', 'pin client and server to one CPU (none: unpinned)', '0')
  .action(async (o: { seconds: string; rounds: string; bridge?: boolean; cpu: string }) => {
    const { demo } = await import('./demo.js');
    // the demo prints progress and results; log lines only when something is wrong
    // (unless --log-level or PODWARP_LOG_LEVEL asks for more)
    if (program.getOptionValueSource('logLevel') === 'default' && !process.env.PODWARP_LOG_LEVEL) configureLog({ level: 'warn' });
    const cpu = o.cpu === 'none' ? undefined : Number(o.cpu);
    await demo({ seconds: Number(o.seconds), rounds: Number(o.rounds), wiring: o.bridge ? 'bridge' : 'routed', cpu });
  });

// In the dev CLI, not in `podwarp`: it needs the sandbox, pwperf and the proxy
// fixture (devtools/), which the image and dist/ do not hold.
program
  .command('bench')
  .description('every path side by side on sandbox nodes; writes <out>/bench.json and a self-contained <out>/bench.html')
  .option('--out <dir>', 'where bench.json and bench.html go', 'build/bench')
  .option('--rounds <n>', 'alternating rounds per comparison (medians are reported)', '5')
  .option('--seconds <s>', 'seconds per measurement', '3')
  .option('--long-seconds <s>', 'length of the long transfer', '30')
  .option(
    '--quick',
    `the smoke: ${QUICK.rounds} rounds × ${QUICK.seconds}s, a ${QUICK.longSeconds}s long transfer, ${QUICK.services.join(',')} services (unless given)`,
  )
  .option('--services <n,…|none>', 'numbers of installed services for the ClusterIP comparison', '1000')
  .option('--wiring <routed,bridge>', 'sandbox wirings for pod→pod (app→sidecar runs on routed)', 'routed,bridge')
  .option('--cpu <n|none>', 'pin client and server to one CPU (none: unpinned)', '0')
  .option('--from <file>', 'no measurement: render the report of an earlier bench.json')
  .option('--png <file>', 'also a full-page screenshot of the report (headless Chromium)')
  .action(
    async (
      o: {
        out: string;
        rounds: string;
        seconds: string;
        longSeconds: string;
        quick?: boolean;
        services: string;
        wiring: string;
        cpu: string;
        from?: string;
        png?: string;
      },
      cmd: Command,
    ) => {
      const { readBenchReport, writeBenchReport } = await import('./bench-report.js');
      const num = (flag: string, v: string, min: number) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < min) throw new InputError(`${flag} ${v}: expected a number ≥ ${min}`);
        return n;
      };
      let report;
      if (o.from) report = readBenchReport(o.from);
      else {
        if (program.getOptionValueSource('logLevel') === 'default' && !process.env.PODWARP_LOG_LEVEL) configureLog({ level: 'warn' });
        const wirings = o.wiring.split(',').filter(Boolean);
        for (const w of wirings) if (w !== 'routed' && w !== 'bridge') throw new InputError(`--wiring ${w}: expected routed or bridge`);
        // --quick: its sizes, except what the command line sets itself
        const quick = (k: 'rounds' | 'seconds' | 'longSeconds' | 'services') => o.quick && cmd.getOptionValueSource(k) !== 'cli';
        report = await runBench({
          rounds: quick('rounds') ? QUICK.rounds : num('--rounds', o.rounds, 1),
          seconds: quick('seconds') ? QUICK.seconds : num('--seconds', o.seconds, 0.1),
          longSeconds: quick('longSeconds') ? QUICK.longSeconds : num('--long-seconds', o.longSeconds, 1),
          cpu: o.cpu === 'none' ? undefined : num('--cpu', o.cpu, 0),
          quick: Boolean(o.quick),
          wirings: wirings as ('routed' | 'bridge')[],
          sidecar: wirings.includes('routed'),
          services: quick('services')
            ? QUICK.services
            : o.services === 'none'
              ? []
              : o.services.split(',').map((s) => num('--services', s, 1)),
          backends: 10,
          say: (s) => out(s),
        });
      }
      const files = writeBenchReport(report, o.out);
      out(`\nresult ${files.json}\nreport ${files.html}\n`);
      if (o.png) {
        const { visitReport } = await import('./browser.js');
        const v = await visitReport(files.html, { png: o.png });
        if (v.errors.length) throw new Error(`the report page logged errors: ${v.errors.join('; ')}`);
        out(`screenshot ${o.png} (${v.charts.length} charts)\n`);
      }
    },
  );

await runCli(program);
