/**
 * The API server double's resources: what it serves, under which path, as which kind.
 */

export type Resource =
  | 'namespaces'
  | 'nodes'
  | 'pods'
  | 'services'
  | 'endpointslices'
  | 'networkpolicies'
  // policy APIs besides NetworkPolicy: only served (in discovery and by path) after serve()
  | 'adminnetworkpolicies'
  | 'globalnetworkpolicies.crd.projectcalico.org'
  | 'networkpolicies.crd.projectcalico.org'
  | 'ciliumnetworkpolicies';

export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface ResourceInfo {
  prefix: string;
  apiVersion: string;
  kind: string;
  namespaced: boolean;
  /** the path segment, when it differs from the key */
  plural?: string;
  /** a CRD-like API: served only after serve() */
  optional?: boolean;
}

export const RESOURCES: Record<Resource, ResourceInfo> = {
  namespaces: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Namespace', namespaced: false },
  nodes: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Node', namespaced: false },
  pods: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Pod', namespaced: true },
  services: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Service', namespaced: true },
  endpointslices: {
    prefix: '/apis/discovery.k8s.io/v1',
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    namespaced: true,
  },
  networkpolicies: {
    prefix: '/apis/networking.k8s.io/v1',
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    namespaced: true,
  },
  adminnetworkpolicies: {
    prefix: '/apis/policy.networking.k8s.io/v1alpha1',
    apiVersion: 'policy.networking.k8s.io/v1alpha1',
    kind: 'AdminNetworkPolicy',
    namespaced: false,
    optional: true,
  },
  'globalnetworkpolicies.crd.projectcalico.org': {
    prefix: '/apis/crd.projectcalico.org/v1',
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'GlobalNetworkPolicy',
    namespaced: false,
    plural: 'globalnetworkpolicies',
    optional: true,
  },
  'networkpolicies.crd.projectcalico.org': {
    prefix: '/apis/crd.projectcalico.org/v1',
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'NetworkPolicy',
    namespaced: true,
    plural: 'networkpolicies',
    optional: true,
  },
  ciliumnetworkpolicies: {
    prefix: '/apis/cilium.io/v2',
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    namespaced: true,
    optional: true,
  },
};

/** the resource's path segment */
export const plural = (r: Resource): string => RESOURCES[r].plural ?? r;
export const RESOURCE_NAMES = Object.keys(RESOURCES) as Resource[];
/** every group version's path prefix (`/api/v1`, `/apis/<group>/<version>`) */
export const GROUP_PREFIXES = [...new Set(RESOURCE_NAMES.map((r) => RESOURCES[r].prefix))];
