// desired(snapshot, node facts) → DesiredState. Pure: no I/O, no clock.
import { CGROUP_HOOKS, CONFIG_FLAGS, EP_FLAGS } from '../../abi/schema.js';
import { ACCELERATE_ANNOTATION, podKey, policySelects, type Pod, type Snapshot } from '../model.js';
import type { NodeFacts } from '../facts/gather.js';

export interface DesiredEndpoint {
  ip: string;
  ifindex: number;
  flags: number;
  mac: string;
  gwMac: string;
  pod: string;
  /** Host side of the pod's veth (where the tc program goes). */
  iface: string;
  /** The pod's cgroup below the cgroup2 mount, when known. */
  cgroup?: string;
}

export type SkipReason = 'host-network' | 'no-ip' | 'no-interface' | 'facts-missing';
/**
 * Why a pod is an endpoint but not accelerated (its traffic takes the normal path):
 * - namespace-off: its namespace lacks podwarp.io/accelerate=true
 * - opted-out: annotation podwarp.io/accelerate: "false"
 * - policy-api-unavailable: a policy API the cluster serves could not be read (discovery, list or watch failing): fail closed
 * - policy-selected: a policy of any served API may select it (NetworkPolicy, AdminNetworkPolicy, Calico, Cilium, Antrea)
 * - bandwidth-shaped: kubernetes.io/ingress-bandwidth or egress-bandwidth (the CNI bandwidth plugin shapes on the host veth)
 * - ambient-mesh: istio.io/dataplane-mode=ambient on the pod or its namespace (ztunnel captures its traffic)
 * - attach-failed / cgroup-attach-failed / endpoint-write-failed: wanted on, but the tc program could not be put on its
 *   host veth, its cgroup hooks could not be attached, or its entry could not be written (set by the apply step, not by
 *   desired(): src/pods/apply.ts, fail closed; retried with backoff)
 */
export type DisableReason =
  'namespace-off' | 'opted-out' | 'policy-api-unavailable' | 'policy-selected' | 'bandwidth-shaped' | 'ambient-mesh' | ApplyFailure;
/** Why the apply step left a pod that desired() enables on the normal path (src/pods/apply.ts). */
export type ApplyFailure = 'attach-failed' | 'cgroup-attach-failed' | 'endpoint-write-failed';
/**
 * An enabled pod given only part of podwarp (its pod↔pod traffic stays accelerated), and why:
 * - mesh-sidecar: it has a sidecar, so the socket LB is off for it: the sidecar routes, applies mTLS and captures
 *   DNS by the ClusterIP the app dialled (as Cilium's socketLB.hostNamespaceOnly); podwarp's sidecar capture is on
 * - istio-annotations: a sidecar pod with Istio capture annotations: neither podwarp's sidecar capture nor the
 *   socket LB; Istio's own iptables capture applies unchanged
 */
export type PartialReason = 'mesh-sidecar' | 'istio-annotations';

export const BANDWIDTH_ANNOTATIONS = ['kubernetes.io/ingress-bandwidth', 'kubernetes.io/egress-bandwidth'];
export const AMBIENT_LABEL = 'istio.io/dataplane-mode';
/** Istio's per-pod capture settings podwarp's sidecar capture does not implement. */
export const ISTIO_CAPTURE_ANNOTATIONS = [
  'traffic.sidecar.istio.io/excludeOutboundPorts',
  'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  'traffic.sidecar.istio.io/includeOutboundIPRanges',
  'traffic.sidecar.istio.io/includeOutboundPorts',
  'traffic.sidecar.istio.io/excludeInboundPorts',
];

/** Istio ambient: the pod's label wins over its namespace's (`none` opts a pod out of an ambient namespace). */
export function isAmbient(pod: Pick<Pod, 'labels'>, nsLabels: Record<string, string> | undefined): boolean {
  const own = pod.labels[AMBIENT_LABEL];
  if (own !== undefined) return own === 'ambient';
  return nsLabels?.[AMBIENT_LABEL] === 'ambient';
}

/** Node-wide settings of the socket programs (pw_config). */
export interface SockConfig {
  flags: number;
  proxyUid: number;
  proxyGid: number;
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
  /** Sidecar proxy gid: connects by a process of this gid are never captured (Istio: 1337, `--gid-owner`). */
  proxyGid?: number;
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
    proxyGid: o.proxyGid ?? 1337,
    proxyPort: o.proxyPort ?? 15001,
    bulkBytes: 0,
    excludedPorts,
    svcDropped: 0,
  };
}

/**
 * pw_config once the services are planned: TC_UDP says the socket LB is on
 * with no Service left out, and the number left out is kept as a gauge.
 * Informational: the tc program decides per flow (pw_udp_ct), and connected
 * UDP is kube-proxy's whatever this flag says (docs/services.md), so it never
 * meant that no UDP flow is NATed.
 */
export function withServiceOutcome(c: SockConfig, opts: DesiredOptions, dropped: number): SockConfig {
  const udp = opts.lb !== false && dropped === 0 ? CONFIG_FLAGS.TC_UDP : 0;
  return { ...c, flags: (c.flags & ~CONFIG_FLAGS.TC_UDP) | udp, svcDropped: dropped };
}

/**
 * What a pass left: `want` with each pod the apply step left off (fail
 * closed) disabled, with its reason, instead of enabled or partial. Pure: a
 * new state, `want` unchanged.
 */
export function withApplyOutcome(want: DesiredState, failed: ReadonlyMap<string, { reason: ApplyFailure }>): DesiredState {
  if (failed.size === 0) return want;
  const endpoints = new Map(want.endpoints);
  const disabled = new Map(want.disabled);
  const partial = new Map(want.partial);
  for (const [pod, f] of failed) {
    disabled.set(pod, f.reason);
    partial.delete(pod);
    for (const [ip, e] of endpoints) if (e.pod === pod) endpoints.set(ip, { ...e, flags: 0 });
  }
  return { ...want, endpoints, disabled, partial };
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
  /** Enabled pods given only part of podwarp (sidecar pods: no socket LB; with Istio annotations: no capture either), and why. */
  partial: Map<string, PartialReason>;
  /** Pod IP → its cgroup, for each pod given the sidecar capture (pw_pod_cgroup: its connects to its own IP are not captured). */
  podCgroups: Map<string, string>;
  /** Pod IP → its cgroup, for each pod given the socket LB (pw_lb_client: the client address sessionAffinity keys by). */
  lbClients: Map<string, string>;
  /** Namespaces with acceleration on. */
  enabledNamespaces: string[];
  /** Pod cgroup (below the cgroup2 mount) → PW_HOOK_* bits to attach. */
  cgroups: Map<string, number>;
  config: SockConfig;
}

export function desired(snap: Snapshot, facts: NodeFacts, opts: DesiredOptions = DEFAULT_OPTIONS): DesiredState {
  const nsOn = new Set(snap.namespaces.filter((n) => n.accelerate).map((n) => n.name));
  const nsLabels = new Map(snap.namespaces.map((n) => [n.name, n.labels]));
  const out: DesiredState = {
    endpoints: new Map(),
    attach: new Map(),
    skipped: new Map(),
    disabled: new Map(),
    partial: new Map(),
    podCgroups: new Map(),
    lbClients: new Map(),
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
    // a pod known by UID only is found by the node (src/facts/gather.ts); one with neither cannot be
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
    else if (snap.policyGaps?.length) why = 'policy-api-unavailable';
    else if (snap.networkPolicies.some((np) => policySelects(np, p, nsLabels.get(p.namespace)))) why = 'policy-selected';
    else if (BANDWIDTH_ANNOTATIONS.some((a) => Object.hasOwn(p.annotations, a))) why = 'bandwidth-shaped';
    else if (isAmbient(p, nsLabels.get(p.namespace))) why = 'ambient-mesh';
    if (why) out.disabled.set(k, why);
    const meshed = !why && p.sidecar;
    const withhold = meshed && ISTIO_CAPTURE_ANNOTATIONS.some((a) => Object.hasOwn(p.annotations, a));
    if (meshed) out.partial.set(k, withhold ? 'istio-annotations' : 'mesh-sidecar');
    const iface = p.hostInterface || f.hostInterface;
    const cgroup = p.cgroup || f.cgroup;
    out.endpoints.set(p.ip, {
      ip: p.ip,
      ifindex: f.ifindex,
      flags: why ? 0 : EP_FLAGS.ENABLED,
      mac: f.mac,
      gwMac: f.gwMac,
      pod: k,
      iface,
      ...(cgroup ? { cgroup } : {}),
    });
    out.attach.set(iface, f.ifindex);
    if (!why && cgroup && (opts.sockmap || opts.lb !== false)) {
      const sidecar = meshed && !withhold ? CGROUP_HOOKS.CONNECT4 | CGROUP_HOOKS.GETSOCKOPT : 0;
      const sock = opts.sockmap ? CGROUP_HOOKS.SOCK_OPS | sidecar : 0;
      // never the socket LB in a meshed pod: its sidecar (or Istio's iptables and DNS capture) must see the
      // destination the app dialled (a ClusterIP stays a ClusterIP), whatever else applies
      const hooks = sock | (opts.lb === false || meshed ? 0 : CGROUP_HOOKS.LB);
      if (hooks) out.cgroups.set(cgroup, hooks);
      if (hooks & CGROUP_HOOKS.CONNECT4) out.podCgroups.set(p.ip, cgroup);
      if (hooks & CGROUP_HOOKS.LB) out.lbClients.set(p.ip, cgroup);
    }
  }
  return out;
}
