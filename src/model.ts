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

export interface NetworkPolicy {
  namespace: string;
  name: string;
  /** Empty matchLabels (and no expressions) selects every pod of the namespace. */
  matchLabels: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

/** Kubernetes label selector semantics (matchLabels AND matchExpressions). */
export function selects(np: Pick<NetworkPolicy, 'matchLabels' | 'matchExpressions'>, labels: Record<string, string>): boolean {
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
  ports: ServicePort[];
  endpoints: ServiceEndpoint[];
}

export interface Snapshot {
  node?: string;
  /** This node's `topology.kubernetes.io/zone` label (topology-aware routing). */
  zone?: string;
  namespaces: Namespace[];
  pods: Pod[];
  networkPolicies: NetworkPolicy[];
  services: Service[];
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;
