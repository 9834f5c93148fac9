// Services → the frontends and backends podwarp load-balances at connect():
// pure, from the snapshot's Services and EndpointSlices.
import { PROTO } from '../../abi/schema.js';
import type { Service, ServiceEndpoint, Snapshot } from '../model.js';

export type Proto = (typeof PROTO)[keyof typeof PROTO];

export interface Frontend {
  ip: string;
  port: number;
  proto: Proto;
}

export interface BackendAddr {
  ip: string;
  port: number;
  proto: Proto;
}

/**
 * Why a frontend has no backend in pw_svc (count 0), so connect() leaves it
 * to kube-proxy's rules (or, for ipMode Proxy, to the network), which give the
 * client what it gets without podwarp:
 * - no_endpoints: no ready or serving-terminating endpoint → REJECT (refused)
 * - no_local_endpoints: internalTrafficPolicy Local and none on this node, while
 *   the Service has endpoints elsewhere → DROP (the connect times out)
 * - external_masquerade: an external IP or LoadBalancer IP of a Service with
 *   externalTrafficPolicy Cluster: kube-proxy masquerades that traffic, pods'
 *   too (the backend sees the node's address), which a connect()-time
 *   translation cannot do
 * - ip_mode_proxy: a LoadBalancer ingress with `ipMode: Proxy` (KEP-1860):
 *   kube-proxy does not short-circuit it, the traffic goes to the load balancer
 * - source_ranges: a LoadBalancer IP of a Service with loadBalancerSourceRanges:
 *   kube-proxy's firewall decides by the client's address
 * - masquerade_all: this node's kube-proxy runs with `masqueradeAll`, so it
 *   masquerades every connection to a Service (the backend sees the node's
 *   address); every frontend is left to it (src/sources/kube-proxy-config.ts)
 * - udp_affinity: a UDP port with sessionAffinity ClientIP. kube-proxy keeps
 *   one memory per client for it, shared by connected and unconnected
 *   sockets; podwarp leaves connected UDP to kube-proxy (its conntrack
 *   cleanup), so translating the unconnected datagrams would keep a second
 *   memory that can choose another backend for the same client. The whole
 *   port is left to kube-proxy: one memory, kube-proxy's.
 */
export type LeftReason =
  'no_endpoints' | 'no_local_endpoints' | 'external_masquerade' | 'ip_mode_proxy' | 'source_ranges' | 'masquerade_all' | 'udp_affinity';
export const LEFT_REASONS: LeftReason[] = [
  'no_endpoints',
  'no_local_endpoints',
  'external_masquerade',
  'ip_mode_proxy',
  'source_ranges',
  'masquerade_all',
  'udp_affinity',
];

/** Which address of the Service a frontend is: the ClusterIP, one of `spec.externalIPs`, one of `status.loadBalancer.ingress[].ip`. */
export type FrontendKind = 'cluster' | 'external_ip' | 'lb_ingress';
export const FRONTEND_KINDS: FrontendKind[] = ['cluster', 'external_ip', 'lb_ingress'];

export interface DesiredService {
  fe: Frontend;
  /** "namespace/name:port-name" for humans */
  name: string;
  kind: FrontendKind;
  backends: BackendAddr[];
  /** Set when backends is empty: why the frontend is left to kube-proxy. */
  left?: LeftReason;
  /** sessionAffinity ClientIP: its timeout in seconds (unset: None). */
  affinity?: number;
  /**
   * UDP frontends: the IPs of the Service port's serving endpoints (servingIPs),
   * sorted: a remembered unconnected UDP flow stays on its backend while it is
   * one of them (pw_udp_serve).
   */
  serving?: string[];
}

/** What the endpoint choice needs to know about this node. */
export interface NodeTopology {
  name?: string;
  /** the node's `topology.kubernetes.io/zone` label */
  zone?: string;
  /** this node's kube-proxy masquerades all Service traffic (`masqueradeAll`): every frontend is left to it */
  masqueradeAll?: boolean;
}

/**
 * The endpoints kube-proxy (iptables/nftables mode, pkg/proxy/topology.go)
 * sends this node's new connections to, for one service port (its endpoints
 * as portEndpoints gives them):
 * - Cluster policy: the ready endpoints, narrowed by topology hints when every
 *   ready endpoint carries one and some hint names this node (forNodes,
 *   PreferSameNode) or this node's zone (forZones, PreferClose / topology-mode
 *   Auto); else all ready ones. None ready → the serving-and-terminating ones
 *   (KEP-1669), without topology.
 * - Local policy (internalTrafficPolicy): the ready endpoints on this node,
 *   else this node's serving-and-terminating ones; none → empty, and
 *   `left` says whether the service port has endpoints elsewhere (kube-proxy
 *   drops) or none at all (kube-proxy rejects).
 * Ready means `ready` (unset = ready), whatever `terminating` says: the
 * EndpointSlice controller sets ready on terminating pods only for
 * publishNotReadyAddresses Services, and kube-proxy uses them then.
 */
export function usableEndpoints<E extends ServiceEndpoint>(
  svc: { endpoints: E[]; internalTrafficPolicy?: Service['internalTrafficPolicy'] },
  node: NodeTopology,
): { endpoints: E[]; left?: LeftReason } {
  const eps = svc.endpoints;
  const ready = (e: E) => e.ready;
  const fallback = (e: E) => !e.ready && e.serving !== false && e.terminating;
  const usable = (e: E) => ready(e) || fallback(e);
  if (svc.internalTrafficPolicy === 'Local') {
    const local = (e: E) => node.name !== undefined && e.nodeName === node.name;
    let endpoints = eps.filter((e) => local(e) && ready(e));
    if (!endpoints.length) endpoints = eps.filter((e) => local(e) && fallback(e));
    if (endpoints.length) return { endpoints };
    return { endpoints, left: eps.some(usable) ? 'no_local_endpoints' : 'no_endpoints' };
  }
  const readyEps = eps.filter(ready);
  if (readyEps.length) return { endpoints: narrowByHints(readyEps, node) };
  const endpoints = eps.filter(fallback);
  return endpoints.length ? { endpoints } : { endpoints, left: 'no_endpoints' };
}

/** An endpoint of one service port: the endpoint with the port number of its slice's matching port. */
export type PortEndpoint = ServiceEndpoint & { port: number };

/**
 * The endpoints of one service port, as kube-proxy's EndpointSliceCache
 * (pkg/proxy/endpointslicecache.go) builds them before any readiness or
 * topology choice:
 * - an endpoint belongs to the service port only through a port of its
 *   EndpointSlice with the same name (unset = "") and protocol; its number is
 *   that slice port's. No such port (a slice with `ports: []`, a null port,
 *   another name): not an endpoint of this service port (`unmatched`), whatever
 *   `targetPort` says. A service port without any endpoint is rejected by
 *   kube-proxy.
 * - one address and port listed twice (in two slices during a rollout, or a
 *   pod IP reused before the terminating pod is gone) is one endpoint: a
 *   copy that is not terminating replaces an earlier one, a terminating copy
 *   never replaces one already there. So the running pod's copy wins over the
 *   terminating pod's, whatever their order; between two copies of the same
 *   terminating state the result is kube-proxy's slice iteration order
 *   (undefined there), and podwarp's is the list order: the last
 *   non-terminating copy, or the first terminating one.
 */
export function portEndpoints(
  endpoints: ServiceEndpoint[],
  sp: Pick<Service['ports'][number], 'name' | 'protocol'>,
): { endpoints: PortEndpoint[]; unmatched: ServiceEndpoint[] } {
  const byAddr = new Map<string, PortEndpoint>();
  const unmatched: ServiceEndpoint[] = [];
  for (const e of endpoints) {
    const p = e.ports.find((q) => (q.name ?? '') === (sp.name ?? '') && q.protocol === sp.protocol);
    if (!p) {
      unmatched.push(e);
      continue;
    }
    const key = `${e.ip}:${p.port}`;
    if (!byAddr.has(key) || !e.terminating) byAddr.set(key, { ...e, port: p.port });
  }
  return { endpoints: [...byAddr.values()], unmatched };
}

/** kube-proxy's topology mode from the hints of the ready endpoints: node hints first, then zone hints, else no narrowing. */
function narrowByHints<E extends ServiceEndpoint>(ready: E[], node: NodeTopology): E[] {
  const by = (hints: (e: E) => string[] | undefined, want: string | undefined) => {
    if (!want || !ready.every((e) => hints(e)?.length)) return undefined;
    const close = ready.filter((e) => hints(e)!.includes(want));
    return close.length ? close : undefined;
  };
  return by((e) => e.forNodes, node.name) ?? by((e) => e.forZones, node.zone) ?? ready;
}

/**
 * The endpoint IPs kube-proxy's conntrack cleanup keeps UDP flows of a
 * Service port to (pkg/proxy/conntrack/cleanup.go, CleanStaleEntries): every
 * endpoint of the port whose `serving` condition holds (unset: true), on any
 * node, whatever topology hints, traffic policy, readiness of the others or
 * `terminating` say ("changes to the service should not affect existing
 * flows"). By IP alone, as the cleanup matches the reply source. Sorted,
 * without duplicates; the port's endpoints as portEndpoints gives them (the
 * slice port of its name and protocol, one copy per address).
 */
export function servingIPs(svc: Service, sp: Service['ports'][number]): string[] {
  return servingOf(portEndpoints(svc.endpoints, sp).endpoints);
}

/** servingIPs of a port's endpoints (portEndpoints). */
function servingOf(endpoints: PortEndpoint[]): string[] {
  const ips = new Set<string>();
  for (const e of endpoints) if (e.serving !== false) ips.add(e.ip);
  return [...ips].sort((a, b) => ipNum(a) - ipNum(b));
}

const ipNum = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);

export const feKey = (f: Frontend): string => `${f.ip}:${f.port}/${f.proto}`;
/**
 * A backend address as one number (IPv4 · port · TCP/UDP, 49 bits): map keys
 * for 100,000 backends cost a fraction of what string keys do.
 */
export const beKey = (b: BackendAddr): number => ipNum(b.ip) * 131072 + b.port * 2 + (b.proto === PROTO.UDP ? 1 : 0);

const cmpAddr = (a: BackendAddr, b: BackendAddr) => ipNum(a.ip) - ipNum(b.ip) || a.port - b.port || a.proto - b.proto;

/**
 * The addresses of a Service podwarp makes frontends of, each with its kind
 * and, for an external one kube-proxy's rules handle in a way connect() cannot
 * reproduce, the reason it is left (kube-proxy, pkg/proxy/serviceport.go and
 * iptables/nftables proxier.go):
 * - the ClusterIP;
 * - each IPv4 `spec.externalIPs` and each IPv4 `status.loadBalancer.ingress[].ip`
 *   (ipMode VIP or unset; Proxy: left, kube-proxy leaves it to the load
 *   balancer). A pod's connection to one is short-circuited to the Service's
 *   endpoints, but only externalTrafficPolicy Local keeps the pod's address
 *   ("pod traffic for … external destinations" jumps straight to the Cluster
 *   policy chain); Cluster masquerades it (left). A LoadBalancer IP with
 *   loadBalancerSourceRanges goes through kube-proxy's firewall (left).
 * An address listed twice is one frontend: the first kind wins (ClusterIP,
 * externalIPs, then ingress).
 */
export function serviceAddresses(
  svc: Pick<Service, 'clusterIP' | 'externalIPs' | 'loadBalancerIngress' | 'externalTrafficPolicy' | 'loadBalancerSourceRanges'>,
): { ip: string; kind: FrontendKind; left?: LeftReason }[] {
  const out: { ip: string; kind: FrontendKind; left?: LeftReason }[] = [{ ip: svc.clusterIP, kind: 'cluster' }];
  const seen = new Set([svc.clusterIP]);
  const external = (): LeftReason | undefined => (svc.externalTrafficPolicy === 'Local' ? undefined : 'external_masquerade');
  for (const ip of svc.externalIPs ?? []) {
    if (seen.has(ip)) continue;
    seen.add(ip);
    const left = external();
    out.push(left ? { ip, kind: 'external_ip', left } : { ip, kind: 'external_ip' });
  }
  for (const ing of svc.loadBalancerIngress ?? []) {
    if (seen.has(ing.ip)) continue;
    seen.add(ing.ip);
    const left =
      ing.ipMode === 'Proxy' ? 'ip_mode_proxy' : (external() ?? (svc.loadBalancerSourceRanges?.length ? 'source_ranges' : undefined));
    out.push(left ? { ip: ing.ip, kind: 'lb_ingress', left } : { ip: ing.ip, kind: 'lb_ingress' });
  }
  return out;
}

/** The pw_svc keys of a Service: every address (serviceAddresses) × port. */
export function frontendKeys(svc: Service): string[] {
  return serviceAddresses(svc).flatMap((a) => svc.ports.map((sp) => feKey({ ip: a.ip, port: sp.port, proto: PROTO[sp.protocol] })));
}

/** Why an endpoint is reported in `unresolved`: kube-proxy sends it nothing for that service port either. */
export const UNMATCHED_PORT = "its EndpointSlice has no port of the service port's name and protocol: not an endpoint of that port";

/**
 * The usable endpoints of every frontend, per service port: its endpoints
 * (portEndpoints: through the EndpointSlice port of the same name and
 * protocol, duplicates resolved as kube-proxy does), then usableEndpoints:
 * the ClusterIP's by the Service's internalTrafficPolicy; an external IP's or
 * LoadBalancer IP's (a pod dialling it, externalTrafficPolicy Local) by the
 * Cluster policy whatever either traffic policy says, as kube-proxy's
 * short-circuit does (pkg/proxy/topology.go computes the Cluster endpoints
 * for any externally accessible Service for that). A frontend with no usable
 * endpoint is left with no_endpoints (kube-proxy REJECTs it), or
 * no_local_endpoints. Endpoints listed without a port for a service port are
 * reported in `unresolved` (UNMATCHED_PORT). With kube-proxy's
 * `masqueradeAll`, every frontend is left with masquerade_all: the backend
 * must see the node's address, which a connect()-time translation cannot give.
 */
export function desiredServices(snap: Pick<Snapshot, 'services' | 'node' | 'zone' | 'masqueradeAll'>): {
  services: Map<string, DesiredService>;
  unresolved: string[];
} {
  const services = new Map<string, DesiredService>();
  const unresolved = new Set<string>();
  const node: NodeTopology = { name: snap.node, zone: snap.zone };
  for (const svc of snap.services) {
    const perPort = svc.ports.map((sp) => {
      const { endpoints, unmatched } = portEndpoints(svc.endpoints, sp);
      for (const e of unmatched) unresolved.add(`${svc.namespace}/${svc.name}:${sp.name ?? sp.port} → ${e.ip}`);
      const internal = usableEndpoints({ endpoints, internalTrafficPolicy: svc.internalTrafficPolicy }, node);
      let cluster: typeof internal | undefined;
      const serving = sp.protocol === 'UDP' ? servingOf(endpoints) : undefined;
      return { sp, internal, serving, cluster: () => (cluster ??= usableEndpoints({ endpoints }, node)) };
    });
    for (const addr of serviceAddresses(svc)) {
      for (const { sp, internal, serving, cluster } of perPort) {
        const use = addr.kind === 'cluster' ? internal : cluster();
        const proto = PROTO[sp.protocol];
        const fe: Frontend = { ip: addr.ip, port: sp.port, proto };
        const name = `${svc.namespace}/${svc.name}:${sp.name ?? sp.port}`;
        const leftAll = snap.masqueradeAll
          ? 'masquerade_all'
          : (addr.left ?? (svc.affinityTimeout && sp.protocol === 'UDP' ? 'udp_affinity' : undefined));
        const backends = leftAll ? [] : backendsOf(use.endpoints, proto);
        const left = leftAll ?? (backends.length ? undefined : (use.left ?? 'no_endpoints'));
        const d: DesiredService = left ? { fe, name, kind: addr.kind, backends, left } : { fe, name, kind: addr.kind, backends };
        if (svc.affinityTimeout) d.affinity = svc.affinityTimeout;
        if (serving) d.serving = serving;
        services.set(feKey(fe), d);
      }
    }
  }
  return { services, unresolved: [...unresolved] };
}

/** One service port's backends from its chosen endpoints, sorted (portEndpoints already made them unique). */
function backendsOf(endpoints: PortEndpoint[], proto: Proto): BackendAddr[] {
  return endpoints.map((e) => ({ ip: e.ip, port: e.port, proto })).sort(cmpAddr);
}
