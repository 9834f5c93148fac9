// What `podwarp doctor` asks of the kernel's BPF objects: the feature probe,
// tcx, and a scratch load of the real objects attached to throwaway targets.
// Each probe returns what it found; the verdicts (pass, warn, fail and how to
// fix) are the doctor's (src/doctor/checks.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errorMessage } from '../host/errors.js';
import { run } from '../host/exec.js';
import { findFilter, type TcFilter } from '../host/tc.js';
import * as bpftool from './bpftool.js';
import { build } from './build.js';
import { HOOK_PROGS } from './cgroupattach.js';
import { Datapath } from './datapath.js';
import type { FlowControl } from './flowcontrol.js';
import { kernelReason, refusedPart, type Part } from './parts.js';
import { MSG_PROG, TC_PROG } from './pins.js';
import { TC_HANDLE, TC_PRIO } from './tcattach.js';

/** What `bpftool feature probe kernel -j` says (the parts the doctor reads). */
export type KernelProbe = bpftool.KernelFeatures;

/** Program types, map types and helpers the running kernel offers. */
export function probeKernelFeatures(): Promise<KernelProbe> {
  return bpftool.featureProbeRaw();
}

/** Whether the kernel (its symbols; names are readable even with kptr_restrict) and bpftool know tcx. */
export async function probeTcx(hasBpftool: boolean): Promise<{ kernel: boolean; bpftool: boolean }> {
  let kernel = false;
  try {
    kernel = /^[0-9a-f]+ [Tt] tcx_link_attach$/m.test(fs.readFileSync('/proc/kallsyms', 'utf8'));
  } catch {
    kernel = false;
  }
  return { kernel, bpftool: hasBpftool && (await bpftool.knowsTcx()) };
}

/** The scratch load: refused (a core program; nothing else was tried), or what each step found. */
export type ScratchLoad =
  | { refused: string }
  | {
      /** Programs the verifier passed and the load pinned. */
      programs: number;
      /** pw_sk_msg attached to pw_sock (false: the sockmap feature is off). */
      skMsg: boolean;
      flowControl: FlowControl;
      /** The parts as loaded, an iterator that pinned but failed to run marked refused. */
      parts: Part[];
      /** The tc attach in a throwaway netns (undefined: not tried, no unshare); error when it failed. */
      tc?: { error?: string };
      /** Each cgroup program of a loaded feature attached to a scratch cgroup, listed and detached; error when a step failed. */
      cgroups: { hook: string; prog: string; error?: string }[];
      /** How bpftool lists a cgroup's programs on this kernel (kernels < 6.0 reject the attach-flags query). */
      cgroupListing?: bpftool.CgroupListing;
    };

/**
 * Loads the real objects into a scratch pin directory (the verifier checks
 * every program type, map type and helper), runs the iterators, attaches the
 * tc program to a veth in a throwaway network namespace and every
 * cgroup program to an empty scratch cgroup, then removes all of it.
 */
export async function probeScratchLoad(cg2: string, haveUnshare: boolean): Promise<ScratchLoad> {
  const id = `${process.pid}_${crypto.randomBytes(3).toString('hex')}`;
  const dp = await Datapath.open(`pwdoctor_${id}`);
  const cgDir = path.join(cg2, `podwarp-doctor-${id}`);
  try {
    const objs = await build();
    try {
      await dp.load(objs);
    } catch (e) {
      return { refused: kernelReason(e) };
    }
    const iters = fs.existsSync(dp.pins.iterDir) ? fs.readdirSync(dp.pins.iterDir).sort() : [];
    for (const it of iters) {
      try {
        fs.readFileSync(dp.pins.iter(it));
      } catch (e) {
        // pinned but failing to run: the part cannot be used (the loader would fall back the same way)
        const p = dp.parts.find((x) => x.objects.includes(`${it}_iter.o`));
        if (p) Object.assign(p, refusedPart(p.part, p.objects, `running ${it}_iter: ${kernelReason(e)}`));
      }
    }
    const tc = haveUnshare ? await probeTcAttach(dp.pins.prog(TC_PROG)) : undefined;
    fs.mkdirSync(cgDir);
    const cgroups: { hook: string; prog: string; error?: string }[] = [];
    // a program of a feature the kernel refused is not pinned: its attach is not tried (the feature's row says why)
    for (const [hook, , prog] of HOOK_PROGS.filter(([, , p]) => dp.pins.hasProg(p))) {
      try {
        await bpftool.cgroupAttach(cgDir, hook, dp.pins.prog(prog));
        const progId = await dp.maps.progId(prog);
        const shown = (await bpftool.cgroupShow(cgDir)).some((p) => p.id === progId && p.attach_type === bpftool.CGROUP_ATTACH[hook].shown);
        await bpftool.cgroupDetach(cgDir, hook, progId);
        if (!shown) throw new Error(`${prog} attached but not listed on the cgroup`);
        cgroups.push({ hook, prog });
      } catch (e) {
        cgroups.push({ hook, prog, error: errorMessage(e) });
      }
    }
    return {
      programs: dp.pins.progs().length,
      skMsg: dp.pins.hasProg(MSG_PROG),
      flowControl: dp.flowControl,
      parts: dp.parts,
      tc,
      cgroups,
      cgroupListing: bpftool.cgroupListingPath(),
    };
  } finally {
    if (fs.existsSync(cgDir)) fs.rmdirSync(cgDir);
    await dp.uninstall({ force: true, drainTimeoutMs: 0 });
  }
}

/** tc clsact + cls_bpf direct-action on a veth, in a network namespace that dies with the command. */
async function probeTcAttach(progPin: string): Promise<{ error?: string }> {
  const script = [
    // a veth pair: the dummy driver is a module some kernels lack
    'ip link add pwdoc0 type veth peer name pwdoc1',
    'tc qdisc add dev pwdoc0 clsact',
    `tc filter add dev pwdoc0 ingress protocol all prio ${TC_PRIO} handle 0x${TC_HANDLE.toString(16)} bpf object-pinned "$1" direct-action`,
    'tc -j filter show dev pwdoc0 ingress',
  ].join(' && ');
  try {
    const r = await run('probe tc attach', ['unshare', '--net', 'sh', '-c', script, 'sh', progPin]);
    const f = findFilter(JSON.parse(r.stdout) as TcFilter[], TC_PRIO, TC_HANDLE);
    if (!f?.options?.['direct-action']) throw new Error(`filter not listed as bpf direct-action: ${r.stdout.slice(0, 200)}`);
    return {};
  } catch (e) {
    return { error: errorMessage(e) };
  }
}
