// Kubernetes objects → model: what is used, what is skipped and why.
import type { V1EndpointSlice, V1NetworkPolicy, V1Pod, V1Service } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { selects, type Pod } from '../../src/model.js';
import { dedupeIPs, endpointsFrom, namespaceFrom, networkPolicyFrom, podFrom, serviceFrom, trim } from '../../src/sources/kube-convert.js';

const pod = (over: Partial<V1Pod> & { ip?: string | string[] } = {}): V1Pod => {
  const ips = over.ip === undefined ? ['10.1.0.5'] : ([] as string[]).concat(over.ip);
  return {
    metadata: { name: 'web-0', namespace: 'shop', uid: 'u-1', labels: { app: 'web' }, ...over.metadata },
    spec: { nodeName: 'n1', containers: [{ name: 'app' }], ...over.spec },
    status: { phase: 'Running', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })), ...over.status },
  };
};

describe('podFrom()', () => {
  it('takes the IPv4 address of a dual-stack pod and the sidecar marker', () => {
    const r = podFrom(pod({ ip: ['fd00::5', '10.1.0.5'], spec: { containers: [{ name: 'app' }, { name: 'istio-proxy' }] } }));
    expect(r.skip).toBeUndefined();
    expect(r.value).toMatchObject({
      namespace: 'shop',
      name: 'web-0',
      uid: 'u-1',
      ip: '10.1.0.5',
      sidecar: true,
      hostNetwork: false,
      terminating: false,
      podInterface: 'eth0',
    });
  });
  it('keeps an IPv6-only pod without an IP and says why', () => {
    const r = podFrom(pod({ ip: 'fd00::5' }));
    expect(r.value?.ip).toBeUndefined();
    expect(r.skip).toMatch(/^no IPv4 address \(fd00::5\)/);
  });
  it('drops finished pods (their IP may be reused) and objects without a name', () => {
    expect(podFrom(pod({ status: { phase: 'Succeeded' } })).value).toBeUndefined();
    expect(podFrom(pod({ status: { phase: 'Failed' } })).skip).toBe('finished (Failed)');
    expect(podFrom({ metadata: { namespace: 'x' } } as V1Pod).skip).toMatch(/missing metadata/);
  });
  it('survives missing spec and status', () => {
    const r = podFrom({ metadata: { name: 'bare', namespace: 'x' } } as V1Pod);
    expect(r.value).toMatchObject({ name: 'bare', ip: undefined, hostNetwork: false, sidecar: false });
    expect(r.skip).toBeUndefined();
  });
  it('marks terminating pods and hostNetwork pods', () => {
    expect(podFrom(pod({ metadata: { name: 'a', namespace: 's', deletionTimestamp: new Date() } })).value?.terminating).toBe(true);
    expect(podFrom(pod({ spec: { hostNetwork: true, containers: [] } })).value?.hostNetwork).toBe(true);
  });
});

describe('dedupeIPs()', () => {
  const p = (name: string, ip: string, terminating = false): Pod => ({
    namespace: 'ns',
    name,
    ip,
    terminating,
    hostNetwork: false,
    sidecar: false,
    podInterface: 'eth0',
    labels: {},
    annotations: {},
  });
  it('lets a live pod win over a terminating one with the same IP, silently', () => {
    const r = dedupeIPs([p('old', '10.0.0.1', true), p('new', '10.0.0.1'), p('other', '10.0.0.2')]);
    expect(r.pods.map((x) => x.name)).toEqual(['new', 'other']);
    expect(r.conflicts.size).toBe(0);
  });
  it('uses neither of two live pods with one IP, and names both', () => {
    const r = dedupeIPs([p('a', '10.0.0.1'), p('b', '10.0.0.1'), p('gone', '10.0.0.1', true)]);
    expect(r.pods).toEqual([]);
    expect([...r.conflicts.keys()].sort()).toEqual(['ns/a', 'ns/b']);
    expect(r.conflicts.get('ns/a')).toBe('duplicate IP: 10.0.0.1 is claimed by ns/a and ns/b');
  });
});

describe('serviceFrom() and endpointsFrom()', () => {
  const svc = (spec: V1Service['spec']): V1Service => ({ metadata: { name: 'web', namespace: 'shop' }, spec });
  it('converts ports, numeric-string target ports, and leaves out SCTP ports with a reason', () => {
    const r = serviceFrom(
      svc({
        clusterIP: '10.96.0.10',
        ports: [
          { name: 'http', port: 80, targetPort: 'http' as unknown as never },
          { name: 'alt', port: 81, protocol: 'UDP', targetPort: '8081' as unknown as never },
          { name: 'sig', port: 9, protocol: 'SCTP' },
        ],
      }),
    );
    expect(r.value?.ports).toEqual([
      { name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' },
      { name: 'alt', port: 81, protocol: 'UDP', targetPort: 8081 },
    ]);
    expect(r.skip).toMatch(/sig\/SCTP/);
  });
  it('sessionAffinity: ClientIP with its timeout, 10800 when unset (the API default) or invalid, nothing for None', () => {
    const base = { clusterIP: '10.96.0.10', ports: [{ port: 80 }] };
    expect(
      serviceFrom(svc({ ...base, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } } })).value
        ?.affinityTimeout,
    ).toBe(30);
    expect(serviceFrom(svc({ ...base, sessionAffinity: 'ClientIP' })).value?.affinityTimeout).toBe(10800);
    expect(serviceFrom(svc({ ...base, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: {} } })).value?.affinityTimeout).toBe(
      10800,
    );
    expect(
      serviceFrom(svc({ ...base, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } })).value
        ?.affinityTimeout,
    ).toBe(10800);
    expect(
      serviceFrom(svc({ ...base, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } } })).value
        ?.affinityTimeout,
    ).toBe(10800);
    expect(
      serviceFrom(svc({ ...base, sessionAffinity: 'None', sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } } })).value,
    ).not.toHaveProperty('affinityTimeout');
    expect(serviceFrom(svc(base)).value).not.toHaveProperty('affinityTimeout');
  });
  it('externalIPs, LoadBalancer ingress IPs (with ipMode), externalTrafficPolicy and source ranges: IPv4 only, hostname-only entries dropped', () => {
    const r = serviceFrom({
      metadata: { name: 'web', namespace: 'shop' },
      spec: {
        type: 'LoadBalancer',
        clusterIPs: ['10.96.0.10', 'fd00::10'],
        ports: [{ port: 80 }],
        externalIPs: ['192.0.2.10', '2001:db8::1', '192.0.2.10'],
        externalTrafficPolicy: 'Local',
        loadBalancerSourceRanges: [' 10.0.0.0/8 ', '2001:db8::/32'],
      },
      status: {
        loadBalancer: {
          ingress: [
            { ip: '198.51.100.1' },
            { ip: '198.51.100.2', ipMode: 'Proxy' },
            { ip: '198.51.100.3', ipMode: 'VIP' },
            { hostname: 'lb.example' },
            { ip: '2001:db8::2' },
          ],
        },
      },
    });
    expect(r.value).toMatchObject({
      externalIPs: ['192.0.2.10'],
      externalTrafficPolicy: 'Local',
      loadBalancerSourceRanges: ['10.0.0.0/8'],
      loadBalancerIngress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.2', ipMode: 'Proxy' }, { ip: '198.51.100.3' }],
    });
    // externalTrafficPolicy Local counts only where kube-proxy reads it: LoadBalancer, NodePort, ClusterIP with externalIPs
    const etp = (spec: V1Service['spec']) =>
      serviceFrom(svc({ clusterIP: '10.96.0.10', ports: [{ port: 80 }], externalTrafficPolicy: 'Local', ...spec })).value;
    expect(etp({ externalIPs: ['192.0.2.1'] })?.externalTrafficPolicy).toBe('Local');
    expect(etp({ type: 'NodePort' })?.externalTrafficPolicy).toBe('Local');
    expect(etp({})).not.toHaveProperty('externalTrafficPolicy');
    const plain = serviceFrom(svc({ clusterIP: '10.96.0.10', ports: [{ port: 80 }], externalTrafficPolicy: 'Cluster' })).value!;
    for (const k of ['externalIPs', 'loadBalancerIngress', 'externalTrafficPolicy', 'loadBalancerSourceRanges'])
      expect(plain).not.toHaveProperty(k);
  });
  it('skips headless, ExternalName and IPv6-only services', () => {
    expect(serviceFrom(svc({ clusterIP: 'None', ports: [{ port: 80 }] })).skip).toMatch(/^headless/);
    expect(serviceFrom(svc({ type: 'ExternalName', externalName: 'x.example' })).skip).toMatch(/^ExternalName/);
    expect(serviceFrom(svc({ clusterIPs: ['fd00::10'], ports: [{ port: 80 }] })).skip).toMatch(/^no IPv4 ClusterIP/);
    expect(serviceFrom({ metadata: { name: 'x', namespace: 'y' } } as V1Service).skip).toBe('no spec');
  });
  it('reads endpoint conditions with API defaults and ignores non-IPv4 slices', () => {
    const slice = (addressType: string, endpoints: V1EndpointSlice['endpoints']): V1EndpointSlice => ({
      metadata: { name: `s-${addressType}`, namespace: 'shop' },
      addressType,
      endpoints,
      ports: [{ name: 'http', port: 8080 }],
    });
    const r = endpointsFrom([
      slice('IPv4', [
        { addresses: ['10.1.0.2'] },
        { addresses: ['10.1.0.3'], conditions: { ready: false } },
        { addresses: ['10.1.0.4'], conditions: { ready: true, terminating: true } },
        { addresses: [] },
      ]),
      slice('IPv6', [{ addresses: ['fd00::2'] }]),
      slice('FQDN', [{ addresses: ['db.example'] }]),
    ]);
    expect(r.endpoints).toEqual([
      { ip: '10.1.0.2', ready: true, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] },
      { ip: '10.1.0.3', ready: false, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] },
      { ip: '10.1.0.4', ready: true, terminating: true, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] },
    ]);
    expect(r.skips.map((s) => s.slice)).toEqual(['shop/s-IPv4', 'shop/s-IPv6', 'shop/s-FQDN']);
  });
  it("keeps each slice's valid ports only (kube-proxy skips a null or 0 port): none at all is an empty list, never a guess", () => {
    const slice = (name: string, ports: unknown): V1EndpointSlice => ({
      metadata: { name, namespace: 'shop' },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.1.0.2'] }],
      ports: ports as V1EndpointSlice['ports'],
    });
    const portsOf = (ports: unknown) => endpointsFrom([slice('s', ports)]).endpoints[0]!.ports;
    expect(
      portsOf([
        { name: 'http', port: null },
        { name: 'zero', port: 0 },
        { name: 'dns', port: 53, protocol: 'UDP' },
      ]),
    ).toEqual([{ name: 'dns', port: 53, protocol: 'UDP' }]);
    expect(portsOf([{ name: 'sctp', port: 9, protocol: 'SCTP' }, { port: 70000 }])).toEqual([]);
    expect(portsOf([])).toEqual([]);
    expect(portsOf(undefined)).toEqual([]);
    expect(portsOf([{ name: '', port: 80 }])).toEqual([{ name: undefined, port: 80, protocol: 'TCP' }]);
  });
});

describe('namespaces and NetworkPolicies', () => {
  it('enables a namespace only for the exact label value "true"', () => {
    expect(namespaceFrom({ metadata: { name: 'a', labels: { 'podwarp.io/accelerate': 'true' } } }).value?.accelerate).toBe(true);
    expect(namespaceFrom({ metadata: { name: 'a', labels: { 'podwarp.io/accelerate': 'yes' } } }).value?.accelerate).toBe(false);
  });
  it('keeps matchExpressions, and treats a selector it cannot read as selecting every pod', () => {
    const np = (podSelector: NonNullable<V1NetworkPolicy['spec']>['podSelector']): V1NetworkPolicy => ({
      metadata: { name: 'p', namespace: 'shop' },
      spec: { podSelector },
    });
    const r = networkPolicyFrom(
      np({ matchLabels: { tier: 'db' }, matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['dev'] }] }),
    );
    expect(selects(r.value!, { tier: 'db', env: 'prod' })).toBe(true);
    expect(selects(r.value!, { tier: 'db', env: 'dev' })).toBe(false);
    expect(selects(r.value!, { tier: 'web' })).toBe(false);
    const odd = networkPolicyFrom(np({ matchExpressions: [{ key: 'env', operator: 'Matches' }] }));
    expect(odd.skip).toMatch(/treated as selecting every pod/);
    expect(selects(odd.value!, { anything: 'x' })).toBe(true);
    expect(selects(networkPolicyFrom(np({})).value!, {})).toBe(true); // empty selector: every pod
  });
  it('implements Exists and DoesNotExist', () => {
    const s = {
      matchLabels: {},
      matchExpressions: [
        { key: 'a', operator: 'Exists' as const },
        { key: 'b', operator: 'DoesNotExist' as const },
      ],
    };
    expect(selects(s, { a: '' })).toBe(true);
    expect(selects(s, { a: '1', b: '2' })).toBe(false);
    expect(selects(s, {})).toBe(false);
  });
});

describe('trim() (what the informer caches keep)', () => {
  it('keeps what the converters read: a trimmed slice yields the same endpoints and skips', () => {
    const slice: V1EndpointSlice = {
      metadata: {
        name: 'web-x',
        namespace: 'shop',
        labels: { 'kubernetes.io/service-name': 'web', other: 'x' },
        managedFields: [{ manager: 'kube-controller-manager' }],
      },
      addressType: 'IPv4',
      endpoints: [
        { addresses: ['10.1.0.2'], conditions: { ready: true, serving: true }, nodeName: 'n1', targetRef: { kind: 'Pod', name: 'a' } },
        { addresses: ['10.1.0.3'], conditions: { ready: false, terminating: true } },
        { addresses: ['10.1.0.4'] },
        {
          addresses: ['10.1.0.5'],
          conditions: { ready: false, serving: false, terminating: true },
          nodeName: 'n2',
          hints: { forZones: [{ name: 'a' }, { name: 'b' }], forNodes: [{ name: 'n2' }] } as V1EndpointSlice['endpoints'][number]['hints'],
        },
        { addresses: ['fd00::1'] },
        { addresses: [] },
      ],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    };
    const t = trim('endpointslices', slice) as V1EndpointSlice;
    expect(endpointsFrom([t])).toEqual(endpointsFrom([slice]));
    expect(endpointsFrom([t]).endpoints.map(({ ports: _, ...e }) => e)).toEqual([
      { ip: '10.1.0.2', ready: true, terminating: false, nodeName: 'n1' },
      { ip: '10.1.0.3', ready: false, terminating: true },
      { ip: '10.1.0.4', ready: true, terminating: false },
      { ip: '10.1.0.5', ready: false, terminating: true, serving: false, nodeName: 'n2', forZones: ['a', 'b'], forNodes: ['n2'] },
    ]);
    // the older 3-field packed form still reads
    expect(endpointsFrom([{ ...t, endpoints: '10.1.0.9,0,1' as unknown as V1EndpointSlice['endpoints'] }]).endpoints).toEqual([
      { ip: '10.1.0.9', ready: false, terminating: true, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] },
    ]);
    expect(t.metadata?.labels).toEqual({ 'kubernetes.io/service-name': 'web' });
    expect(JSON.stringify(t)).not.toContain('managedFields');
  });
  it("keeps a pod's labels, podwarp annotations, IPs and container names only", () => {
    const p = pod({
      metadata: {
        name: 'a',
        namespace: 's',
        annotations: { 'podwarp.io/accelerate': 'false', 'kubectl.kubernetes.io/last-applied-configuration': '{…}' },
      },
    });
    const t = trim('pods', p) as V1Pod;
    expect(podFrom(t)).toEqual(podFrom(p));
    expect(t.metadata?.annotations).toEqual({ 'podwarp.io/accelerate': 'false' });
  });
  it('keeps services and policies convertible', () => {
    const s: V1Service = {
      metadata: { name: 'web', namespace: 'shop', annotations: { big: 'x'.repeat(1000) } },
      spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], sessionAffinity: 'None', internalTrafficPolicy: 'Local' },
    };
    expect(serviceFrom(trim('services', s) as V1Service)).toEqual(serviceFrom(s));
    expect(serviceFrom(trim('services', s) as V1Service).value?.internalTrafficPolicy).toBe('Local');
    const sticky: V1Service = {
      ...s,
      spec: { ...s.spec, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 77 } } },
    };
    expect(serviceFrom(trim('services', sticky) as V1Service).value?.affinityTimeout).toBe(77);
    const lb: V1Service = {
      ...s,
      spec: {
        ...s.spec,
        type: 'LoadBalancer',
        externalIPs: ['192.0.2.1'],
        externalTrafficPolicy: 'Local',
        loadBalancerSourceRanges: ['10.0.0.0/8'],
      },
      status: { loadBalancer: { ingress: [{ ip: '198.51.100.1', ipMode: 'Proxy', ports: [{ port: 80, protocol: 'TCP' }] }] } },
    };
    expect(serviceFrom(trim('services', lb) as V1Service)).toEqual(serviceFrom(lb));
    expect(serviceFrom(trim('services', lb) as V1Service).value?.loadBalancerIngress).toEqual([{ ip: '198.51.100.1', ipMode: 'Proxy' }]);
    const np: V1NetworkPolicy = {
      metadata: { name: 'p', namespace: 'shop' },
      spec: { podSelector: { matchLabels: { a: 'b' } }, ingress: [{}] },
    };
    expect(networkPolicyFrom(trim('networkpolicies', np) as V1NetworkPolicy)).toEqual(networkPolicyFrom(np));
  });
});
