// Kernel and tool feature probes. A missing required feature is a
// FeatureMissingError; optional ones choose between code paths.
import os from 'node:os';
import * as bpftool from './bpftool.js';
import { FeatureMissingError } from './errors.js';

export interface Features {
  kernel: string;
  redirectPeer: boolean;
  /** The kernel has tcx (6.6+). */
  tcxKernel: boolean;
  /** bpftool can attach tcx (7.3+). */
  tcxBpftool: boolean;
  /** What podwarp uses to attach tc programs. */
  tcAttach: 'tcx' | 'clsact';
}

export function kernelAtLeast(release: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

export async function probe(): Promise<Features> {
  const k = await bpftool.featureProbeKernel();
  const redirectPeer = (k.helpers.sched_cls_available_helpers ?? []).includes('bpf_redirect_peer');
  const tcxKernel = kernelAtLeast(os.release(), 6, 6);
  const tcxBpftool = await bpftool.bpftoolSupportsTcx();
  // tcx attachment needs both; until then clsact + cls_bpf, the 5.10 path (see README "Limits")
  return { kernel: os.release(), redirectPeer, tcxKernel, tcxBpftool, tcAttach: 'clsact' };
}

export async function requireDatapathFeatures(): Promise<Features> {
  const f = await probe();
  if (!f.redirectPeer)
    throw new FeatureMissingError('bpf_redirect_peer', `kernel ${f.kernel} has no bpf_redirect_peer for tc programs (needs 5.10+)`);
  return f;
}
