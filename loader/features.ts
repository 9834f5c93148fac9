// The kernel features that choose between code paths (the prerequisites
// themselves are the doctor's: src/doctor/).
import os from 'node:os';
import * as bpftool from './bpftool.js';

export interface Features {
  kernel: string;
  redirectPeer: boolean;
  /**
   * How podwarp attaches its tc program: clsact + cls_bpf on every kernel
   * (the 5.10 path). tcx links (6.6+) are not used (docs/design-decisions.md, "tc attachment").
   */
  tcAttach: 'clsact';
}

export async function probe(): Promise<Features> {
  const k = await bpftool.featureProbeKernel();
  const redirectPeer = (k.helpers.sched_cls_available_helpers ?? []).includes('bpf_redirect_peer');
  return { kernel: os.release(), redirectPeer, tcAttach: 'clsact' };
}
