// The parts of the datapath (loader/parts.ts): which object belongs to which
// part, the kernel's reason as an engineer reads it (never libbpf's memlock
// guess), the test switch, and how doctor and the mount rules speak of them.
import { describe, expect, it } from 'vitest';
import { evaluate, partCheck, readNeeds, type DoctorFacts } from '../../src/doctor/checks.js';
import { ToolError } from '../../host/errors.js';
import { propagates } from '../../host/mounts.js';
import {
  PART_IDS,
  TRACING,
  activePart,
  coreOf,
  describePart,
  joinReasons,
  kernelReason,
  partOf,
  refusedPart,
  testRefused,
} from '../../loader/parts.js';
import { MAPS } from '../../abi/schema.js';

/** What bpftool 7.1 prints when a kernel refuses a map-element iterator (recorded on a 6.18 build that refuses tracing programs). */
const REFUSED_ITER = `Warning: bpftool is now running in libbpf strict mode and has more stringent requirements about BPF programs.
If it used to work for this object file but now doesn't, see --legacy option for more details.
libbpf: prog 'pw_svc_iter': BPF program load failed: Operation not permitted
libbpf: permission error while running as root; try raising 'ulimit -l'? current value: 8.0 MiB
libbpf: prog 'pw_svc_iter': -- BEGIN PROG LOAD LOG --
processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
libbpf: prog 'pw_svc_iter': failed to load: -1
libbpf: failed to load object 'build/bpf/iter/pw_svc_iter.o'
Error: failed to load object file`;

describe('datapath parts', () => {
  it('sorts every object into its part: tc required, three core features, three optional parts', () => {
    expect(coreOf('build/bpf/pw_tc_egress.o')).toBe('tc');
    expect(['pw_sockops.o', 'pw_sk_msg.o'].map((o) => coreOf(`build/bpf/${o}`))).toEqual(['sockmap', 'sockmap']);
    expect(coreOf('build/bpf/pw_lb_conn6.o')).toBe('socket-lb');
    expect(coreOf('build/bpf/pw_proxy_odst.o')).toBe('sidecar');
    expect(partOf('build/bpf/iter/pw_svc_iter.o')).toBe('map-dump');
    expect(partOf('build/bpf/iter/pw_backends_iter.o')).toBe('map-dump');
    expect(partOf('build/bpf/iter/pw_sock_iter.o')).toBe('drain');
    expect(partOf('build/bpf/trace/sk_msg_recvmsg.o')).toBe('read-counter');
    expect(partOf('build/bpf/pw_sockops.o')).toBeUndefined();
  });

  it("gives the kernel's errno and words, and drops libbpf's 'ulimit -l' guess", () => {
    const e = new ToolError('pin iterator', ['bpftool', 'iter', 'pin'], 255, REFUSED_ITER);
    const r = kernelReason(e);
    expect(r).toBe('EPERM: BPF program load failed: Operation not permitted');
    expect(r).not.toMatch(/ulimit|memlock/);
    expect(kernelReason(new Error("libbpf: prog 'x': BPF program load failed: Invalid argument"))).toBe(
      'EINVAL: BPF program load failed: Invalid argument',
    );
    expect(kernelReason(new Error(`${'refused by PODWARP_TEST_REFUSE (test switch, as a kernel that refuses it)'}`))).toContain(
      'PODWARP_TEST_REFUSE',
    );
  });

  it('says one reason once for several objects, else each with its object', () => {
    expect(
      joinReasons([
        ['a.o', 'EPERM: x'],
        ['b.o', 'EPERM: x'],
      ]),
    ).toBe('EPERM: x');
    expect(
      joinReasons([
        ['a.o', 'EPERM: x'],
        ['b.o', 'EINVAL: y'],
      ]),
    ).toBe('a.o: EPERM: x; b.o: EINVAL: y');
  });

  it('the test switch: named parts, tracing = what a tracing-refusing kernel takes, all but tc, a typo is an error', () => {
    expect(testRefused('drain', undefined)).toBe(false);
    expect(testRefused('drain', 'drain')).toBe(true);
    expect(testRefused('map-dump', 'drain')).toBe(false);
    for (const p of TRACING) expect(testRefused(p, 'tracing'), p).toBe(true);
    expect(testRefused('sockmap', 'tracing')).toBe(false);
    for (const p of PART_IDS) expect(testRefused(p, 'all'), p).toBe(true);
    expect(testRefused('tc', 'all')).toBe(false);
    expect(testRefused('tc', 'tc')).toBe(true);
    expect(() => testRefused('drain', 'drian')).toThrow(/"drian" is not a part/);
  });

  it('a refused part says what podwarp does instead; an active one what it does with it', () => {
    const off = refusedPart('drain', ['pw_sock_iter.o'], 'EPERM: BPF program load failed: Operation not permitted');
    expect(describePart(off)).toBe(
      'drain: off — kernel refused pw_sock_iter.o (EPERM: BPF program load failed: Operation not permitted); a socket taken out of acceleration (pod disabled, passthrough) stays in pw_sock on the TCP path until it closes; uninstall waits for accelerated sockets to close',
    );
    expect(partCheck(off)).toMatchObject({ check: 'optional part drain', result: 'warn' });
    expect(partCheck(refusedPart('sockmap', ['pw_sockops.o'], 'EPERM: x'))).toMatchObject({ check: 'feature sockmap', result: 'warn' });
    expect(partCheck(activePart('map-dump', ['pw_svc_iter.o']))).toMatchObject({ result: 'pass' });
  });
});

describe('doctor with refused parts', () => {
  const needs = readNeeds();
  const helpers = [...new Set(needs.flatMap((n) => n.helpers))];
  const types = ['sched_cls', 'sock_ops', 'sk_msg', 'cgroup_sock_addr', 'cgroup_sockopt'];
  const facts = (extra: Partial<DoctorFacts>): DoctorFacts => ({
    uid: 0,
    kernel: '6.18.44',
    node: 'v20.20.2',
    btf: true,
    mounts: 'cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n',
    tools: { bpftool: 'v7.1.0', tc: 'tc', ip: 'ip', clang: 'clang 14', unshare: 'unshare', flock: 'flock' },
    staleSources: [],
    toolchainImage: false,
    probe: {
      program_types: Object.fromEntries(types.map((t) => [`have_${t}_prog_type`, true])),
      map_types: Object.fromEntries(MAPS.map((m) => [`have_${m.type}_map_type`, true])),
      helpers: Object.fromEntries(types.map((t) => [`${t}_available_helpers`, helpers])),
    },
    tcx: { kernel: true, bpftool: false },
    ...extra,
  });

  it('refused tracing programs are warnings with their effect, never a failure', () => {
    const parts = [
      refusedPart('map-dump', ['pw_svc_iter.o', 'pw_backends_iter.o'], 'EPERM: BPF program load failed: Operation not permitted'),
      refusedPart('drain', ['pw_sock_iter.o'], 'EPERM: BPF program load failed: Operation not permitted'),
    ];
    const load = [{ check: 'load programs', result: 'pass' as const, detail: '15 programs', fix: '' }, ...parts.map(partCheck)];
    const checks = evaluate(facts({ load, parts }), needs);
    expect(checks.filter((c) => c.result === 'fail')).toEqual([]);
    const tracing = checks.find((c) => c.check === 'program type tracing')!;
    expect(tracing.result).toBe('warn');
    expect(tracing.detail).toContain('the kernel refused pw_svc_iter.o, pw_backends_iter.o, pw_sock_iter.o (EPERM)');
    expect(checks.find((c) => c.check === 'optional part drain')!.detail).toContain('stays in pw_sock on the TCP path until it closes');
    for (const c of checks) expect(`${c.detail} ${c.fix}`, c.check).not.toMatch(/ulimit/);
  });

  it('a bpffs podwarp mounted is said so; none (not mountable) fails with what the DaemonSet needs', () => {
    const mounted = evaluate(facts({ bpffsMounted: '/sys/fs/bpf' }), needs).find((c) => c.check === 'bpffs mount')!;
    expect(mounted).toMatchObject({ result: 'pass', detail: '/sys/fs/bpf: mounted by podwarp (the node had none; left mounted)' });
    const present = evaluate(facts({}), needs).find((c) => c.check === 'bpffs mount')!;
    expect(present.detail).toBe('/sys/fs/bpf: present');
    const none = evaluate(
      facts({ mounts: 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n', bpffsError: 'no bpf file system at /sys/fs/bpf in this container' }),
      needs,
    ).find((c) => c.check === 'bpffs mount')!;
    expect(none.result).toBe('fail');
    expect(none.detail).toContain('in this container');
    expect(none.fix).toContain('mountPropagation: Bidirectional');
  });
});

describe('mount propagation (a bpffs mounted from a pod must reach the node)', () => {
  const line = (id: number, point: string, opt: string) => `${id} 1 0:${id} / ${point} rw,relatime ${opt} - tmpfs x rw`;
  it('a shared mount holding the target propagates; a private one does not; the longest mount point decides', () => {
    const info = [line(20, '/', 'shared:1'), line(21, '/sys', 'master:2'), line(22, '/sys/fs/bpf', 'shared:7 master:3')].join('\n');
    expect(propagates('/sys/fs/bpf', info)).toBe(true);
    expect(propagates('/sys/fs/cgroup', info)).toBe(false); // under /sys: a slave only receives
    expect(propagates('/srv', info)).toBe(true); // under /
    expect(propagates('/sys/fs/bpf', [line(20, '/', 'shared:1'), line(22, '/sys/fs/bpf', '')].join('\n'))).toBe(false);
    expect(propagates('/sys/fs/bpf', '')).toBe(false);
  });
});
