// Policy APIs besides networking.k8s.io NetworkPolicy → the pods they may
// select (src/model.ts NetworkPolicy). Pure: no I/O. A pod any of them may
// select is never a bypass endpoint; a policy whose selection podwarp cannot
// evaluate is widened to every pod it could apply to (its namespace, or the
// cluster), and says so (`skip`), never narrowed.
import type { LabelSelector, NetworkPolicy } from '../model.js';

export interface PolicyApi {
  group: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** Every policy API podwarp looks for in API discovery; the ones the cluster serves are watched. */
export const POLICY_APIS: PolicyApi[] = [
  { group: 'policy.networking.k8s.io', plural: 'adminnetworkpolicies', kind: 'AdminNetworkPolicy', namespaced: false },
  { group: 'policy.networking.k8s.io', plural: 'baselineadminnetworkpolicies', kind: 'BaselineAdminNetworkPolicy', namespaced: false },
  { group: 'crd.projectcalico.org', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  { group: 'crd.projectcalico.org', plural: 'globalnetworkpolicies', kind: 'GlobalNetworkPolicy', namespaced: false },
  { group: 'projectcalico.org', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  { group: 'projectcalico.org', plural: 'globalnetworkpolicies', kind: 'GlobalNetworkPolicy', namespaced: false },
  { group: 'cilium.io', plural: 'ciliumnetworkpolicies', kind: 'CiliumNetworkPolicy', namespaced: true },
  { group: 'cilium.io', plural: 'ciliumclusterwidenetworkpolicies', kind: 'CiliumClusterwideNetworkPolicy', namespaced: false },
  { group: 'crd.antrea.io', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  { group: 'crd.antrea.io', plural: 'clusternetworkpolicies', kind: 'ClusterNetworkPolicy', namespaced: false },
];

/** `<plural>.<group>`: the name a policy API goes by in logs, metrics and RBAC. */
export const apiName = (a: Pick<PolicyApi, 'group' | 'plural'>): string => `${a.plural}.${a.group}`;

type Sel = { matchLabels?: unknown; matchExpressions?: unknown } | null | undefined;

/** A Kubernetes LabelSelector podwarp can evaluate, or undefined (unknown operator, odd shape). */
export function labelSelector(sel: Sel, key: (k: string) => string | undefined = (k) => k): LabelSelector | undefined {
  if (sel === null || sel === undefined) return { matchLabels: {} };
  if (typeof sel !== 'object') return undefined;
  const matchLabels: Record<string, string> = {};
  if (sel.matchLabels !== undefined && sel.matchLabels !== null) {
    if (typeof sel.matchLabels !== 'object') return undefined;
    for (const [k, v] of Object.entries(sel.matchLabels as Record<string, unknown>)) {
      const kk = key(k);
      if (kk === undefined || typeof v !== 'string') return undefined;
      matchLabels[kk] = v;
    }
  }
  const exprs: NonNullable<LabelSelector['matchExpressions']> = [];
  if (sel.matchExpressions !== undefined && sel.matchExpressions !== null) {
    if (!Array.isArray(sel.matchExpressions)) return undefined;
    for (const e of sel.matchExpressions as { key?: unknown; operator?: unknown; values?: unknown }[]) {
      const op = e?.operator;
      const kk = typeof e?.key === 'string' ? key(e.key) : undefined;
      if (kk === undefined || (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist')) return undefined;
      const values = Array.isArray(e.values) ? e.values.filter((v): v is string => typeof v === 'string') : undefined;
      exprs.push({ key: kk, operator: op, values });
    }
  }
  return exprs.length ? { matchLabels, matchExpressions: exprs } : { matchLabels };
}

/**
 * A Cilium endpointSelector key as a pod label key: `k8s:` and `any:` prefixes
 * name the pod's own labels; Cilium's derived labels (namespace, service
 * account, namespace labels, reserved identities) are not evaluated.
 */
function ciliumKey(k: string): string | undefined {
  const plain = k.replace(/^(k8s|any):/, '');
  if (plain.includes(':') || plain.startsWith('io.kubernetes.') || plain.startsWith('io.cilium.')) return undefined;
  return plain;
}

type Obj = { metadata?: { name?: unknown; namespace?: unknown }; spec?: Record<string, unknown> | null };

export type PolicyConverted = { value: NetworkPolicy[]; skip?: string };

/** The pods one policy object of `api` may select, widened where podwarp cannot tell. */
export function policyFrom(api: PolicyApi, o: Obj): PolicyConverted | { value?: undefined; skip: string } {
  const name = typeof o?.metadata?.name === 'string' ? o.metadata.name : '';
  const ns = api.namespaced && typeof o?.metadata?.namespace === 'string' ? o.metadata.namespace : '';
  if (!name || (api.namespaced && !ns)) return { skip: 'missing metadata.name or metadata.namespace' };
  const kind = `${api.kind}.${api.group}`;
  const scope = api.namespaced ? `every pod of namespace ${ns}` : 'every pod';
  const wide = (why: string): PolicyConverted => ({
    value: [{ namespace: ns, name, kind, matchLabels: {} }],
    skip: `${why}: may select ${scope}`,
  });
  const spec = o.spec && typeof o.spec === 'object' ? o.spec : {};
  switch (api.group) {
    case 'policy.networking.k8s.io': {
      // spec.subject: exactly one of namespaces (a namespace selector) or pods {namespaceSelector, podSelector}
      const subj = spec.subject as { namespaces?: Sel; pods?: { namespaceSelector?: Sel; podSelector?: Sel } } | undefined;
      if (subj?.namespaces && !subj.pods) {
        const nsSel = labelSelector(subj.namespaces);
        if (!nsSel) return wide('subject.namespaces selector not evaluated');
        return { value: [{ namespace: '', name, kind, matchLabels: {}, namespaceSelector: nsSel }] };
      }
      if (subj?.pods && !subj.namespaces) {
        const nsSel = labelSelector(subj.pods.namespaceSelector);
        const podSel = labelSelector(subj.pods.podSelector);
        if (!nsSel || !podSel) return wide('subject.pods selector not evaluated');
        return { value: [{ namespace: '', name, kind, ...podSel, namespaceSelector: nsSel }] };
      }
      return wide('subject not understood');
    }
    case 'cilium.io': {
      const specs = [spec, ...(Array.isArray(spec.specs) ? (spec.specs as Record<string, unknown>[]) : [])].filter(
        (s) => s && typeof s === 'object' && (s.endpointSelector !== undefined || s.nodeSelector !== undefined),
      );
      if (!specs.length) return wide('no endpointSelector');
      const out: NetworkPolicy[] = [];
      for (const s of specs) {
        if (s.nodeSelector !== undefined) return wide('nodeSelector (host policy) not evaluated');
        const sel = labelSelector(s.endpointSelector as Sel, ciliumKey);
        if (!sel) return wide('endpointSelector not evaluated');
        out.push({ namespace: ns, name, kind, ...sel });
      }
      return { value: out };
    }
    default:
      // Calico (selector expressions, serviceAccountSelector, namespaceSelector) and Antrea (appliedTo groups,
      // per-rule appliedTo, namespace and service-account selectors): not evaluated
      return wide(`${api.kind} selection not evaluated`);
  }
}

/** What the informer cache keeps of a policy object: the fields policyFrom reads. */
export function trimPolicy(o: unknown): unknown {
  if (!o || typeof o !== 'object') return o;
  const x = o as { metadata?: Record<string, unknown>; spec?: Record<string, unknown> };
  const m = x.metadata ?? {};
  const s = x.spec && typeof x.spec === 'object' ? x.spec : {};
  const sel = (v: Record<string, unknown>) => ({ endpointSelector: v?.endpointSelector, nodeSelector: v?.nodeSelector });
  return {
    metadata: { name: m.name, namespace: m.namespace, resourceVersion: m.resourceVersion },
    spec: {
      subject: s.subject,
      ...sel(s),
      specs: Array.isArray(s.specs) ? (s.specs as Record<string, unknown>[]).map(sel) : undefined,
    },
  };
}
