// `podwarp doctor` rules and rendering on injected node facts (no root, no
// probing): what passes, what fails and why, the exit status, both formats.
import { describe, expect, it } from 'vitest';
import { evaluate, loadChecks, readNeeds, type DoctorFacts } from '../../src/doctor/checks.js';
import { activePart, refusedPart } from '../../loader/parts.js';
import YAML from 'yaml';
import { DOCTOR_WIDTH, exitCode, render, report } from '../../src/commands/doctor.js';
import { MAPS } from '../../abi/schema.js';

const needs = readNeeds();
/** The kernel offers every helper any program uses, to every program type. */
const allHelpers = () => [...new Set(needs.flatMap((n) => n.helpers))];
const HYBRID = 'cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n';

function good(): DoctorFacts {
  const types = ['sched_cls', 'sock_ops', 'sk_msg', 'cgroup_sock_addr', 'cgroup_sockopt'];
  return {
    uid: 0,
    kernel: '5.10.0-46-amd64',
    node: 'v20.20.2',
    btf: true,
    mounts: 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n',
    tools: {
      bpftool: 'bpftool v7.1.0',
      tc: 'tc utility, iproute2-6.1.0',
      ip: 'ip utility, iproute2-6.1.0',
      clang: 'clang 14',
      unshare: 'unshare 2.38',
      flock: 'flock from util-linux 2.38.1',
    },
    staleSources: [],
    toolchainImage: false,
    probe: {
      // tracing as bpftool reports it on real kernels: not probeable
      program_types: { ...Object.fromEntries(types.map((t) => [`have_${t}_prog_type`, true])), have_tracing_prog_type: false },
      map_types: Object.fromEntries(MAPS.map((m) => [`have_${m.type}_map_type`, true])),
      helpers: Object.fromEntries(types.map((t) => [`${t}_available_helpers`, allHelpers()])),
    },
    tcx: { kernel: false, bpftool: false },
  };
}

const byName = (f: DoctorFacts) => new Map(evaluate(f, needs).map((c) => [c.check, c]));

describe('podwarp doctor rules', () => {
  it('a good 5.10 node passes every check; tcx missing is information, not a failure', () => {
    const r = report(evaluate(good(), needs));
    expect(r.failed).toEqual([]);
    expect(exitCode(r)).toBe(0);
    const c = byName(good());
    expect(c.get('tcx')!.result).toBe('info');
    expect(c.get('helper bpf_redirect_peer')!.result).toBe('pass');
    expect(c.get('cgroup2 mount')!.detail).toContain('unified, cgroup2 at /sys/fs/cgroup');
    // every program type and map type of the sources has its row
    for (const t of ['sched_cls', 'sock_ops', 'sk_msg', 'cgroup_sock_addr', 'cgroup_sockopt', 'tracing'])
      expect(c.has(`program type ${t}`), t).toBe(true);
    for (const m of MAPS) expect(c.has(`map type ${m.type}`), m.type).toBe(true);
    // bpftool cannot probe tracing programs: not tried without the scratch load, never a failure
    expect(c.get('program type tracing')!.result).toBe('skip');
  });

  it('finds cgroup2 in a hybrid layout and fails without it', () => {
    expect(byName({ ...good(), mounts: HYBRID }).get('cgroup2 mount')!.detail).toBe(
      'hybrid (1 v1 hierarchies), cgroup2 at /sys/fs/cgroup/unified',
    );
    const v1only = byName({ ...good(), mounts: 'cgroup /sys/fs/cgroup/memory cgroup rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n' });
    expect(v1only.get('cgroup2 mount')!.result).toBe('fail');
    expect(v1only.get('cgroup2 mount')!.detail).toContain('cgroup v1 only');
  });

  it('fails on an old kernel, no BTF, no bpffs, a missing helper or map type, each with a fix', () => {
    const f = good();
    f.kernel = '5.4.0-150-generic';
    f.btf = false;
    f.mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
    f.probe!.helpers!.sched_cls_available_helpers = allHelpers().filter((h) => h !== 'bpf_redirect_peer');
    f.probe!.map_types!.have_sockhash_map_type = false;
    const r = report(evaluate(f, needs));
    expect(r.failed).toEqual(['kernel', 'BTF', 'bpffs mount', 'helpers for sched_cls', 'helper bpf_redirect_peer', 'map type sockhash']);
    expect(exitCode(r)).toBe(1);
    for (const c of r.checks.filter((x) => x.result === 'fail')) expect(c.fix, c.check).not.toBe('');
    expect(r.checks.find((c) => c.check === 'helpers for sched_cls')!.detail).toBe('missing: bpf_redirect_peer');
  });

  it('clang: a warning while the objects are up to date, a failure when they must be rebuilt', () => {
    const noClang = { ...good(), tools: { ...good().tools, clang: undefined } };
    expect(byName(noClang).get('clang')!.result).toBe('warn');
    expect(exitCode(report(evaluate(noClang, needs)))).toBe(0);
    const stale = { ...noClang, staleSources: ['/x/bpf/pw_tc_egress.c'] };
    expect(byName(stale).get('clang')!.result).toBe('fail');
    expect(byName(stale).get('clang')!.detail).toContain('pw_tc_egress.c');
  });

  it('without flock: the agent cannot take the node lock, a failure with its package', () => {
    const f = { ...good(), tools: { ...good().tools, flock: undefined } };
    expect(report(evaluate(f, needs)).failed).toEqual(['flock']);
    expect(byName(f).get('flock')).toEqual({ check: 'flock', result: 'fail', detail: 'not on PATH', fix: 'apt-get install util-linux' });
  });

  it('without bpftool: bpftool fails, the feature probe is skipped (not a second failure)', () => {
    const f = { ...good(), tools: { ...good().tools, bpftool: undefined }, probe: undefined, loadSkipped: 'needs bpftool' };
    const r = report(evaluate(f, needs));
    expect(r.failed).toEqual(['bpftool']);
    const c = byName(f);
    expect(c.get('kernel feature probe')!.result).toBe('skip');
    expect(c.get('load programs')!.detail).toBe('not tried: needs bpftool');
  });

  it('not root: fails on privileges and says how to run it', () => {
    const f = { ...good(), uid: 1000, probe: undefined };
    const r = report(evaluate(f, needs));
    expect(r.failed).toEqual(['privileges']);
    expect(byName(f).get('privileges')!.fix).toContain('root');
  });

  it('takes the scratch load results as they are, and they decide the tracing row', () => {
    const f = good();
    f.load = [
      { check: 'load programs', result: 'pass', detail: '9 programs', fix: '' },
      { check: 'attach tc ingress (clsact)', result: 'fail', detail: 'Error: Unknown filter "bpf"', fix: 'CONFIG_NET_CLS_BPF' },
    ];
    const r = report(evaluate(f, needs));
    expect(r.failed).toEqual(['attach tc ingress (clsact)']);
    expect(byName(f).get('program type tracing')!.result).toBe('pass');
  });
});

describe("the scratch load's findings as checks", () => {
  const loaded = {
    programs: 15,
    skMsg: true,
    flowControl: { source: 'psock' as const },
    parts: [activePart('map-dump', ['pw_svc_iter.o']), refusedPart('drain', ['pw_sock_iter.o'], 'EPERM: x')],
    tc: {},
    cgroups: [
      { hook: 'connect4', prog: 'pw_lb_connect4' },
      { hook: 'connect4', prog: 'pw_proxy_connect4' },
      { hook: 'sendmsg4', prog: 'pw_lb_sendmsg4' },
      { hook: 'getsockopt', prog: 'pw_proxy_getsockopt', error: 'Error: EINVAL' },
      { hook: 'getsockopt', prog: 'pw_lb_x' },
    ],
    cgroupListing: 'effective' as const,
  };

  it('a refused core program is the one row, failed, with the kernel reason', () => {
    expect(loadChecks({ refused: 'EPERM: BPF program load failed' })).toEqual([
      expect.objectContaining({
        check: 'load programs',
        result: 'fail',
        detail: 'the kernel refused a core program: EPERM: BPF program load failed',
      }),
    ]);
  });

  it('one row per step: programs, sk_msg, flow control, each part, tc, each cgroup hook (multi), the listing', () => {
    const c = loadChecks(loaded);
    expect(c.map((x) => [x.check, x.result])).toEqual([
      ['load programs', 'pass'],
      ['attach sk_msg verdict on sockhash', 'pass'],
      ['sockmap flow control', 'pass'],
      ['optional part map-dump', 'pass'],
      ['optional part drain', 'warn'],
      ['attach tc ingress (clsact)', 'pass'],
      ['attach cgroup getsockopt', 'fail'],
      ['attach cgroup connect4', 'pass'],
      ['attach cgroup sendmsg4', 'pass'],
      ['cgroup program listing', 'info'],
    ]);
    expect(c[0]!.detail).toBe('15 programs verified and pinned (scratch)');
    expect(c.find((x) => x.check === 'attach cgroup connect4')!.detail).toBe('pw_lb_connect4, pw_proxy_connect4 (multi)');
    expect(c.find((x) => x.check === 'attach cgroup getsockopt')!.detail).toBe('pw_proxy_getsockopt: Error: EINVAL');
    expect(c.at(-1)!.detail).toMatch(/^fallback: /);
  });

  it('no unshare: the tc attach is skipped; a failed one fails; sockmap off: the sk_msg attach is skipped', () => {
    const c = loadChecks({ ...loaded, skMsg: false, tc: undefined, cgroups: [], cgroupListing: undefined });
    const by = new Map(c.map((x) => [x.check, x]));
    expect(by.get('attach tc ingress (clsact)')).toMatchObject({ result: 'skip', detail: 'needs unshare' });
    expect(by.get('attach sk_msg verdict on sockhash')!.result).toBe('skip');
    expect(by.has('cgroup program listing')).toBe(false);
    const failedTc = loadChecks({ ...loaded, tc: { error: 'Error: Unknown filter "bpf"' } }).find(
      (x) => x.check === 'attach tc ingress (clsact)',
    );
    expect(failedTc).toMatchObject({ result: 'fail', detail: 'Error: Unknown filter "bpf"' });
  });
});

describe('podwarp doctor output', () => {
  it('table: aligned columns CHECK RESULT DETAIL, failed checks in full below with their fix, a summary line', () => {
    const f = good();
    f.mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
    const text = render(report(evaluate(f, needs)), 'table');
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^CHECK\s+RESULT\s+DETAIL$/);
    const col = lines[0]!.indexOf('RESULT');
    const rows = lines.slice(1, lines.indexOf(''));
    for (const l of rows) expect(l.slice(col).split(/\s+/)[0], l).toMatch(/^(pass|warn|fail|info|skip)$/);
    expect(rows.find((l) => l.startsWith('bpffs mount'))).toMatch(/^bpffs mount\s+fail\s+no bpf file system in \/proc\/mounts/);
    expect(text).toContain('FAIL bpffs mount: no bpf file system in /proc/mounts');
    expect(text).toContain('  fix: mount -t bpf bpf /sys/fs/bpf');
    expect(lines.at(-2)).toMatch(/1 fail, \d+ skipped: the agent cannot run on this node \(bpffs mount\)/);
  });

  it('json: ok, the failed names and every check', () => {
    const j = JSON.parse(render(report(evaluate(good(), needs)), 'json')) as {
      ok: boolean;
      failed: string[];
      checks: { check: string; result: string }[];
    };
    expect(j.ok).toBe(true);
    expect(j.failed).toEqual([]);
    expect(j.checks.map((c) => c.check)).toContain('helper bpf_redirect_peer');
  });

  it('table fits 100 columns, cutting DETAIL (a warning or failure follows in full); wide adds FIX and cuts nothing', () => {
    const f = good();
    f.mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
    const checks = evaluate(f, needs);
    const long = 'the kernel refused it: ' + 'a long verifier explanation '.repeat(12).trim();
    checks.push({
      check: 'scratch part',
      result: 'warn',
      detail: long,
      fix: 'a newer kernel, or run without this part: ' + 'x'.repeat(80),
    });
    checks.push({ check: 'pod cgroups', result: 'info', detail: 'i'.repeat(150), fix: '' });
    const r = report(checks);
    const text = render(r, 'table');
    for (const l of text.split('\n')) expect(l.length, l).toBeLessThanOrEqual(DOCTOR_WIDTH);
    expect(text).toMatch(/^scratch part\s+warn\s+the kernel refused it: a long.*…/m);
    // the warning's text in full below the table (wrapped), and a pointer to -o wide
    expect(text.replace(/\n\s*/g, ' ')).toContain(`WARN scratch part: ${long}`);
    expect(text).toContain('  fix: a newer kernel, or run without this part');
    expect(text).toContain('-o wide');
    expect(text).toMatch(/1 fail, \d+ skipped: the agent cannot run on this node \(bpffs mount\)/);
    const wide = render(r, 'wide');
    expect(wide).toContain(long);
    expect(wide).toContain('i'.repeat(150));
    expect(Math.max(...wide.split('\n').map((l) => l.length))).toBeGreaterThan(DOCTOR_WIDTH);
    expect(wide.split('\n')[0]).toMatch(/^CHECK\s+RESULT\s+DETAIL\s+FIX$/);
  });

  it('yaml is the json object', () => {
    const r = report(evaluate(good(), needs));
    expect(YAML.parse(render(r, 'yaml'))).toEqual(JSON.parse(render(r, 'json')));
  });
});
