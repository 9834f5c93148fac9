// Kernel and tool feature probes. A missing required feature is a
// FeatureMissingError; optional ones choose between code paths.
import os from 'node:os';
import * as bpftool from './bpftool.js';
import { FeatureMissingError } from './errors.js';

export interface Features {
  kernel: string;
  redirectPeer: boolean;
  /**
   * How podwarp attaches its tc program: clsact + cls_bpf on every kernel
   * (the 5.10 path). tcx links (6.6+) are not used (README "Limits").
   */
  tcAttach: 'clsact';
}

export async function probe(): Promise<Features> {
  const k = await bpftool.featureProbeKernel();
  const redirectPeer = (k.helpers.sched_cls_available_helpers ?? []).includes('bpf_redirect_peer');
  return { kernel: os.release(), redirectPeer, tcAttach: 'clsact' };
}

export async function requireDatapathFeatures(): Promise<Features> {
  const f = await probe();
  if (!f.redirectPeer)
    throw new FeatureMissingError('bpf_redirect_peer', `kernel ${f.kernel} has no bpf_redirect_peer for tc programs (needs 5.10+)`);
  return f;
}
