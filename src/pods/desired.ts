// desired(snapshot, node facts) → DesiredState. Pure: no I/O, no clock.
import { CGROUP_HOOKS, CONFIG_FLAGS, EP_FLAGS } from '../../abi/schema.js';
import { ACCELERATE_ANNOTATION, podKey, selects, type Snapshot } from '../model.js';
import type { NodeFacts } from '../facts.js';

export interface DesiredEndpoint {
  ip: string;
  ifindex: number;
  flags: number;
  mac: string;
  gwMac: string;
  pod: string;
}

export type SkipReason = 'host-network' | 'no-ip' | 'no-interface' | 'facts-missing';
export type DisableReason = 'namespace-off' | 'opted-out' | 'policy-selected';

/** Node-wide settings of the socket programs (pw_config). */
export interface SockConfig {
  flags: number;
  proxyUid: number;
  proxyPort: number;
  bulkBytes: number;
  excludedPorts: number[];
  /** Services left out whole for want of map space (a gauge the agent keeps in pw_config). */
  svcDropped: number;
}

export interface DesiredOptions {
  /** Socket acceleration (sockops/sk_msg) for enabled pods. */
  sockmap: boolean;
  /** Sidecar proxy uid: its own connects are never captured (Istio: 1337). */
  proxyUid?: number;
  /** Sidecar outbound port (Istio: 15001). */
  proxyPort?: number;
  /** Outbound destination ports never sent to the sidecar (at most 8). */
  excludedPorts?: number[];
  /** Service load balancing at the socket for enabled pods (default on). */
  lb?: boolean;
}

export const DEFAULT_OPTIONS: DesiredOptions = { sockmap: true };

export function sockConfig(o: DesiredOptions): SockConfig {
  const excludedPorts = [...new Set(o.excludedPorts ?? [])].sort((a, b) => a - b);
  if (excludedPorts.length > 8) throw new Error(`at most 8 excluded outbound ports (got ${excludedPorts.length})`);
  return {
    flags: o.sockmap ? CONFIG_FLAGS.SOCKMAP_ON : 0,
    proxyUid: o.proxyUid ?? 1337,
    proxyPort: o.proxyPort ?? 15001,
    bulkBytes: 0,
    excludedPorts,
    svcDropped: 0,
  };
}

/**
 * pw_config once the services are planned: UDP may skip the host only while
 * every service is resolved at connect() (socket LB on, none left out), and
 * the number left out is kept as a gauge.
 */
export function withServiceOutcome(c: SockConfig, opts: DesiredOptions, dropped: number): SockConfig {
  const udp = opts.lb !== false && dropped === 0 ? CONFIG_FLAGS.TC_UDP : 0;
  return { ...c, flags: (c.flags & ~CONFIG_FLAGS.TC_UDP) | udp, svcDropped: dropped };
}

export interface DesiredState {
  /** By pod IP. */
  endpoints: Map<string, DesiredEndpoint>;
  /** Host interfaces to attach the tc program to, by name → ifindex. */
  attach: Map<string, number>;
  /** Pods that are not endpoints at all. */
  skipped: Map<string, SkipReason>;
  /** Endpoints present but not enabled, and why. */
  disabled: Map<string, DisableReason>;
  /** Namespaces with acceleration on. */
  enabledNamespaces: string[];
  /** Pod cgroup (below the cgroup2 mount) → PW_HOOK_* bits to attach. */
  cgroups: Map<string, number>;
  config: SockConfig;
}

export function desired(snap: Snapshot, facts: NodeFacts, opts: DesiredOptions = DEFAULT_OPTIONS): DesiredState {
  const nsOn = new Set(snap.namespaces.filter((n) => n.accelerate).map((n) => n.name));
  const out: DesiredState = {
    endpoints: new Map(),
    attach: new Map(),
    skipped: new Map(),
    disabled: new Map(),
    enabledNamespaces: [...nsOn].sort(),
    cgroups: new Map(),
    config: sockConfig(opts),
  };
  for (const p of snap.pods) {
    const k = podKey(p);
    if (p.hostNetwork) {
      out.skipped.set(k, 'host-network');
      continue;
    }
    if (!p.ip) {
      out.skipped.set(k, 'no-ip');
      continue;
    }
    const f = facts.pods.get(k);
    // a pod known by UID only is found by the node (facts.ts); one with neither cannot be
    if (!p.hostInterface && !p.uid && !f) {
      out.skipped.set(k, 'no-interface');
      continue;
    }
    if (!f) {
      out.skipped.set(k, 'facts-missing');
      continue;
    }
    let why: DisableReason | undefined;
    if (!nsOn.has(p.namespace)) why = 'namespace-off';
    else if (p.annotations[ACCELERATE_ANNOTATION] === 'false') why = 'opted-out';
    else if (snap.networkPolicies.some((np) => np.namespace === p.namespace && selects(np, p.labels))) why = 'policy-selected';
    if (why) out.disabled.set(k, why);
    out.endpoints.set(p.ip, { ip: p.ip, ifindex: f.ifindex, flags: why ? 0 : EP_FLAGS.ENABLED, mac: f.mac, gwMac: f.gwMac, pod: k });
    out.attach.set(p.hostInterface || f.hostInterface, f.ifindex);
    const cgroup = p.cgroup || f.cgroup;
    if (!why && cgroup && (opts.sockmap || opts.lb !== false)) {
      const sidecar = p.sidecar ? CGROUP_HOOKS.CONNECT4 | CGROUP_HOOKS.GETSOCKOPT : 0;
      const sock = opts.sockmap ? CGROUP_HOOKS.SOCK_OPS | sidecar : 0;
      out.cgroups.set(cgroup, sock | (opts.lb === false ? 0 : CGROUP_HOOKS.LB));
    }
  }
  return out;
}
