// What the doctor checks, probed on this node: files, tool versions (host/),
// the kernel's feature probe and, for `podwarp doctor`, a scratch load of the
// real objects (loader/probes.ts). src/doctor/checks.ts judges the result.
import fs from 'node:fs';
import os from 'node:os';
import { errorMessage, FeatureMissingError } from '../../host/errors.js';
import { bpffsMountedByPodwarp, ensureBpffs, findMount, reachableMounts } from '../../host/mounts.js';
import { onPath, toolVersion } from '../../host/tools.js';
import { staleSources } from '../../loader/build.js';
import { probe, type Features } from '../../loader/features.js';
import { probeKernelFeatures, probeScratchLoad, probeTcx } from '../../loader/probes.js';
import { evaluate, failed, loadChecks, TOOLS, type Check, type DoctorFacts, type Tool } from './checks.js';

/** The node's facts for the doctor; `load` adds the scratch load (root, bpffs, bpftool needed). */
export async function probeNode(opts: { load: boolean }): Promise<DoctorFacts> {
  const tools = Object.fromEntries(await Promise.all(TOOLS.map(async (t) => [t, await toolVersion(t)] as const))) as Record<
    Tool,
    string | undefined
  >;
  const uid = process.getuid?.() ?? -1;
  let bpffsMounted: string | undefined;
  let bpffsError: string | undefined;
  if (uid === 0 && !findMount('bpf')) {
    // as the agent does: a node without a bpffs gets one
    try {
      await ensureBpffs();
      bpffsMounted = bpffsMountedByPodwarp();
    } catch (e) {
      bpffsError = errorMessage(e);
    }
  } else bpffsMounted = bpffsMountedByPodwarp();
  const mounts = reachableMounts(); // /proc/mounts without hidden mounts
  const f: DoctorFacts = {
    uid,
    kernel: os.release(),
    node: process.version,
    btf: fs.existsSync('/sys/kernel/btf/vmlinux'),
    mounts,
    bpffsMounted,
    bpffsError,
    tools,
    staleSources: staleSources(),
    toolchainImage: !!process.env.PODWARP_TOOLCHAIN_IMAGE && (await onPath('docker')),
    tcx: await probeTcx(!!tools.bpftool),
  };
  if (uid === 0 && tools.bpftool) {
    try {
      f.probe = await probeKernelFeatures();
    } catch (e) {
      f.probeError = errorMessage(e);
    }
  }
  if (opts.load) {
    const bpffs = findMount('bpf', mounts);
    const cg2 = findMount('cgroup2', mounts);
    const missing = [uid !== 0 && 'root', !tools.bpftool && 'bpftool', !tools.tc && 'tc', !bpffs && 'bpffs', !cg2 && 'cgroup2'].filter(
      Boolean,
    );
    if (missing.length) f.loadSkipped = `needs ${missing.join(', ')}`;
    else if (f.staleSources.length && !tools.clang && !f.toolchainImage) f.loadSkipped = 'the BPF objects must be built first (clang)';
    else {
      const r = await probeScratchLoad(cg2!, !!tools.unshare);
      f.load = loadChecks(r);
      if (!('refused' in r)) f.parts = r.parts;
    }
  }
  return f;
}

/** The checks, with the scratch load when `load`. */
export async function doctor(opts: { load: boolean }): Promise<Check[]> {
  return evaluate(await probeNode(opts));
}

/**
 * The agent's start-up check: `podwarp doctor`'s checks without the scratch
 * load (the agent's own load follows). Every failed check in one line.
 */
export async function requireDatapathFeatures(): Promise<Features> {
  const bad = failed(await doctor({ load: false }));
  if (bad.length)
    throw new FeatureMissingError(
      bad.map((c) => c.check).join(', '),
      `${bad.map((c) => `${c.check}: ${c.detail}`).join('; ')} (run \`podwarp doctor\` for every check and its fix)`,
    );
  return probe();
}
