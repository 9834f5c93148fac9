// `podwarp-dev bench` for real, at the smallest size (--quick, routed wiring,
// no services group): bench.json holds every round of each path, the new
// connections, long-transfer and slow-reader groups too, each round with the
// counters of its path; bench.html renders in headless Chromium (when
// installed), and nothing of the run is left on the machine; interrupted in the middle of a round (SIGINT), it
// still removes everything it made.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../devtools/bench.js';
import { hasChromium, visitReport } from '../../devtools/browser.js';
import { readBenchReport } from '../../devtools/bench-report.js';
import { contradictions, expectedFor } from '../../devtools/evidence.js';
import { hasIperf3 } from '../../devtools/perf.js';
import { onLines, run } from '../../host/exec.js';
import * as ipr from '../../host/ip.js';
import { cgroup2Root } from '../../host/mounts.js';
import { ROOT } from '../../loader/build.js';
import { requireRoot, until } from './helpers.js';

const DEV = path.join(ROOT, 'bin', 'podwarp-dev');
const ARGS = ['bench', '--quick', '--wiring', 'routed', '--services', 'none'];
/** the groups of devtools/bench-flows.ts, in their order */
const FLOWS = ['conn-pod-pod', 'conn-clusterip', 'long-transfer', 'slow-reader'];

/** What a bench run can make, machine-wide: compared before and after. */
async function benchObjects(): Promise<string[]> {
  const bpffs = '/sys/fs/bpf';
  const objs = [
    ...(fs.existsSync(bpffs) ? fs.readdirSync(bpffs).filter((n) => n.startsWith('podwarp_bench')) : []).map((n) => `pin ${n}`),
    ...fs
      .readdirSync(os.tmpdir())
      .filter((n) => n.startsWith('podwarp-bench-'))
      .map((n) => `dir ${n}`),
    ...(await ipr.netnsList()).filter((n) => /^pw-[0-9a-f]{4}-/.test(n)).map((n) => `netns ${n}`),
    ...(await ipr.links()).filter((l) => /^pw[0-9a-f]{4}/.test(l.ifname)).map((l) => `link ${l.ifname}`),
    ...fs
      .readdirSync(cgroup2Root())
      .filter((n) => n.startsWith('podwarp-sandbox-'))
      .map((n) => `cgroup ${n}`),
  ];
  const ipt = await run('iptables', ['iptables', '-w', '-S', 'FORWARD'], { reject: false });
  for (const m of ipt.stdout.matchAll(/podwarp-sandbox-[0-9a-f]+/g)) objs.push(`iptables ${m[0]}`);
  return objs.sort();
}

describe('podwarp-dev bench', () => {
  let before: string[];
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pwtest-bench-out-'));
  beforeAll(async () => {
    requireRoot();
    before = await benchObjects();
  });
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));
  const newObjects = async () => (await benchObjects()).filter((o) => !before.includes(o));

  it('--quick: bench.json with every round and the medians, bench.html drawn, nothing left behind', async () => {
    const r = await execa(DEV, [...ARGS, '--out', out], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const report: BenchReport = readBenchReport(path.join(out, 'bench.json'));
    expect(report.options).toMatchObject({ rounds: 2, seconds: 0.5, longSeconds: 1, quick: true, wirings: ['routed'], services: [] });
    expect(report.groups.map((g) => g.id)).toEqual(['pod-pod-routed', 'sidecar', ...FLOWS]);
    for (const g of report.groups) {
      for (const p of g.paths) {
        expect(g.rounds.filter((x) => x.path === p.id)).toHaveLength(2);
        for (const f of g.figures) expect(g.median[p.id]![f.key]).toBeGreaterThan(0);
      }
      for (const r of g.rounds) expect(contradictions(r.evidence, expectedFor(g.id, r.path)!), `${g.id} ${r.round} ${r.path}`).toEqual([]);
    }
    const group = (id: string) => report.groups.find((g) => g.id === id)!;
    for (const id of FLOWS) {
      const g = group(id);
      expect(g.baseline).toBe('normal');
      // the three paths side by side, rounds alternating
      expect(g.rounds.map((r) => `${r.round} ${r.path}`)).toEqual(['1 normal', '1 tc', '1 sockmap', '2 normal', '2 tc', '2 sockmap']);
    }
    expect(group('conn-clusterip').paths.map((p) => p.label)).toEqual([
      'iptables DNAT (kube-proxy)',
      'socket LB + tc',
      'socket LB + tc + sockmap',
    ]);
    // every connect() to the ClusterIP translated by the socket LB (at least conn/s × the seconds of a round), none by iptables' path
    for (const r of group('conn-clusterip').rounds)
      if (r.path === 'normal') expect(r.evidence.lbTranslated).toBe(0);
      else expect(r.evidence.lbTranslated).toBeGreaterThanOrEqual(Math.floor(r.values.conn_per_s! * report.options.seconds));
    expect(group('long-transfer').figures.map((f) => f.label)).toEqual([
      'TCP bulk, one 1 s stream (pwperf)',
      ...((await hasIperf3()) ? ['TCP bulk, one 1 s stream (iperf3)'] : []),
    ]);
    expect(group('slow-reader').figures.map((f) => f.key)).toEqual(['goodput_mbs']);
    expect(await newObjects()).toEqual([]);
    // scripts/test.sh installs it (scripts/setup-browser.sh): without it the report is not checked, so the test fails
    expect(hasChromium(), 'headless Chromium (bash scripts/setup-browser.sh) to draw the report').toBe(true);
    const v = await visitReport(path.join(out, 'bench.html'));
    expect(v.errors).toEqual([]);
    expect(v.requests).toEqual([]);
    expect(v.charts).toHaveLength(report.groups.reduce((n, g) => n + g.figures.length + 1, 0));
    for (const c of v.charts) expect(c.paintedPixels, c.canvas).toBeGreaterThan(0);
  });

  it('SIGINT in the middle of a round: exit 130, everything removed', async () => {
    const child = execa(DEV, [...ARGS, '--out', path.join(out, 'interrupted')], { reject: false });
    let seen = '';
    onLines(child.stdout, (l) => (seen += l + '\n'));
    // a round of the accelerated path has been measured: sandbox, programs and servers are all up
    await until('the first tc round', () => seen.includes('round 1 tc fast path'), 90_000);
    expect((await newObjects()).length).toBeGreaterThan(0);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode, r.stderr).toBe(130);
    expect(r.stderr).toContain('bench: SIGINT, tearing down');
    expect(await newObjects()).toEqual([]);
    expect(fs.existsSync(path.join(out, 'interrupted', 'bench.json'))).toBe(false);
  });
});
