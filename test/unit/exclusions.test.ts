// Issue 10 (pod exclusions): policy APIs besides NetworkPolicy, bandwidth-shaped pods,
// native sidecars, Istio ambient and Istio's capture annotations, from the API object
// to the desired state and the reason that says why a pod is not accelerated.
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { CGROUP_HOOKS, EP_FLAGS } from '../../abi/schema.js';
import type { NodeFacts } from '../../src/facts/gather.js';
import { policySelects, type NetworkPolicy, type Pod, type Snapshot } from '../../src/model.js';
import { desired, isAmbient, type DesiredOptions } from '../../src/pods/desired.js';
import { notAccelerated } from '../../src/agent-report.js';
import { podFrom, trim } from '../../src/sources/kube-convert.js';
import { POLICY_APIS, policyFrom, trimPolicy, type PolicyApi } from '../../src/sources/kube-policies.js';

const api = (group: string, plural: string): PolicyApi => POLICY_APIS.find((a) => a.group === group && a.plural === plural)!;

const mkPod = (ns: string, name: string, i: number, extra: Partial<Pod> = {}): Pod => ({
  namespace: ns,
  name,
  ip: `10.1.0.${i}`,
  podInterface: 'eth0',
  cgroup: `/kubepods/pod-${name}`,
  hostNetwork: false,
  sidecar: false,
  labels: { app: name },
  annotations: {},
  ...extra,
});

function run(pods: Pod[], policies: NetworkPolicy[] = [], more: Partial<Snapshot> = {}, opts?: DesiredOptions) {
  const snap: Snapshot = {
    namespaces: [
      { name: 'a', accelerate: true, labels: { team: 'a' } },
      { name: 'b', accelerate: true, labels: { team: 'b' } },
      { name: 'mesh', accelerate: true, labels: { 'istio.io/dataplane-mode': 'ambient' } },
    ],
    pods,
    networkPolicies: policies,
    services: [],
    ...more,
  };
  const facts: NodeFacts = {
    pods: new Map(
      pods.map((p, i) => [
        `${p.namespace}/${p.name}`,
        { ifindex: 10 + i, hostInterface: `v${i}`, mac: '02:00:00:00:00:01', gwMac: 'ee:ee:ee:ee:ee:ee' },
      ]),
    ),
    missing: new Map(),
  };
  const d = desired(snap, facts, opts);
  const enabled = [...d.endpoints.values()].filter((e) => e.flags & EP_FLAGS.ENABLED).map((e) => e.pod);
  return { d, enabled: enabled.sort(), snap };
}

describe('other policy APIs → the pods they may select', () => {
  it('AdminNetworkPolicy subject.namespaces: every pod of the matching namespaces, no other', () => {
    const r = policyFrom(api('policy.networking.k8s.io', 'adminnetworkpolicies'), {
      metadata: { name: 'deny-a' },
      spec: { subject: { namespaces: { matchLabels: { team: 'a' } } } },
    });
    expect(r.skip).toBeUndefined();
    const { d, enabled } = run([mkPod('a', 'x', 1), mkPod('b', 'y', 2)], r.value);
    expect(d.disabled.get('a/x')).toBe('policy-selected');
    expect(enabled).toEqual(['b/y']);
  });

  it('BaselineAdminNetworkPolicy subject.pods: namespace selector AND pod selector', () => {
    const r = policyFrom(api('policy.networking.k8s.io', 'baselineadminnetworkpolicies'), {
      metadata: { name: 'default' },
      spec: {
        subject: {
          pods: {
            namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: ['b'] }] },
            podSelector: { matchLabels: { app: 'y' } },
          },
        },
      },
    });
    expect(r.skip).toBeUndefined();
    const { enabled } = run([mkPod('a', 'y', 1), mkPod('b', 'y', 2), mkPod('b', 'z', 3)], r.value);
    expect(enabled).toEqual(['a/y', 'b/z']);
  });

  it('an ANP selector podwarp cannot evaluate selects every pod, and says so', () => {
    const r = policyFrom(api('policy.networking.k8s.io', 'adminnetworkpolicies'), {
      metadata: { name: 'odd' },
      spec: { subject: { namespaces: { matchExpressions: [{ key: 'team', operator: 'Gt', values: ['1'] }] } } },
    });
    expect(r.skip).toMatch(/not evaluated: may select every pod$/);
    expect(run([mkPod('a', 'x', 1), mkPod('b', 'y', 2)], r.value).enabled).toEqual([]);
    // no subject at all: the same
    expect(policyFrom(api('policy.networking.k8s.io', 'adminnetworkpolicies'), { metadata: { name: 'n' }, spec: {} }).skip).toMatch(
      /subject not understood/,
    );
  });

  it('Calico GlobalNetworkPolicy (both groups) and Antrea ClusterNetworkPolicy: every pod of the node', () => {
    for (const a of [
      api('crd.projectcalico.org', 'globalnetworkpolicies'),
      api('projectcalico.org', 'globalnetworkpolicies'),
      api('crd.antrea.io', 'clusternetworkpolicies'),
    ]) {
      const r = policyFrom(a, { metadata: { name: 'g' }, spec: { selector: "app == 'x'" } });
      expect(r.skip).toMatch(/may select every pod$/);
      expect(run([mkPod('a', 'x', 1), mkPod('b', 'y', 2)], r.value).enabled).toEqual([]);
    }
  });

  it('Calico and Antrea namespaced policies: every pod of their namespace only', () => {
    for (const a of [api('crd.projectcalico.org', 'networkpolicies'), api('crd.antrea.io', 'networkpolicies')]) {
      const r = policyFrom(a, { metadata: { name: 'p', namespace: 'a' }, spec: { selector: "app == 'nothing'" } });
      expect(r.skip).toMatch(/may select every pod of namespace a$/);
      expect(run([mkPod('a', 'x', 1), mkPod('b', 'y', 2)], r.value).enabled).toEqual(['b/y']);
    }
    expect(policyFrom(api('crd.antrea.io', 'networkpolicies'), { metadata: { name: 'p' } }).value).toBeUndefined();
  });

  it('CiliumNetworkPolicy: endpointSelector (k8s:/any: prefixes) and specs[]; derived labels widen to the namespace', () => {
    const cnp = api('cilium.io', 'ciliumnetworkpolicies');
    const r = policyFrom(cnp, {
      metadata: { name: 'c', namespace: 'a' },
      spec: { endpointSelector: { matchLabels: { 'k8s:app': 'x' } } },
      // specs[] adds a second selector
    } as never);
    expect(r.skip).toBeUndefined();
    expect(run([mkPod('a', 'x', 1), mkPod('a', 'y', 2), mkPod('b', 'x', 3)], r.value).enabled).toEqual(['a/y', 'b/x']);
    const two = policyFrom(cnp, {
      metadata: { name: 'c', namespace: 'a' },
      spec: { specs: [{ endpointSelector: { matchLabels: { 'any:app': 'x' } } }, { endpointSelector: { matchLabels: { app: 'y' } } }] },
    });
    expect(two.value).toHaveLength(2);
    expect(run([mkPod('a', 'x', 1), mkPod('a', 'y', 2), mkPod('a', 'z', 3)], two.value).enabled).toEqual(['a/z']);
    const derived = policyFrom(cnp, {
      metadata: { name: 'c', namespace: 'a' },
      spec: { endpointSelector: { matchLabels: { 'io.cilium.k8s.policy.serviceaccount': 'sa' } } },
    });
    expect(derived.skip).toMatch(/endpointSelector not evaluated: may select every pod of namespace a/);
    expect(run([mkPod('a', 'x', 1), mkPod('b', 'x', 2)], derived.value).enabled).toEqual(['b/x']);
  });

  it('CiliumClusterwideNetworkPolicy: a plain endpointSelector in every namespace; nodeSelector widens to every pod', () => {
    const ccnp = api('cilium.io', 'ciliumclusterwidenetworkpolicies');
    const r = policyFrom(ccnp, { metadata: { name: 'cw' }, spec: { endpointSelector: { matchLabels: { app: 'x' } } } });
    expect(r.skip).toBeUndefined();
    expect(run([mkPod('a', 'x', 1), mkPod('b', 'x', 2), mkPod('b', 'y', 3)], r.value).enabled).toEqual(['b/y']);
    const host = policyFrom(ccnp, { metadata: { name: 'h' }, spec: { nodeSelector: {} } });
    expect(host.skip).toMatch(/nodeSelector/);
    expect(run([mkPod('b', 'y', 1)], host.value).enabled).toEqual([]);
  });

  it('policySelects: a namespace podwarp does not know counts as matching a namespace selector', () => {
    const np: NetworkPolicy = { namespace: '', name: 'n', matchLabels: {}, namespaceSelector: { matchLabels: { team: 'a' } } };
    expect(policySelects(np, { namespace: 'x', labels: {} }, undefined)).toBe(true);
    expect(policySelects(np, { namespace: 'x', labels: {} }, { team: 'b' })).toBe(false);
  });

  it('a policy API that cannot be read (policyGaps) keeps every pod on the normal path', () => {
    const { d, enabled } = run([mkPod('a', 'x', 1), mkPod('b', 'y', 2)], [], {
      policyGaps: ['globalnetworkpolicies.crd.projectcalico.org'],
    });
    expect(enabled).toEqual([]);
    expect([...d.disabled.values()]).toEqual(['policy-api-unavailable', 'policy-api-unavailable']);
    expect(d.cgroups.size).toBe(0);
    expect(run([mkPod('a', 'x', 1)], [], { policyGaps: [] }).enabled).toEqual(['a/x']);
  });

  it('trimPolicy keeps what policyFrom reads', () => {
    const o = {
      metadata: { name: 'c', namespace: 'a', resourceVersion: '5', managedFields: [{}] },
      spec: { endpointSelector: { matchLabels: { app: 'x' } }, ingress: [{ fromEndpoints: [{}] }] },
    };
    const t = trimPolicy(o) as typeof o;
    expect(t.metadata).toEqual({ name: 'c', namespace: 'a', resourceVersion: '5' });
    expect(policyFrom(api('cilium.io', 'ciliumnetworkpolicies'), t)).toEqual(policyFrom(api('cilium.io', 'ciliumnetworkpolicies'), o));
    expect(JSON.stringify(t)).not.toMatch(/ingress|managedFields/);
  });
});

describe('bandwidth-shaped, ambient and meshed pods', () => {
  it('the CNI bandwidth annotations keep a pod off the fast path (and survive trim())', () => {
    for (const a of ['kubernetes.io/ingress-bandwidth', 'kubernetes.io/egress-bandwidth']) {
      const o: V1Pod = {
        metadata: { name: 'p', namespace: 'a', annotations: { [a]: '10M', 'other.io/x': 'y' } },
        spec: { containers: [{ name: 'app' }] },
        status: { phase: 'Running', podIP: '10.1.0.9' },
      };
      const p = podFrom(trim('pods', o) as V1Pod).value!;
      expect(p.annotations).toEqual({ [a]: '10M' });
      const { d, enabled } = run([{ ...p, cgroup: '/kubepods/p' }, mkPod('a', 'x', 1)]);
      expect(d.disabled.get('a/p')).toBe('bandwidth-shaped');
      expect(enabled).toEqual(['a/x']);
    }
  });

  it('ambient: the namespace label, the pod label, and a pod opting out with dataplane-mode=none', () => {
    const { d, enabled } = run([
      mkPod('mesh', 'in-ns', 1),
      mkPod('mesh', 'opted-out', 2, { labels: { 'istio.io/dataplane-mode': 'none' } }),
      mkPod('a', 'own-label', 3, { labels: { 'istio.io/dataplane-mode': 'ambient' } }),
      mkPod('a', 'plain', 4),
    ]);
    expect(d.disabled.get('mesh/in-ns')).toBe('ambient-mesh');
    expect(d.disabled.get('a/own-label')).toBe('ambient-mesh');
    expect(enabled).toEqual(['a/plain', 'mesh/opted-out']);
    expect(isAmbient({ labels: {} }, undefined)).toBe(false);
  });

  it('native sidecar: an istio-proxy init container with restartPolicy Always (after trim()); a plain init container is not one', () => {
    const o = (restartPolicy?: string): V1Pod => ({
      metadata: { name: 'p', namespace: 'a' },
      spec: {
        containers: [{ name: 'app' }],
        initContainers: [{ name: 'istio-proxy', ...(restartPolicy ? { restartPolicy } : {}), image: 'x' }],
      },
      status: { phase: 'Running', podIP: '10.1.0.9' },
    });
    expect(podFrom(trim('pods', o('Always')) as V1Pod).value?.sidecar).toBe(true);
    expect(podFrom(trim('pods', o()) as V1Pod).value?.sidecar).toBe(false);
    const { d } = run([{ ...podFrom(o('Always')).value!, cgroup: '/kubepods/p' }]);
    expect(d.cgroups.get('/kubepods/p')! & CGROUP_HOOKS.CONNECT4).toBeTruthy();
  });

  it("Istio capture annotations: the pod stays accelerated without podwarp's capture or the socket LB (Istio's iptables apply)", () => {
    const ann = { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.0.0.0/8' };
    const o: V1Pod = {
      metadata: { name: 'm', namespace: 'a', annotations: ann },
      spec: { containers: [{ name: 'app' }, { name: 'istio-proxy' }] },
      status: { phase: 'Running', podIP: '10.1.0.9' },
    };
    const meshed = { ...podFrom(trim('pods', o) as V1Pod).value!, cgroup: '/kubepods/m' };
    expect(meshed.annotations).toEqual(ann);
    const plainMeshed = mkPod('a', 'n', 2, { sidecar: true });
    const unmeshed = mkPod('a', 'u', 3, { annotations: ann });
    const { d, enabled, snap } = run([meshed, plainMeshed, unmeshed]);
    expect(enabled).toEqual(['a/m', 'a/n', 'a/u']);
    expect(d.partial).toEqual(
      new Map([
        ['a/m', 'istio-annotations'],
        ['a/n', 'mesh-sidecar'],
      ]),
    );
    expect(d.cgroups.get('/kubepods/m')).toBe(CGROUP_HOOKS.SOCK_OPS);
    // a sidecar pod never gets the socket LB: the sidecar must see the ClusterIP
    expect(d.cgroups.get(plainMeshed.cgroup!)).toBe(CGROUP_HOOKS.SOCK_OPS | CGROUP_HOOKS.CONNECT4 | CGROUP_HOOKS.GETSOCKOPT);
    expect(d.cgroups.get(unmeshed.cgroup!)).toBe(CGROUP_HOOKS.SOCK_OPS | CGROUP_HOOKS.LB);
    // only the captured pod's own IP goes to pw_pod_cgroup
    expect(d.podCgroups).toEqual(new Map([[plainMeshed.ip!, plainMeshed.cgroup!]]));
    expect(notAccelerated({ desired: d }, snap)).toEqual({
      'a/m': { ip: '10.1.0.9', reason: 'istio-annotations' },
      'a/n': { ip: plainMeshed.ip, reason: 'mesh-sidecar' },
    });
  });

  it('socket LB off for every sidecar pod, classic or native, whatever the other options', () => {
    const native: V1Pod = {
      metadata: { name: 'nat', namespace: 'a' },
      spec: { containers: [{ name: 'app' }], initContainers: [{ name: 'istio-proxy', restartPolicy: 'Always', image: 'x' }] },
      status: { phase: 'Running', podIP: '10.1.0.7' },
    };
    const nat = { ...podFrom(trim('pods', native) as V1Pod).value!, cgroup: '/kubepods/nat' };
    const classic = mkPod('a', 'c', 4, { sidecar: true });
    for (const opts of [{ sockmap: true }, { sockmap: false }, { sockmap: true, lb: true }, { sockmap: false, lb: true }]) {
      const { d } = run([nat, classic], [], {}, opts);
      for (const cg of [nat.cgroup, classic.cgroup!]) expect((d.cgroups.get(cg) ?? 0) & CGROUP_HOOKS.LB, JSON.stringify(opts)).toBe(0);
      expect(d.partial.get('a/nat')).toBe('mesh-sidecar');
      expect(d.partial.get('a/c')).toBe('mesh-sidecar');
    }
  });
});
