// Kernel and tool feature probes. A missing required feature is a
// FeatureMissingError; optional ones choose between code paths.
import os from 'node:os';
import * as bpftool from './bpftool.js';
import { doctor, failed } from './doctor.js';
import { FeatureMissingError } from '../host/errors.js';

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
