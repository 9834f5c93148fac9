// Typed snapshot of the cluster as this node sees it. Every source (the local
// state file, the Kubernetes informers) produces one of these; the rest of the
// pipeline never knows which source it came from.

export const ACCELERATE_LABEL = 'podwarp.io/accelerate';
export const ACCELERATE_ANNOTATION = 'podwarp.io/accelerate';

export interface Namespace {
  name: string;
  accelerate: boolean;
  labels: Record<string, string>;
}

export interface Pod {
  namespace: string;
  name: string;
  uid?: string;
  ip?: string;
  hostInterface?: string;
  podInterface: string;
  mac?: string;
  netns?: string;
  cgroup?: string;
  hostNetwork: boolean;
  /** Being deleted (deletionTimestamp set): loses to a live pod holding the same IP. */
  terminating?: boolean;
  /** Runs an Istio-style sidecar proxy: outbound connects go to it, without iptables. */
  sidecar: boolean;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface LabelSelector {
  /** Empty matchLabels (and no expressions) selects everything. */
  matchLabels: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

/**
 * Any policy that may select pods: a NetworkPolicy, or another policy API's
 * object (AdminNetworkPolicy, Calico, Cilium, Antrea…) reduced to the pods it
 * may apply to. A policy podwarp cannot evaluate is converted to the widest
 * scope it could have (every pod of its namespace, or of the cluster).
 */
export interface NetworkPolicy extends LabelSelector {
  /** The policy's namespace; '' for a cluster-scoped policy (any namespace the namespaceSelector admits). */
  namespace: string;
  name: string;
  /** The policy API, e.g. 'AdminNetworkPolicy.policy.networking.k8s.io'; absent for networking.k8s.io NetworkPolicy. */
  kind?: string;
  /** Cluster-scoped policies only: the namespaces (by their labels) it applies to; absent = every namespace. */
  namespaceSelector?: LabelSelector;
}

/** Whether a policy may select a pod (namespace scope, namespace labels, pod labels). */
export function policySelects(
  np: NetworkPolicy,
  pod: Pick<Pod, 'namespace' | 'labels'>,
  nsLabels: Record<string, string> | undefined,
): boolean {
  if (np.namespace && np.namespace !== pod.namespace) return false;
  // a namespace podwarp does not know (yet) may match any selector: count it as matching
  if (np.namespaceSelector && nsLabels && !selects(np.namespaceSelector, nsLabels)) return false;
  return selects(np, pod.labels);
}

/** Kubernetes label selector semantics (matchLabels AND matchExpressions). */
export function selects(np: LabelSelector, labels: Record<string, string>): boolean {
  if (!Object.entries(np.matchLabels).every(([k, v]) => labels[k] === v)) return false;
  return (np.matchExpressions ?? []).every((e) => {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case 'In':
        return has && (e.values ?? []).includes(labels[e.key]!);
      case 'NotIn':
        return !has || !(e.values ?? []).includes(labels[e.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
    }
  });
}

export interface ServicePort {
  name?: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  targetPort?: number | string;
}

export interface ServiceEndpoint {
  ip: string;
  ready: boolean;
  terminating: boolean;
  /** EndpointSlice `conditions.serving`; unset = true (the API's nil). */
  serving?: boolean;
  /** EndpointSlice `nodeName`: the node the endpoint runs on. */
  nodeName?: string;
  /** EndpointSlice `hints.forZones[].name` / `hints.forNodes[].name` (topology-aware routing). */
  forZones?: string[];
  forNodes?: string[];
  ports: { name?: string; port: number; protocol: 'TCP' | 'UDP' }[];
}

export interface Service {
  namespace: string;
  name: string;
  clusterIP: string;
  /** `spec.internalTrafficPolicy`; unset = Cluster. */
  internalTrafficPolicy?: 'Cluster' | 'Local';
  /**
   * `sessionAffinity: ClientIP`: seconds a client stays with the backend it
   * used (`sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800).
   * Unset: `None`.
   */
  affinityTimeout?: number;
  /**
   * `spec.externalIPs`, the IPv4 ones (kube-proxy only programs the addresses
   * of the ClusterIP's family).
   */
  externalIPs?: string[];
  /**
   * `status.loadBalancer.ingress` entries with an IPv4 `ip` (hostname-only
   * entries have no address: nothing to do); `ipMode` unset means VIP.
   */
  loadBalancerIngress?: { ip: string; ipMode?: 'VIP' | 'Proxy' }[];
  /** `spec.externalTrafficPolicy`; unset = Cluster. */
  externalTrafficPolicy?: 'Cluster' | 'Local';
  /** `spec.loadBalancerSourceRanges`, the IPv4 CIDRs (kube-proxy's firewall for the LoadBalancer IPs). */
  loadBalancerSourceRanges?: string[];
  ports: ServicePort[];
  endpoints: ServiceEndpoint[];
}

export interface Snapshot {
  node?: string;
  /** This node's `topology.kubernetes.io/zone` label (topology-aware routing). */
  zone?: string;
  /**
   * This node's kube-proxy masquerades every connection to a Service
   * (`masqueradeAll`): podwarp leaves every frontend to it
   * (src/services/desired.ts, reason masquerade_all).
   */
  masqueradeAll?: boolean;
  namespaces: Namespace[];
  pods: Pod[];
  networkPolicies: NetworkPolicy[];
  services: Service[];
  /**
   * Policy APIs the cluster serves whose objects podwarp does not have right
   * now (discovery failed, a list/watch failed or has not answered yet). While
   * any is listed, no pod of the node is accelerated (fail closed).
   */
  policyGaps?: string[];
}

/** kube-proxy's default sticky time (the API server defaults `timeoutSeconds` to it too). */
export const DEFAULT_AFFINITY_TIMEOUT = 10800;

/**
 * `sessionAffinityConfig.clientIP.timeoutSeconds` as kube-proxy uses it: the
 * API server defaults it to 10800 and accepts 1..86400; anything else (an
 * object that skipped validation) gets the default, as an unset one does.
 */
export function affinityTimeout(t: unknown): number {
  return typeof t === 'number' && Number.isInteger(t) && t >= 1 && t <= 86400 ? t : DEFAULT_AFFINITY_TIMEOUT;
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;
