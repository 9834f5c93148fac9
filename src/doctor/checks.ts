// `podwarp doctor`'s verdicts: the node's facts (src/doctor/probe.ts
// probeNode) turned into checks, pass / warn / fail / info / skip with how to
// fix. Pure, so the rules are unit-tested with injected facts. The agent runs
// the same checks (without the scratch load: its own load follows) at
// start-up.
import fs from 'node:fs';
import path from 'node:path';
import { MAPS } from '../../abi/schema.js';
import { findMount, parseMounts } from '../../host/mounts.js';
import { BPF_SRC } from '../../loader/build.js';
import { describeFlowControl } from '../../loader/flowcontrol.js';
import { isCore, type Part } from '../../loader/parts.js';
import { MSG_PROG, TC_PROG } from '../../loader/pins.js';
import type { KernelProbe, ScratchLoad } from '../../loader/probes.js';

/** pass / warn (runs, with a caveat) / fail (the agent cannot run) / info (nothing needed) / skip (not tried: an earlier check failed). */
export type CheckResult = 'pass' | 'warn' | 'fail' | 'info' | 'skip';
export interface Check {
  check: string;
  result: CheckResult;
  detail: string;
  fix: string;
}

export const KERNEL_FLOOR = [5, 10] as const;
export const NODE_FLOOR = 20;
// flock (util-linux) holds the node lock (host/lock.ts): no agent or uninstall without it
export const TOOLS = ['bpftool', 'tc', 'ip', 'clang', 'unshare', 'flock'] as const;
export type Tool = (typeof TOOLS)[number];

/** One program's needs (bpf/requirements.json, checked against the objects by test/unit/requirements.test.ts). */
export interface ProgramNeeds {
  source: string;
  section: string;
  helpers: string[];
  /** Called only in a branch CO-RE removes on kernels that lack what it reads (the verifier never sees it there). */
  optionalHelpers?: string[];
}

export interface DoctorFacts {
  uid: number;
  kernel: string;
  node: string;
  btf: boolean;
  /** /proc/mounts */
  mounts: string;
  /** The bpffs podwarp mounted because the node had none (as root: the agent does the same). */
  bpffsMounted?: string;
  /** Why no bpffs could be mounted. */
  bpffsError?: string;
  /** First line of each tool's version output; undefined: not on PATH. */
  tools: Record<Tool, string | undefined>;
  /** Sources whose objects must be compiled before a load (loader/build.ts staleSources). */
  staleSources: string[];
  /** PODWARP_TOOLCHAIN_IMAGE and a docker CLI: compiling without a local clang. */
  toolchainImage: boolean;
  probe?: KernelProbe;
  probeError?: string;
  tcx: { kernel: boolean; bpftool: boolean };
  /** Checks of the scratch load (undefined: not tried, with the reason). */
  load?: Check[];
  /** The optional parts as the scratch load found them (loader/parts.ts). */
  parts?: Part[];
  loadSkipped?: string;
}

/** Program section (libbpf naming) → bpftool's program type and the attachment podwarp makes. */
export function sectionKind(section: string): { progType: string; attach: string } {
  if (section === 'tc') return { progType: 'sched_cls', attach: 'tc ingress (clsact, cls_bpf direct-action)' };
  if (section === 'sockops') return { progType: 'sock_ops', attach: 'cgroup sock_ops' };
  if (section === 'sk_msg') return { progType: 'sk_msg', attach: 'sk_msg verdict on sockhash' };
  const cg = /^cgroup\/(connect4|sendmsg4|recvmsg4|getpeername4|connect6|recvmsg6|getpeername6|getsockopt)$/.exec(section);
  if (cg) return { progType: cg[1] === 'getsockopt' ? 'cgroup_sockopt' : 'cgroup_sock_addr', attach: `cgroup ${cg[1]}` };
  const fx = /^fexit\/(\w+)$/.exec(section);
  if (fx) return { progType: 'tracing', attach: `fexit ${fx[1]} (pinned link)` };
  const it = /^iter\/(sockmap|bpf_map_elem)$/.exec(section);
  if (it) return { progType: 'tracing', attach: `iter ${it[1]}` };
  throw new Error(`bpf/requirements.json: section "${section}" has no program type here (src/doctor/checks.ts sectionKind)`);
}

export function readNeeds(file = path.join(BPF_SRC, 'requirements.json')): ProgramNeeds[] {
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { programs: ProgramNeeds[] }).programs;
}

const FIX_ROOT = 'run as root (the DaemonSet runs the agent privileged)';

function kernelCheck(release: string): Check {
  const m = /^(\d+)\.(\d+)/.exec(release);
  const ok = !!m && (Number(m[1]) > KERNEL_FLOOR[0] || (Number(m[1]) === KERNEL_FLOOR[0] && Number(m[2]) >= KERNEL_FLOOR[1]));
  return {
    check: 'kernel',
    result: ok ? 'pass' : 'fail',
    detail: `${release}${ok ? '' : ` (below ${KERNEL_FLOOR.join('.')})`}`,
    fix: ok ? '' : `boot a kernel ≥ ${KERNEL_FLOOR.join('.')}`,
  };
}

function cgroupCheck(mounts: string): Check {
  const all = parseMounts(mounts);
  const v2 = all.find((m) => m.fstype === 'cgroup2');
  const v1 = all.filter((m) => m.fstype === 'cgroup');
  if (!v2)
    return {
      check: 'cgroup2 mount',
      result: 'fail',
      detail: `no cgroup2 in /proc/mounts${v1.length ? ' (cgroup v1 only)' : ''}`,
      fix: 'boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) or a hybrid layout; in a pod: the hostPath /sys/fs/cgroup volume',
    };
  return {
    check: 'cgroup2 mount',
    result: 'pass',
    detail: `${v1.length ? `hybrid (${v1.length} v1 hierarchies)` : 'unified'}, cgroup2 at ${v2.target}`,
    fix: '',
  };
}

function toolCheck(f: DoctorFacts, tool: Tool): Check | undefined {
  const v = f.tools[tool];
  const check = tool === 'tc' || tool === 'ip' ? `${tool} (iproute2)` : tool;
  if (v) return { check, result: 'pass', detail: v, fix: '' };
  const apt = {
    bpftool: 'bpftool',
    tc: 'iproute2',
    ip: 'iproute2',
    clang: 'clang llvm libbpf-dev',
    unshare: 'util-linux',
    flock: 'util-linux',
  }[tool];
  if (tool === 'clang') {
    if (f.staleSources.length === 0)
      return {
        check,
        result: 'warn',
        detail: 'not on PATH; the BPF objects are built and up to date',
        fix: `needed only to rebuild them: apt-get install ${apt}`,
      };
    if (f.toolchainImage)
      return {
        check,
        result: 'warn',
        detail: `not on PATH; ${f.staleSources.length} objects will be compiled in PODWARP_TOOLCHAIN_IMAGE`,
        fix: `apt-get install ${apt}`,
      };
    return {
      check,
      result: 'fail',
      detail: `not on PATH, and ${f.staleSources.length} BPF objects must be (re)built: ${f.staleSources.map((s) => path.basename(s)).join(', ')}`,
      fix: `apt-get install ${apt} (or use the podwarp image: its objects are prebuilt)`,
    };
  }
  if (tool === 'unshare')
    return { check, result: 'warn', detail: 'not on PATH: the tc attach probe cannot run', fix: `apt-get install ${apt}` };
  return { check, result: 'fail', detail: 'not on PATH', fix: `apt-get install ${apt}` };
}

function probeChecks(f: DoctorFacts, needs: ProgramNeeds[]): Check[] {
  const p = f.probe;
  if (!p) {
    const why = f.uid !== 0 ? 'needs root' : !f.tools.bpftool ? 'needs bpftool' : (f.probeError ?? 'not run');
    return [
      {
        check: 'kernel feature probe',
        result: f.uid !== 0 || !f.tools.bpftool ? 'skip' : 'fail',
        detail: `not run: ${why}`,
        fix: f.uid !== 0 ? FIX_ROOT : 'see bpftool above',
      },
    ];
  }
  const out: Check[] = [];
  const loaded = f.load?.find((c) => c.check === 'load programs')?.result === 'pass';
  const byType = new Map<string, { sections: Set<string>; helpers: Set<string>; optional: Set<string> }>();
  for (const n of needs) {
    const t = sectionKind(n.section).progType;
    const e = byType.get(t) ?? { sections: new Set(), helpers: new Set(), optional: new Set() };
    e.sections.add(n.section);
    n.helpers.forEach((h) => e.helpers.add(h));
    (n.optionalHelpers ?? []).forEach((h) => e.optional.add(h));
    byType.set(t, e);
  }
  for (const [t, e] of [...byType].sort(([a], [b]) => a.localeCompare(b))) {
    const secs = [...e.sections].join(', ');
    if (t === 'tracing') {
      // bpftool cannot probe tracing programs (they need a BTF attach target): the scratch load decides;
      // every tracing program is an optional part, so a refusal is a warning (the parts' checks say what follows)
      const refused = (f.parts ?? []).filter((x) => x.state === 'refused');
      out.push({
        check: `program type ${t}`,
        result: !loaded ? 'skip' : refused.length ? 'warn' : 'pass',
        detail: !loaded
          ? `${secs}: bpftool cannot probe this type; \`podwarp doctor\` loads them`
          : refused.length
            ? `${secs}: the kernel refused ${refused.flatMap((x) => x.objects).join(', ')} (${[...new Set(refused.map((x) => x.reason?.split(': ')[0]))].join(', ')}); optional, podwarp runs without them (see the parts below)`
            : `${secs}: loaded and run (bpftool cannot probe this type)`,
        fix: refused.length
          ? 'optional: a kernel, LSM policy or lockdown mode that allows BPF tracing programs (fentry/fexit, map iterators)'
          : '',
      });
      continue;
    }
    const have = p.program_types?.[`have_${t}_prog_type`] === true;
    out.push({
      check: `program type ${t}`,
      result: have ? 'pass' : 'fail',
      detail: `${secs}${have ? '' : ': not supported by this kernel'}`,
      fix: have
        ? ''
        : `a kernel with ${t} programs (≥ ${KERNEL_FLOOR.join('.')}, CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF, CONFIG_NET_CLS_BPF)`,
    });
    const avail = new Set(p.helpers?.[`${t}_available_helpers`] ?? []);
    const used = [...e.helpers].sort();
    const missing = used.filter((h) => !avail.has(h));
    const optMissing = [...e.optional].filter((h) => !avail.has(h)).sort();
    const optNote = optMissing.length ? `; optional ${optMissing.join(', ')} not available (its branch is not loaded here)` : '';
    out.push({
      check: `helpers for ${t}`,
      result: missing.length ? 'fail' : 'pass',
      detail: missing.length ? `missing: ${missing.join(', ')}` : `${used.length} used, all available${optNote}`,
      fix: missing.length ? `a kernel ≥ ${KERNEL_FLOOR.join('.')} with these helpers` : '',
    });
    if (t === 'sched_cls')
      out.push({
        check: 'helper bpf_redirect_peer',
        result: avail.has('bpf_redirect_peer') ? 'pass' : 'fail',
        detail: avail.has('bpf_redirect_peer') ? 'sched_cls: available (the same-node fast path)' : 'sched_cls: missing',
        fix: avail.has('bpf_redirect_peer') ? '' : `kernel ≥ ${KERNEL_FLOOR.join('.')}`,
      });
  }
  for (const t of [...new Set(MAPS.map((m) => m.type))].sort()) {
    const have = p.map_types?.[`have_${t}_map_type`] === true;
    const names = MAPS.filter((m) => m.type === t).map((m) => m.name);
    out.push({
      check: `map type ${t}`,
      result: have ? 'pass' : 'fail',
      detail: `${names.join(', ')}${have ? '' : ': not supported by this kernel'}`,
      fix: have ? '' : `a kernel ≥ ${KERNEL_FLOOR.join('.')} (CONFIG_BPF_SYSCALL${t === 'sockhash' ? ', CONFIG_BPF_STREAM_PARSER' : ''})`,
    });
  }
  return out;
}

/** Facts → checks. Pure. */
export function evaluate(f: DoctorFacts, needs: ProgramNeeds[] = readNeeds()): Check[] {
  const out: Check[] = [];
  out.push(
    f.uid === 0
      ? { check: 'privileges', result: 'pass', detail: 'root', fix: '' }
      : {
          check: 'privileges',
          result: 'fail',
          detail: `uid ${f.uid}: loading programs needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN`,
          fix: FIX_ROOT,
        },
  );
  out.push(kernelCheck(f.kernel));
  out.push(
    f.btf
      ? { check: 'BTF', result: 'pass', detail: '/sys/kernel/btf/vmlinux', fix: '' }
      : {
          check: 'BTF',
          result: 'fail',
          detail: 'no /sys/kernel/btf/vmlinux: the drain iterator (CO-RE) cannot load',
          fix: 'a kernel built with CONFIG_DEBUG_INFO_BTF=y',
        },
  );
  const bpffs = findMount('bpf', f.mounts);
  out.push(
    bpffs
      ? {
          check: 'bpffs mount',
          result: 'pass',
          detail: f.bpffsMounted === bpffs ? `${bpffs}: mounted by podwarp (the node had none; left mounted)` : `${bpffs}: present`,
          fix: '',
        }
      : {
          check: 'bpffs mount',
          result: 'fail',
          detail: `no bpf file system in /proc/mounts: pins cannot outlive the agent${f.bpffsError ? ` (${f.bpffsError})` : ''}`,
          fix:
            f.uid === 0
              ? 'mount -t bpf bpf /sys/fs/bpf; in a pod: the DaemonSet hostPath volume /sys/fs/bpf with mountPropagation: Bidirectional'
              : 'run as root: podwarp mounts it at /sys/fs/bpf',
        },
  );
  out.push(cgroupCheck(f.mounts));
  for (const tool of TOOLS) out.push(toolCheck(f, tool)!);
  const nodeMajor = Number(/^v?(\d+)/.exec(f.node)?.[1] ?? 0);
  out.push({
    check: 'node',
    result: nodeMajor >= NODE_FLOOR ? 'pass' : 'fail',
    detail: f.node,
    fix: nodeMajor >= NODE_FLOOR ? '' : `Node.js ≥ ${NODE_FLOOR}`,
  });
  out.push(...probeChecks(f, needs));
  if (f.load) out.push(...f.load);
  else if (f.loadSkipped) out.push({ check: 'load programs', result: 'skip', detail: `not tried: ${f.loadSkipped}`, fix: '' });
  out.push({
    check: 'tcx',
    result: 'info',
    detail: `kernel ${f.tcx.kernel ? 'yes' : 'no'}, bpftool ${f.tcx.bpftool ? 'yes' : 'no'}: podwarp attaches through clsact on every kernel`,
    fix: '',
  });
  return out;
}

export function failed(checks: Check[]): Check[] {
  return checks.filter((c) => c.result === 'fail');
}

/** A part as a check: active or not needed passes, refused warns with what podwarp does instead (the agent runs). */
export function partCheck(p: Part): Check {
  return {
    check: `${isCore(p.part) ? 'feature' : 'optional part'} ${p.part}`,
    result: p.state === 'refused' ? 'warn' : 'pass',
    detail: p.state === 'refused' ? `kernel refused ${p.objects.join(', ')} (${p.reason}): ${p.effect}` : `${p.state}: ${p.effect}`,
    fix: p.state === 'refused' ? 'none needed; to have it: a kernel, LSM policy or lockdown mode that allows this program type' : '',
  };
}

/** The scratch load's findings (loader/probes.ts probeScratchLoad) as checks. */
export function loadChecks(l: ScratchLoad): Check[] {
  if ('refused' in l)
    return [
      {
        check: 'load programs',
        result: 'fail',
        detail: `the kernel refused a core program: ${l.refused}`,
        fix: 'a kernel that loads tc, sock_ops, sk_msg and cgroup sock_addr programs (≥ 5.10); the verifier log: PODWARP_LOG_LEVEL=debug',
      },
    ];
  const out: Check[] = [
    { check: 'load programs', result: 'pass', detail: `${l.programs} programs verified and pinned (scratch)`, fix: '' },
    l.skMsg
      ? { check: 'attach sk_msg verdict on sockhash', result: 'pass', detail: `${MSG_PROG} on pw_sock`, fix: '' }
      : { check: 'attach sk_msg verdict on sockhash', result: 'skip', detail: 'not loaded: the sockmap feature is off (below)', fix: '' },
    { check: 'sockmap flow control', result: 'pass', detail: describeFlowControl(l.flowControl), fix: '' },
    ...l.parts.map(partCheck),
  ];
  const tc = 'attach tc ingress (clsact)';
  out.push(
    !l.tc
      ? { check: tc, result: 'skip', detail: 'needs unshare', fix: '' }
      : l.tc.error
        ? { check: tc, result: 'fail', detail: l.tc.error, fix: 'a kernel with CONFIG_NET_SCH_INGRESS (clsact) and CONFIG_NET_CLS_BPF' }
        : { check: tc, result: 'pass', detail: `${TC_PROG} on a veth in a throwaway netns`, fix: '' },
  );
  const failedHooks = new Set<string>();
  for (const c of l.cgroups.filter((x) => x.error)) {
    failedHooks.add(c.hook);
    out.push({
      check: `attach cgroup ${c.hook}`,
      result: 'fail',
      detail: `${c.prog}: ${c.error}`,
      fix: 'a kernel with CONFIG_CGROUP_BPF and this attach type (≥ 5.10)',
    });
  }
  const byHook = new Map<string, string[]>();
  for (const c of l.cgroups.filter((x) => !x.error)) byHook.set(c.hook, [...(byHook.get(c.hook) ?? []), c.prog]);
  for (const [hook, progs] of byHook)
    if (!failedHooks.has(hook))
      out.push({ check: `attach cgroup ${hook}`, result: 'pass', detail: `${progs.join(', ')} (multi)`, fix: '' });
  if (l.cgroupListing)
    out.push({
      check: 'cgroup program listing',
      result: 'info',
      detail:
        l.cgroupListing === 'query'
          ? '`bpftool cgroup show` (BPF_PROG_QUERY with attach flags)'
          : 'fallback: `bpftool cgroup show … effective` minus the parent (this kernel rejects the attach-flags query, < 6.0)',
      fix: '',
    });
  return out;
}
