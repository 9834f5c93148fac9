// `podwarp doctor` for real on this machine: the agent can run (optional
// parts the kernel refuses are warnings, checked against the kernel asked
// directly); a node without bpffs gets one mounted; with a prerequisite taken
// away where only the test sees it — a pod whose bpffs would not reach the
// node, a PATH without bpftool — it fails with a line naming that check and
// exits non-zero. Nothing of the machine is changed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { findMount } from '../../host/mounts.js';
import { testRefused } from '../../loader/parts.js';
import { CLI, kernelAllows, requireRoot } from './helpers.js';

interface Report {
  ok: boolean;
  failed: string[];
  checks: { check: string; result: string; detail: string; fix: string }[];
}

const id = crypto.randomBytes(3).toString('hex');
let dir = '';
const env = (extra: Record<string, string> = {}) => ({ ...(process.env as Record<string, string>), PODWARP_LOG_LEVEL: 'warn', ...extra });

/** Scratch pins (pwdoctor_*) and cgroups (podwarp-doctor-*) a doctor run could leave. */
function scratchLeft(): string[] {
  const bpffs = findMount('bpf')!;
  const cg2 = findMount('cgroup2')!;
  return [
    ...fs.readdirSync(bpffs).filter((n) => n.startsWith('pwdoctor_')),
    ...fs.readdirSync(cg2).filter((n) => n.startsWith('podwarp-doctor-')),
  ];
}

/** A directory of links to every command on PATH except `tool` (made once). */
function pathWithout(tool: string): string {
  const bin = path.join(dir, `bin-without-${tool}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(bin);
  for (const d of (process.env.PATH ?? '').split(':').filter((x) => x && fs.existsSync(x)))
    for (const n of fs.readdirSync(d))
      if (n !== tool && !fs.existsSync(path.join(bin, n))) fs.symlinkSync(path.join(d, n), path.join(bin, n));
  return bin;
}

beforeAll(() => {
  requireRoot();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), `pwtest-doctor-${id}-`));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  expect(scratchLeft()).toEqual([]);
});

describe('podwarp doctor', () => {
  it('the agent can run here: every core check passes, each optional part passes or warns as the kernel decides, nothing left behind', async () => {
    const before = scratchLeft();
    const r = await run('doctor', [CLI, 'doctor', '-o', 'json'], { reject: false, env: env() });
    const rep = JSON.parse(r.stdout) as Report;
    expect(rep.failed, r.stdout).toEqual([]);
    expect(r.exitCode).toBe(0);
    const result = new Map(rep.checks.map((c) => [c.check, c.result]));
    for (const c of [
      'bpffs mount',
      'cgroup2 mount',
      'helper bpf_redirect_peer',
      'load programs',
      'attach tc ingress (clsact)',
      // with PODWARP_TEST_REFUSE=all only the tc program loads: no cgroup attach is tried
      ...(testRefused('sockmap') ? [] : ['attach sk_msg verdict on sockhash', 'attach cgroup sock_ops']),
      ...(testRefused('socket-lb') ? [] : ['attach cgroup connect4', 'attach cgroup getpeername4', 'attach cgroup connect6']),
      ...(testRefused('socket-lb') ? [] : ['attach cgroup recvmsg6', 'attach cgroup getpeername6']),
    ])
      expect(result.get(c), c).toBe('pass');
    for (const f of ['sockmap', 'socket-lb', 'sidecar'] as const)
      expect(result.get(`feature ${f}`), f).toBe(testRefused(f) ? 'warn' : 'pass');
    // the optional parts: what the kernel says to the same objects, asked directly
    const world = {
      'map-dump': await kernelAllows('iter/pw_svc_iter.o', 'map-dump'),
      drain: await kernelAllows('iter/pw_sock_iter.o', 'drain'),
    };
    for (const [part, w] of Object.entries(world)) {
      const c = rep.checks.find((x) => x.check === `optional part ${part}`)!;
      expect(c.result, `${part}: the kernel ${w.allowed ? 'loads' : `refuses (${w.reason})`} it`).toBe(w.allowed ? 'pass' : 'warn');
      if (!w.allowed) expect(c.detail).toContain(w.reason === 'PODWARP_TEST_REFUSE' ? 'PODWARP_TEST_REFUSE' : w.reason);
    }
    const anyRefused = Object.values(world).some((w) => !w.allowed);
    expect(result.get('program type tracing')).toBe(anyRefused ? 'warn' : 'pass');
    // libbpf's memlock guess is never passed on: bpftool lifts the limit itself
    for (const c of rep.checks) expect(`${c.detail} ${c.fix}`, c.check).not.toMatch(/ulimit/);
    expect(scratchLeft()).toEqual(before);
    const t = await run('doctor', [CLI, 'doctor'], { reject: false, env: env() });
    expect(t.exitCode).toBe(0);
    expect(t.stdout).toMatch(/^CHECK\s+RESULT\s+DETAIL\n/);
    expect(t.stdout).toContain('the agent can run on this node');
    // the table fits 100 columns; -o wide adds FIX and cuts nothing
    for (const l of t.stdout.split('\n')) expect(l.length, l).toBeLessThanOrEqual(100);
    const w = await run('doctor', [CLI, 'doctor', '-o', 'wide'], { reject: false, env: env() });
    expect(w.exitCode).toBe(0);
    expect(w.stdout).toMatch(/^CHECK\s+RESULT\s+DETAIL\s+FIX\n/);
    for (const c of rep.checks) expect(w.stdout).toContain(c.detail);
    if (anyRefused) expect(t.stdout).toMatch(/^WARN optional part (map-dump|drain): kernel refused /m);
  });

  // private propagation first: the unmount stays inside this namespace; a bpffs hidden under
  // another mount (listed, never reachable: one mounted on "/") does not count
  const withoutBpffs = (bpffs: string, extraEnv: Record<string, string> = {}) =>
    run(
      'doctor without bpffs',
      [
        'unshare',
        '--mount',
        'sh',
        '-c',
        `mount --make-rprivate / && umount -l "$1" && for t in $(awk '$3 == "bpf" { print $2 }' /proc/mounts); do [ "$(stat -f -c %T "$t")" != bpf_fs ] || exit 3; done && exec "$2" doctor`,
        'sh',
        bpffs,
        CLI,
      ],
      { reject: false, env: env(extraEnv) },
    );

  it('on a node without bpffs: mounts one (as the agent does) and says so; the machine keeps its own', async () => {
    const bpffs = findMount('bpf')!;
    const r = await withoutBpffs(bpffs);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    // the table cuts DETAIL to fit 100 columns
    expect(r.stdout).toMatch(/^bpffs mount\s+pass\s+\/sys\/fs\/bpf: mounted by podwarp \(the node had none/m);
    expect(r.stdout).toContain('the agent can run on this node');
    expect(findMount('bpf'), 'the machine keeps its bpffs').toBe(bpffs);
  });

  it('in a pod whose /sys/fs/bpf does not propagate to the node: a fail line saying what the DaemonSet needs, exit 1', async () => {
    const bpffs = findMount('bpf')!;
    const r = await withoutBpffs(bpffs, { KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^bpffs mount\s+fail\s+no bpf file system in \/proc\/mounts/m);
    expect(r.stdout).toContain('mountPropagation: Bidirectional');
    expect(r.stdout).toContain('the agent cannot run on this node (bpffs mount)');
    expect(findMount('bpf'), 'the machine keeps its bpffs').toBe(bpffs);
  });

  it('with a PATH without bpftool: a fail line naming bpftool, exit 1', async () => {
    const bin = pathWithout('bpftool');
    const r = await run('doctor without bpftool', [CLI, 'doctor'], { reject: false, env: env({ PATH: bin }) });
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^bpftool\s+fail\s+not on PATH$/m);
    expect(r.stdout).toMatch(/^FAIL bpftool: not on PATH\n {2}fix: apt-get install bpftool$/m);
    expect(r.stdout).toMatch(/^kernel feature probe\s+skip\s+not run: needs bpftool/m);
    expect(r.stdout).toContain('the agent cannot run on this node (bpftool)');
  });

  it('the agent refuses to start on such a node with one line naming the check and pointing to doctor', async () => {
    const bin = pathWithout('bpftool');
    const state = path.join(dir, 'state.yaml');
    fs.writeFileSync(state, 'apiVersion: podwarp.io/v1alpha1\nkind: NodeState\nnamespaces: []\npods: []\n');
    const r = await run('agent without bpftool', [CLI, 'agent', '--state', state, '--once'], {
      reject: false,
      env: env({ PATH: bin, PODWARP_PIN_NAME: `pwtest_doctor_${id}`, PODWARP_RUN_DIR: path.join(dir, 'run') }),
    });
    expect(r.exitCode).toBe(1);
    const line = r.stderr.split('\n').find((l) => l.startsWith('podwarp: '));
    expect(line).toMatch(/^podwarp: error: missing feature bpftool: bpftool: not on PATH .*run `podwarp doctor`/);
    expect(fs.existsSync(path.join(findMount('bpf')!, `pwtest_doctor_${id}`))).toBe(false);
  });
});
