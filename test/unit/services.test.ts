import { describe, expect, it } from 'vitest';
import type { Service, Snapshot } from '../../src/model.js';
import {
  beKey,
  desiredServices,
  servingIPs,
  feKey,
  portEndpoints,
  serviceAddresses,
  usableEndpoints,
  type BackendAddr,
  type DesiredService,
} from '../../src/services/desired.js';
import { applyToMirror } from '../../src/services/mirror.js';
import { udpFlowTimeoutNs } from '../../src/commands/dump.js';
import { indexServices, planServices, svcPlanSize, type ActualServices } from '../../src/services/plan.js';

const DNS = { name: 'dns', port: 5353, protocol: 'UDP' as const };
const svc = (over: Partial<Service> = {}): Service => ({
  namespace: 'shop',
  name: 'web',
  clusterIP: '10.96.0.10',
  ports: [
    { name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' },
    { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
  ],
  endpoints: [
    { ip: '10.1.0.3', ready: true, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, DNS] },
    { ip: '10.1.0.2', ready: true, terminating: false, ports: [{ name: 'http', port: 8081, protocol: 'TCP' }, DNS] },
    { ip: '10.1.0.4', ready: false, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, DNS] },
    { ip: '10.1.0.5', ready: false, terminating: true, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, DNS] },
    { ip: '10.1.0.6', ready: true, terminating: false, ports: [DNS] },
  ],
  ...over,
});
const snap = (services: Service[]): Snapshot => ({ namespaces: [], pods: [], networkPolicies: [], services });
const empty = (): ActualServices => ({ masters: new Map(), slots: new Map(), backends: new Map(), matches: new Map(), serving: new Map() });
const BIG = { svc: 1 << 20, backends: 1 << 20 };

/** What the maps hold after applying `p` to `have` (the applier's effect, for tests). */
function applied(have: ActualServices, p: ReturnType<typeof planServices>): ActualServices {
  const out: ActualServices = {
    masters: new Map(have.masters),
    slots: new Map([...have.slots].map(([k, v]) => [k, new Map(v)])),
    backends: new Map(have.backends),
    matches: new Map([...have.matches].map(([k, v]) => [k, new Set(v)])),
    serving: new Map([...have.serving].map(([k, v]) => [k, new Set(v)])),
  };
  const k = (f: { ip: string; port: number; proto: number }) => `${f.ip}:${f.port}/${f.proto}`;
  for (const b of p.backendsUpsert) out.backends.set(b.id, b.b);
  for (const s of p.slotsUpsert) {
    if (!out.slots.has(k(s.fe))) out.slots.set(k(s.fe), new Map());
    out.slots.get(k(s.fe))!.set(s.slot, s.id);
  }
  for (const m of p.matchesUpsert) {
    if (!out.matches.has(k(m.fe))) out.matches.set(k(m.fe), new Set());
    out.matches.get(k(m.fe))!.add(m.id);
  }
  for (const m of p.mastersUpsert)
    out.masters.set(k(m.fe), m.affinity ? { fe: m.fe, count: m.count, affinity: m.affinity } : { fe: m.fe, count: m.count });
  for (const fe of p.mastersDelete) out.masters.delete(k(fe));
  for (const s of p.slotsDelete) out.slots.get(k(s.fe))?.delete(s.slot);
  for (const [key, v] of out.slots) if (v.size === 0) out.slots.delete(key);
  for (const m of p.matchesDelete) out.matches.get(k(m.fe))?.delete(m.id);
  for (const [key, v] of out.matches) if (v.size === 0) out.matches.delete(key);
  for (const m of p.servingUpsert) {
    if (!out.serving.has(k(m.fe))) out.serving.set(k(m.fe), new Set());
    out.serving.get(k(m.fe))!.add(m.ip);
  }
  for (const m of p.servingDelete) out.serving.get(k(m.fe))?.delete(m.ip);
  for (const [key, v] of out.serving) if (v.size === 0) out.serving.delete(key);
  for (const id of p.backendsDelete) out.backends.delete(id);
  return out;
}

describe('desiredServices()', () => {
  const { services, unresolved } = desiredServices(snap([svc()]));
  type Ep = Service['endpoints'][number];
  const ep = (ip: string, ports: Ep['ports'], over: Partial<Ep> = {}): Ep => ({ ip, ready: true, terminating: false, ports, ...over });
  const HTTP = { name: 'http', port: 8080, protocol: 'TCP' as const };
  const at = (d: DesiredService | undefined) => d?.backends.map((b) => `${b.ip}:${b.port}`);

  it("resolves a service port through the endpoint's slice port of its name and protocol and skips not-ready and terminating endpoints", () => {
    expect(services.get('10.96.0.10:80/6')!.backends).toEqual([
      { ip: '10.1.0.2', port: 8081, proto: 6 },
      { ip: '10.1.0.3', port: 8080, proto: 6 },
    ]);
    expect(at(services.get('10.96.0.10:53/17'))).toEqual(['10.1.0.2:5353', '10.1.0.3:5353', '10.1.0.6:5353']);
    // 10.1.0.6's slice has no http port: not an endpoint of that service port (kube-proxy's EndpointSliceCache)
    expect(unresolved).toEqual(['shop/web:http → 10.1.0.6']);
  });

  it('no slice port of the name and protocol (ports: [], another name, another protocol): no endpoint, whatever targetPort says; kube-proxy rejects', () => {
    const ports = [{ name: 'http', port: 80, protocol: 'TCP' as const, targetPort: 8080 }];
    for (const slicePorts of [[], [{ ...HTTP, name: 'web' }], [{ ...HTTP, protocol: 'UDP' as const }]]) {
      const r = desiredServices(snap([svc({ ports, endpoints: [ep('10.1.0.2', slicePorts), ep('10.1.0.3', slicePorts)] })]));
      expect(r.services.get('10.96.0.10:80/6'), JSON.stringify(slicePorts)).toMatchObject({ backends: [], left: 'no_endpoints' });
      expect(r.unresolved).toEqual(['shop/web:http → 10.1.0.2', 'shop/web:http → 10.1.0.3']);
    }
    // the slice port's number, not targetPort; only the endpoints whose slice has the port
    const r = desiredServices(snap([svc({ ports, endpoints: [ep('10.1.0.2', [{ ...HTTP, port: 9090 }]), ep('10.1.0.3', [])] })]));
    expect(at(r.services.get('10.96.0.10:80/6'))).toEqual(['10.1.0.2:9090']);
    // an unnamed service port matches an unnamed slice port (the API's "")
    const plain = svc({
      ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }],
      endpoints: [ep('10.1.0.2', [{ port: 8080, protocol: 'TCP' }])],
    });
    expect(at(desiredServices(snap([plain])).services.get('10.96.0.10:80/6'))).toEqual(['10.1.0.2:8080']);
    // one port without endpoints is rejected while another of the same Service has them
    const half = svc({ endpoints: [ep('10.1.0.2', [HTTP])] });
    expect(at(desiredServices(snap([half])).services.get('10.96.0.10:80/6'))).toEqual(['10.1.0.2:8080']);
    expect(desiredServices(snap([half])).services.get('10.96.0.10:53/17')).toMatchObject({ backends: [], left: 'no_endpoints' });
  });

  it('an address and port listed twice (two slices) is one endpoint: the non-terminating copy wins whatever the order (kube-proxy)', () => {
    const ports = [{ name: 'http', port: 80, protocol: 'TCP' as const, targetPort: 'http' }];
    const want = (endpoints: Ep[]) => desiredServices(snap([svc({ ports, endpoints })])).services.get('10.96.0.10:80/6')!;
    const ready = ep('10.1.0.2', [HTTP]);
    const terminating = ep('10.1.0.2', [HTTP], { ready: false, terminating: true });
    const starting = ep('10.1.0.2', [HTTP], { ready: false });
    const other = ep('10.1.0.3', [HTTP], { ready: false, terminating: true });
    // a rollout: ready in one slice, terminating in the other → used once
    expect(at(want([ready, terminating, other]))).toEqual(['10.1.0.2:8080']);
    expect(at(want([terminating, ready, other]))).toEqual(['10.1.0.2:8080']);
    // an IP reused while the old pod terminates: the new (not yet ready) pod's copy counts, so the
    // terminating copy is no fallback; only the other serving-terminating endpoint is
    for (const order of [
      [starting, terminating, other],
      [terminating, starting, other],
    ])
      expect(at(want(order))).toEqual(['10.1.0.3:8080']);
    expect(want([terminating, starting])).toMatchObject({ backends: [], left: 'no_endpoints' });
    expect(at(want([terminating]))).toEqual(['10.1.0.2:8080']);
    // the same address with two port numbers (two slices of one port name) is two endpoints
    expect(at(want([ready, ep('10.1.0.2', [{ ...HTTP, port: 8081 }])]))).toEqual(['10.1.0.2:8080', '10.1.0.2:8081']);
    // the winning copy is the whole endpoint: its node decides Local policy
    const local = (endpoints: Ep[]) =>
      desiredServices({ services: [svc({ ports, internalTrafficPolicy: 'Local', endpoints })], node: 'n1' }).services.get(
        '10.96.0.10:80/6',
      )!;
    expect(
      local([
        { ...terminating, nodeName: 'n1' },
        { ...ready, nodeName: 'n2' },
      ]),
    ).toMatchObject({ backends: [], left: 'no_local_endpoints' });
  });

  it('portEndpoints(): a terminating copy never replaces one already there, a non-terminating one always does', () => {
    const t = (serving: boolean) => ep('10.1.0.2', [HTTP], { ready: false, terminating: true, serving });
    const sp = { name: 'http', protocol: 'TCP' as const };
    expect(portEndpoints([t(true), t(false)], sp).endpoints).toEqual([{ ...t(true), port: 8080 }]);
    expect(portEndpoints([t(false), t(true)], sp).endpoints).toEqual([{ ...t(false), port: 8080 }]);
    const a = ep('10.1.0.2', [HTTP], { nodeName: 'a' });
    const b = ep('10.1.0.2', [HTTP], { nodeName: 'b' });
    expect(portEndpoints([a, t(true), b], sp)).toEqual({ endpoints: [{ ...b, port: 8080 }], unmatched: [] });
  });
});

describe('usableEndpoints(): the endpoints kube-proxy would use (pkg/proxy/topology.go)', () => {
  type Ep = Service['endpoints'][number];
  const ep = (ip: string, over: Partial<Ep> = {}): Ep => ({ ip, ready: true, terminating: false, ports: [], ...over });
  const ips = (r: { endpoints: Ep[] }) => r.endpoints.map((e) => e.ip);
  const here = { name: 'n1', zone: 'a' };
  const terminatingServing = { ready: false, terminating: true }; // what the controller writes for a terminating ready pod

  it('ready means ready, terminating or not (publishNotReadyAddresses: the controller marks every endpoint ready)', () => {
    const r = usableEndpoints(
      { endpoints: [ep('10.0.0.1'), ep('10.0.0.2', { terminating: true }), ep('10.0.0.3', { ready: false })] },
      here,
    );
    expect(ips(r)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(r.left).toBeUndefined();
  });
  it('no ready endpoint: the serving-and-terminating ones (KEP-1669); not serving or not terminating ones never', () => {
    const eps = [
      ep('10.0.0.1', terminatingServing),
      ep('10.0.0.2', { ...terminatingServing, serving: false }),
      ep('10.0.0.3', { ready: false }),
    ];
    expect(ips(usableEndpoints({ endpoints: eps }, here))).toEqual(['10.0.0.1']);
    expect(ips(usableEndpoints({ endpoints: [...eps, ep('10.0.0.4')] }, here))).toEqual(['10.0.0.4']);
    expect(usableEndpoints({ endpoints: eps.slice(1) }, here)).toEqual({ endpoints: [], left: 'no_endpoints' });
  });
  it("internalTrafficPolicy Local: this node's ready endpoints, else its serving-terminating ones, else none (kube-proxy drops)", () => {
    const local = (endpoints: Ep[]) => usableEndpoints({ internalTrafficPolicy: 'Local', endpoints }, here);
    const n1 = { nodeName: 'n1' };
    const n2 = { nodeName: 'n2' };
    expect(ips(local([ep('10.0.0.1', n1), ep('10.0.0.2', n2), ep('10.0.0.3', { ...n1, ready: false })]))).toEqual(['10.0.0.1']);
    expect(ips(local([ep('10.0.0.1', { ...n1, ...terminatingServing }), ep('10.0.0.2', n2)]))).toEqual(['10.0.0.1']);
    expect(local([ep('10.0.0.2', n2), ep('10.0.0.3')])).toEqual({ endpoints: [], left: 'no_local_endpoints' });
    expect(local([ep('10.0.0.2', { ...n2, ...terminatingServing })])).toEqual({ endpoints: [], left: 'no_local_endpoints' });
    expect(local([ep('10.0.0.1', { ...n1, ready: false })])).toEqual({ endpoints: [], left: 'no_endpoints' });
    // without a node name nothing is local
    expect(usableEndpoints({ internalTrafficPolicy: 'Local', endpoints: [ep('10.0.0.1', n1)] }, {}).left).toBe('no_local_endpoints');
    // topology hints do not apply to Local
    expect(ips(local([ep('10.0.0.1', { ...n1, forZones: ['b'] }), ep('10.0.0.2', { ...n2, forZones: ['a'] })]))).toEqual(['10.0.0.1']);
  });
  it('zone hints (PreferClose): only when every ready endpoint has one and some name this zone; else every ready endpoint', () => {
    const z = (zones: string[], over: Partial<Ep> = {}) => ({ forZones: zones, ...over });
    const use = (endpoints: Ep[], node: { name?: string; zone?: string } = here) => ips(usableEndpoints({ endpoints }, node));
    const hinted = [ep('10.0.0.1', z(['a'])), ep('10.0.0.2', z(['b'])), ep('10.0.0.3', z(['a', 'c']))];
    expect(use(hinted)).toEqual(['10.0.0.1', '10.0.0.3']);
    expect(use(hinted, { name: 'n1', zone: 'b' })).toEqual(['10.0.0.2']);
    // no endpoint for this zone → all
    expect(use(hinted, { name: 'n1', zone: 'd' })).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    // the node has no zone label → all
    expect(use(hinted, { name: 'n1' })).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    // one ready endpoint without a hint → all
    expect(use([...hinted, ep('10.0.0.4')])).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']);
    // a not-ready endpoint without hints does not count; terminating fallback ignores hints
    expect(use([...hinted, ep('10.0.0.4', { ready: false })])).toEqual(['10.0.0.1', '10.0.0.3']);
    expect(use([ep('10.0.0.1', z(['b'], terminatingServing)), ep('10.0.0.2', z(['a'], terminatingServing))])).toEqual([
      '10.0.0.1',
      '10.0.0.2',
    ]);
  });
  it('node hints (PreferSameNode, KEP-3015) win over zone hints when every ready endpoint has one and one names this node', () => {
    const h = (nodes: string[], zones: string[]) => ({ forNodes: nodes, forZones: zones });
    const eps = [ep('10.0.0.1', h(['n1'], ['a'])), ep('10.0.0.2', h(['n2'], ['a'])), ep('10.0.0.3', h(['n3'], ['b']))];
    expect(ips(usableEndpoints({ endpoints: eps }, here))).toEqual(['10.0.0.1']);
    expect(ips(usableEndpoints({ endpoints: eps }, { name: 'n9', zone: 'a' }))).toEqual(['10.0.0.1', '10.0.0.2']);
  });
  it('desiredServices() marks a frontend without backends with the reason and uses the node from the snapshot', () => {
    const s = svc({
      internalTrafficPolicy: 'Local',
      endpoints: [
        { ip: '10.1.0.2', ready: true, terminating: false, nodeName: 'n2', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] },
      ],
    });
    expect(desiredServices({ services: [s], node: 'n1' }).services.get('10.96.0.10:80/6')).toMatchObject({
      backends: [],
      left: 'no_local_endpoints',
    });
    expect(desiredServices({ services: [s], node: 'n2' }).services.get('10.96.0.10:80/6')!.backends).toEqual([
      { ip: '10.1.0.2', port: 8080, proto: 6 },
    ]);
    expect(desiredServices({ services: [svc({ endpoints: [] })] }).services.get('10.96.0.10:53/17')).toMatchObject({
      left: 'no_endpoints',
    });
  });
});

describe('external IPs and LoadBalancer IPs dialled from a pod (kube-proxy short-circuit)', () => {
  type Ep = Service['endpoints'][number];
  const http = [{ name: 'http', port: 8080, protocol: 'TCP' as const }];
  const ep = (ip: string, over: Partial<Ep> = {}): Ep => ({ ip, ready: true, terminating: false, ports: http, ...over });
  const ext = (over: Partial<Service> = {}) =>
    svc({
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }],
      externalIPs: ['192.0.2.10'],
      loadBalancerIngress: [{ ip: '198.51.100.1' }],
      externalTrafficPolicy: 'Local',
      endpoints: [ep('10.1.0.2', { nodeName: 'n2' }), ep('10.1.0.3', { nodeName: 'n3' })],
      ...over,
    });
  const want = (s: Service, node = 'n1') => desiredServices({ services: [s], node }).services;
  const ips = (d: DesiredService | undefined) => d?.backends.map((b) => b.ip);

  it('every address × port is a frontend of its kind; an address listed twice is one frontend (ClusterIP, externalIPs, ingress first)', () => {
    const w = want(ext({ ports: [...ext().ports, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }] }));
    expect([...w.values()].map((d) => [feKey(d.fe), d.kind])).toEqual([
      ['10.96.0.10:80/6', 'cluster'],
      ['10.96.0.10:53/17', 'cluster'],
      ['192.0.2.10:80/6', 'external_ip'],
      ['192.0.2.10:53/17', 'external_ip'],
      ['198.51.100.1:80/6', 'lb_ingress'],
      ['198.51.100.1:53/17', 'lb_ingress'],
    ]);
    expect(
      serviceAddresses({
        clusterIP: '10.96.0.10',
        externalIPs: ['192.0.2.10', '10.96.0.10', '192.0.2.10'],
        loadBalancerIngress: [{ ip: '192.0.2.10', ipMode: 'Proxy' }, { ip: '198.51.100.1' }],
        externalTrafficPolicy: 'Local',
      }),
    ).toEqual([
      { ip: '10.96.0.10', kind: 'cluster' },
      { ip: '192.0.2.10', kind: 'external_ip' },
      { ip: '198.51.100.1', kind: 'lb_ingress' },
    ]);
  });
  it('externalTrafficPolicy Local: a pod reaches the Cluster-policy endpoints (all ready ones, topology hints applied), not only local ones', () => {
    const w = want(ext());
    expect(ips(w.get('192.0.2.10:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
    expect(ips(w.get('198.51.100.1:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
    expect(w.get('192.0.2.10:80/6')!.backends[0]!.port).toBe(8080);
    // zone hints: the same narrowing as the ClusterIP with Cluster policy
    const hinted = ext({ endpoints: [ep('10.1.0.2', { forZones: ['a'] }), ep('10.1.0.3', { forZones: ['b'] })] });
    expect(ips(desiredServices({ services: [hinted], node: 'n1', zone: 'b' }).services.get('192.0.2.10:80/6'))).toEqual(['10.1.0.3']);
    // no ready endpoint: the serving-and-terminating ones (KEP-1669)
    const term = ext({ endpoints: [ep('10.1.0.2', { ready: false, terminating: true }), ep('10.1.0.3', { ready: false })] });
    expect(ips(want(term).get('192.0.2.10:80/6'))).toEqual(['10.1.0.2']);
  });
  it('internalTrafficPolicy Local too: the ClusterIP gets only local endpoints (none here: dropped), the external addresses still every endpoint', () => {
    const w = want(ext({ internalTrafficPolicy: 'Local' }));
    expect(w.get('10.96.0.10:80/6')).toMatchObject({ backends: [], left: 'no_local_endpoints' });
    expect(ips(w.get('192.0.2.10:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
    expect(w.get('192.0.2.10:80/6')!.left).toBeUndefined();
    const here = want(ext({ internalTrafficPolicy: 'Local' }), 'n3');
    expect(ips(here.get('10.96.0.10:80/6'))).toEqual(['10.1.0.3']);
    expect(ips(here.get('198.51.100.1:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
  });
  it('no usable endpoint: every frontend is left with no_endpoints (kube-proxy REJECTs external destinations too)', () => {
    const w = want(ext({ endpoints: [ep('10.1.0.2', { ready: false })] }));
    for (const k of ['10.96.0.10:80/6', '192.0.2.10:80/6', '198.51.100.1:80/6'])
      expect(w.get(k), k).toMatchObject({ backends: [], left: 'no_endpoints' });
  });
  it('left alone: externalTrafficPolicy Cluster (kube-proxy masquerades), ipMode Proxy, LoadBalancer IPs with source ranges', () => {
    const cluster = want(ext({ externalTrafficPolicy: undefined }));
    expect(ips(cluster.get('10.96.0.10:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
    expect(cluster.get('192.0.2.10:80/6')).toMatchObject({ backends: [], left: 'external_masquerade', kind: 'external_ip' });
    expect(cluster.get('198.51.100.1:80/6')).toMatchObject({ backends: [], left: 'external_masquerade', kind: 'lb_ingress' });
    const proxy = want(ext({ loadBalancerIngress: [{ ip: '198.51.100.1', ipMode: 'Proxy' }] }));
    expect(proxy.get('198.51.100.1:80/6')).toMatchObject({ backends: [], left: 'ip_mode_proxy' });
    expect(ips(proxy.get('192.0.2.10:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
    // ipMode Proxy is left even with externalTrafficPolicy Cluster: kube-proxy writes no rule at all for it
    expect(
      want(ext({ externalTrafficPolicy: undefined, loadBalancerIngress: [{ ip: '198.51.100.1', ipMode: 'Proxy' }] })).get(
        '198.51.100.1:80/6',
      )!.left,
    ).toBe('ip_mode_proxy');
    const ranges = want(ext({ loadBalancerSourceRanges: ['10.0.0.0/8'] }));
    expect(ranges.get('198.51.100.1:80/6')).toMatchObject({ backends: [], left: 'source_ranges' });
    // the firewall is for LoadBalancer IPs only
    expect(ips(ranges.get('192.0.2.10:80/6'))).toEqual(['10.1.0.2', '10.1.0.3']);
  });
  it("kube-proxy's masqueradeAll: every frontend of every kind is left with masquerade_all, none gets a backend", () => {
    const w = desiredServices({ services: [ext()], node: 'n1', masqueradeAll: true }).services;
    expect(new Set([...w.values()].map((d) => d.kind))).toEqual(new Set(['cluster', 'external_ip', 'lb_ingress']));
    for (const [k, d] of w) expect(d, k).toMatchObject({ backends: [], left: 'masquerade_all' });
    // off (or unset), the same Services are translated
    expect(ips(desiredServices({ services: [ext()], node: 'n1', masqueradeAll: false }).services.get('10.96.0.10:80/6'))).toEqual([
      '10.1.0.2',
      '10.1.0.3',
    ]);
  });
  it('sessionAffinity applies to each frontend with the Service timeout', () => {
    const w = want(ext({ affinityTimeout: 60 }));
    expect([...w.values()].map((d) => d.affinity)).toEqual([60, 60, 60]);
  });
  it('the capacity check counts external frontends: one that does not fit is left out whole (named), the others written', () => {
    const w = want(ext());
    // ClusterIP + external IP + ingress: 3 masters + 6 slots
    expect(planServices(w, empty(), { svc: 9, backends: 10 }).dropped).toEqual([]);
    const p = planServices(w, empty(), { svc: 8, backends: 10 });
    expect(p.dropped).toEqual(['shop/web:http']);
    expect(p.mastersUpsert.map((m) => m.fe.ip)).toEqual(['10.96.0.10', '192.0.2.10']);
    expect(p.slotsUpsert).toHaveLength(4);
  });
});

describe('backend ids', () => {
  it('keeps existing ids and gives new addresses the smallest free ones', () => {
    const b = (ip: string): BackendAddr => ({ ip, port: 80, proto: 6 });
    const fe = { ip: '10.96.0.1', port: 80, proto: 6 as const };
    const have: ActualServices = {
      masters: new Map([[feKey(fe), { fe, count: 1 }]]),
      slots: new Map([[feKey(fe), new Map([[1, 1]])]]),
      backends: new Map([
        [1, b('10.0.0.2')],
        [2, b('10.9.9.9')],
      ]),
      matches: new Map(),
      serving: new Map(),
    };
    const want = new Map<string, DesiredService>([
      [feKey(fe), { fe, name: 'ns/a:80', kind: 'cluster', backends: [b('10.0.0.1'), b('10.0.0.2'), b('10.0.0.3')] }],
    ]);
    const p = planServices(want, have, BIG);
    expect(p.backendsUpsert).toEqual([
      { id: 3, b: b('10.0.0.1') },
      { id: 4, b: b('10.0.0.3') },
    ]);
    expect(p.slotsUpsert.map((x) => [x.slot, x.id])).toEqual([
      [1, 3],
      [2, 1],
      [3, 4],
    ]);
  });
  it('keys a backend address as one number, distinct per address, port and protocol', () => {
    const keys = [
      beKey({ ip: '255.255.255.255', port: 65535, proto: 17 }),
      beKey({ ip: '255.255.255.255', port: 65535, proto: 6 }),
      beKey({ ip: '0.0.0.1', port: 0, proto: 6 }),
      beKey({ ip: '0.0.0.0', port: 65535, proto: 17 }),
    ];
    expect(new Set(keys).size).toBe(4);
    expect(Math.max(...keys)).toBeLessThan(Number.MAX_SAFE_INTEGER);
  });
});

describe('planServices()', () => {
  it('writes everything from cold and nothing once converged', () => {
    const want = desiredServices(snap([svc()])).services;
    const p = planServices(want, empty(), BIG);
    expect(p.backendsUpsert).toHaveLength(5); // 2 TCP + 3 UDP addresses
    expect(p.mastersUpsert.map((m) => m.count).sort()).toEqual([2, 3]);
    expect(planServices(want, applied(empty(), p), BIG)).toEqual({
      ...p,
      backendsUpsert: [],
      slotsUpsert: [],
      mastersUpsert: [],
      servingUpsert: [],
      dropped: [],
    });
    expect(svcPlanSize(planServices(want, applied(empty(), p), BIG))).toBe(0);
  });

  it('shrinks a service: new slots, then the count, then prunes the slot and the backend', () => {
    const want1 = desiredServices(snap([svc()])).services;
    const have = applied(empty(), planServices(want1, empty(), BIG));
    const s2 = svc();
    s2.endpoints = s2.endpoints.filter((e) => e.ip !== '10.1.0.2');
    const p = planServices(desiredServices(snap([s2])).services, have, BIG);
    expect(p.mastersUpsert).toHaveLength(2);
    expect(p.mastersUpsert).toEqual(
      expect.arrayContaining([
        { fe: { ip: '10.96.0.10', port: 80, proto: 6 }, count: 1 },
        { fe: { ip: '10.96.0.10', port: 53, proto: 17 }, count: 2 },
      ]),
    );
    expect(p.slotsDelete.map((x) => `${x.fe.port}#${x.slot}`).sort()).toEqual(['53#3', '80#2']);
    expect(p.backendsDelete).toHaveLength(2); // 10.1.0.2:8081/tcp and 10.1.0.2:5353/udp
    // backends that stay keep their ids: no backend is rewritten
    expect(p.backendsUpsert).toEqual([]);
  });

  it('removes a service master first, then its slots and unreferenced backends', () => {
    const want = desiredServices(snap([svc()])).services;
    const have = applied(empty(), planServices(want, empty(), BIG));
    const p = planServices(new Map(), have, BIG);
    expect(p.mastersDelete).toHaveLength(2);
    expect(p.slotsDelete).toHaveLength(5);
    expect(p.backendsDelete).toHaveLength(5);
    expect(applied(have, p)).toEqual(empty());
  });

  it('leaves out whole services that would not fit, never half of one', () => {
    const a = svc({ name: 'a', clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }] });
    const b = svc({ name: 'b', clusterIP: '10.96.0.2', ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }] });
    const want = desiredServices(snap([a, b])).services;
    const p = planServices(want, empty(), { svc: 4, backends: 100 }); // room for one service (master + 2 slots)
    expect(p.dropped).toEqual(['shop/b:http']);
    expect(p.mastersUpsert).toEqual([{ fe: { ip: '10.96.0.1', port: 80, proto: 6 }, count: 2 }]);
    expect(p.slotsUpsert).toHaveLength(2);
  });
});

describe('planServices() with a scope (one changed Service at a time)', () => {
  const P = { name: 'p', port: 8080, protocol: 'TCP' as const };
  // a small deterministic PRNG so a failure is reproducible
  const rng = (seed: number) => () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const mk = (i: number, r: () => number, proto: 'TCP' | 'UDP' = r() < 0.3 ? 'UDP' : 'TCP'): Service => ({
    namespace: 'ns',
    name: `s${i}`,
    clusterIP: `10.96.0.${i}`,
    // some UDP: their serving endpoints (pw_udp_serve) follow the changes too
    ports: [{ name: 'p', port: 80, protocol: proto, targetPort: 8080 }],
    // some with ClientIP affinity, which may come and go with a change
    ...(r() < 0.4 ? { affinityTimeout: r() < 0.5 ? 10800 : 30 } : {}),
    // backends drawn from a small pool, so services share backends
    // some not ready (not serving, or serving while terminating); each lists the slice port of the service port
    endpoints: Array.from({ length: Math.floor(r() * 5) }, () => {
      const x = r();
      return {
        ip: `10.1.0.${1 + Math.floor(r() * 8)}`,
        ready: x >= 0.2,
        terminating: x < 0.1,
        ...(x < 0.2 ? { serving: x < 0.1 } : {}),
        ports: [{ ...P, protocol: proto }],
      };
    }),
  });

  it('keeps the mirror equal to a full pass through 300 random changes, pruning shared backends only when unused', () => {
    const r = rng(7);
    const services = new Map<number, Service>();
    for (let i = 1; i <= 12; i++) services.set(i, mk(i, r));
    const all = () => desiredServices(snap([...services.values()])).services;
    const have = empty();
    const index = indexServices(have);
    applyToMirror(have, index, planServices(all(), have, BIG, undefined, index));
    for (let step = 0; step < 300; step++) {
      const i = 1 + Math.floor(r() * 14);
      const before = services.get(i);
      if (r() < 0.2) services.delete(i);
      else services.set(i, mk(i, r));
      const scope = new Set<string>();
      for (const s of [before, services.get(i)]) if (s) for (const [k] of desiredServices(snap([s])).services) scope.add(k);
      const want = new Map<string, DesiredService>([...all()].filter(([k]) => scope.has(k)));
      const p = planServices(want, have, BIG, scope, index);
      applyToMirror(have, index, p);
      // the mirror is what a full read-back would hold: a full pass has nothing to do
      expect(svcPlanSize(planServices(all(), have, BIG)), `step ${step}`).toBe(0);
      expect(indexServices(have)).toEqual(index);
      // no backend without a slot pointing to it, no slot pointing to a missing backend
      const used = new Set([...have.slots.values()].flatMap((m) => [...m.values()]));
      expect([...have.backends.keys()].sort()).toEqual([...used].sort());
      // affinity matches: exactly the slots' backends of the frontends with affinity
      for (const [k, m] of have.masters) {
        const ids = [...(have.slots.get(k)?.values() ?? [])].sort();
        expect([...(have.matches.get(k) ?? [])].sort(), `step ${step} ${k}`).toEqual(m.affinity ? ids : []);
      }
      for (const k of have.matches.keys()) expect(have.masters.get(k)?.affinity).toBeGreaterThan(0);
      // serving endpoints: exactly those of the UDP frontends
      for (const [k, d] of all())
        expect([...(have.serving.get(k) ?? [])].sort(), `step ${step} ${k}`).toEqual([...(d.serving ?? [])].sort());
      for (const k of have.serving.keys()) expect(k.endsWith('/17')).toBe(true);
    }
  });

  it('touches only the changed frontend', () => {
    const a = {
      ...mk(1, rng(1)),
      ports: [{ name: 'p', port: 80, protocol: 'TCP' as const, targetPort: 8080 }],
      endpoints: ['10.1.0.1', '10.1.0.2'].map((ip) => ({ ip, ready: true, terminating: false, ports: [P] })),
    };
    const b = { ...mk(2, rng(2)), ports: a.ports, endpoints: a.endpoints };
    const have = empty();
    const index = indexServices(have);
    applyToMirror(have, index, planServices(desiredServices(snap([a, b])).services, have, BIG, undefined, index));
    const key = feKey({ ip: a.clusterIP, port: 80, proto: 6 });
    // a goes away: its master and slots go, the backends it shares with b stay
    const p = planServices(new Map(), have, BIG, new Set([key]), index);
    expect(p.mastersDelete.map((f) => f.ip)).toEqual([a.clusterIP]);
    expect(p.slotsDelete.every((s) => s.fe.ip === a.clusterIP)).toBe(true);
    expect(p.backendsDelete).toEqual([]);
    expect(p.slotsUpsert.length + p.mastersUpsert.length + p.backendsUpsert.length).toBe(0);
  });
});

describe('sessionAffinity ClientIP (pw_aff_match and the master entry)', () => {
  const one = (over: Partial<Service> = {}) =>
    svc({ ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], endpoints: [], ...over });
  const ep = (ip: string) => ({ ip, ready: true, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }] });
  const fe = { ip: '10.96.0.10', port: 80, proto: 6 as const };

  it('desiredServices() carries the timeout to every port of the Service; None carries nothing', () => {
    const d = desiredServices(snap([svc({ affinityTimeout: 600 })])).services;
    expect([...d.values()].map((x) => x.affinity)).toEqual([600, 600]);
    expect([...desiredServices(snap([svc()])).services.values()].every((x) => x.affinity === undefined)).toBe(true);
  });

  it('a UDP port with affinity is left to kube-proxy whole (udp_affinity: one memory for connected and unconnected sockets); a TCP port is translated', () => {
    const ports = [
      { name: 'dns', port: 53, protocol: 'UDP' as const, targetPort: 5353 },
      { name: 'dns-tcp', port: 53, protocol: 'TCP' as const, targetPort: 5353 },
    ];
    const endpoints = ['10.1.0.1', '10.1.0.2'].map((ip) => ({
      ip,
      ready: true,
      terminating: false,
      ports: [
        { name: 'dns', port: 5353, protocol: 'UDP' as const },
        { name: 'dns-tcp', port: 5353, protocol: 'TCP' as const },
      ],
    }));
    const sticky = desiredServices(snap([svc({ ports, endpoints, affinityTimeout: 60 })])).services;
    expect(sticky.get('10.96.0.10:53/17')).toMatchObject({ backends: [], left: 'udp_affinity', affinity: 60 });
    expect(sticky.get('10.96.0.10:53/6')?.backends.map((b) => b.ip)).toEqual(['10.1.0.1', '10.1.0.2']);
    // without affinity the UDP port is translated
    const plain = desiredServices(snap([svc({ ports, endpoints })])).services;
    expect(plain.get('10.96.0.10:53/17')?.backends.map((b) => b.ip)).toEqual(['10.1.0.1', '10.1.0.2']);
    expect(plain.get('10.96.0.10:53/17')?.left).toBeUndefined();
  });

  it('writes a match per backend before the master, which carries the timeout', () => {
    const p = planServices(
      desiredServices(snap([one({ affinityTimeout: 10800, endpoints: [ep('10.1.0.1'), ep('10.1.0.2')] })])).services,
      empty(),
      BIG,
    );
    expect(p.mastersUpsert).toEqual([{ fe, count: 2, affinity: 10800 }]);
    expect(p.matchesUpsert).toEqual([
      { fe, id: 1 },
      { fe, id: 2 },
    ]);
    expect(applied(empty(), p).matches.get(feKey(fe))).toEqual(new Set([1, 2]));
  });

  it('a backend that leaves the Service loses its match in the same pass; the others keep theirs', () => {
    const want = (ips: string[], t?: number) =>
      desiredServices(snap([one({ ...(t ? { affinityTimeout: t } : {}), endpoints: ips.map(ep) })])).services;
    const have = applied(empty(), planServices(want(['10.1.0.1', '10.1.0.2', '10.1.0.3'], 60), empty(), BIG));
    const p = planServices(want(['10.1.0.1', '10.1.0.3'], 60), have, BIG);
    expect(p.matchesDelete).toEqual([{ fe, id: 2 }]);
    expect(p.matchesUpsert).toEqual([]);
    expect(p.backendsDelete).toEqual([2]);
    // a new timeout rewrites only the master entry
    const q = planServices(want(['10.1.0.1', '10.1.0.2', '10.1.0.3'], 5), have, BIG);
    expect(q.mastersUpsert).toEqual([{ fe, count: 3, affinity: 5 }]);
    expect(svcPlanSize(q)).toBe(1);
    // affinity switched off: master without timeout, every match removed
    const r = planServices(want(['10.1.0.1', '10.1.0.2', '10.1.0.3']), have, BIG);
    expect(r.mastersUpsert).toEqual([{ fe, count: 3 }]);
    expect(r.matchesDelete).toHaveLength(3);
    expect(applied(have, r).matches.size).toBe(0);
    // the Service deleted: its matches go with it
    expect(applied(have, planServices(new Map(), have, BIG))).toEqual(empty());
  });

  it('leaves out a Service whose matches would not fit pw_aff_match', () => {
    const p = planServices(
      desiredServices(snap([one({ affinityTimeout: 60, endpoints: [ep('10.1.0.1'), ep('10.1.0.2')] })])).services,
      empty(),
      { ...BIG, match: 1 },
    );
    expect(p.dropped).toEqual(['shop/web:http']);
    expect(svcPlanSize(p)).toBe(0);
  });
});

describe('unconnected UDP flow memory: the serving endpoints of UDP frontends (pw_udp_serve)', () => {
  const fe = { ip: '10.96.0.10', port: 53, proto: 17 as const };
  const dns = (endpoints: Service['endpoints'], over: Partial<Service> = {}) =>
    svc({ ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }], endpoints, ...over });
  // each endpoint lists the slice port of the service port's name and protocol
  const ep = (ip: string, over: Partial<Service['endpoints'][number]> = {}) => ({
    ip,
    ready: true,
    terminating: false,
    ports: [{ name: 'dns', port: 5353, protocol: 'UDP' as const }],
    ...over,
  });
  const want = (s: Service, node = 'node-a', zone = 'zone-a') => desiredServices({ services: [s], node, zone }).services;

  it("servingIPs(): every serving endpoint of the port by IP, as kube-proxy's conntrack cleanup keeps them (any node, hint, policy, terminating)", () => {
    const s = dns(
      [
        ep('10.1.0.9', { nodeName: 'node-b', forZones: ['zone-b'] }), // elsewhere, hinted elsewhere: serving
        ep('10.1.0.1', { nodeName: 'node-a', forZones: ['zone-a'] }),
        ep('10.1.0.3', { ready: false, terminating: true, serving: true }), // terminating while ready ones exist: serving
        ep('10.1.0.4', { ready: false, serving: false }), // not ready: not serving
        ep('10.1.0.5', { ready: false, terminating: true, serving: false }),
        ep('10.1.0.6', { ready: false }), // serving unset: the API's nil, true (kube-proxy: Serving == nil || *Serving)
        ep('10.1.0.1', { nodeName: 'node-a', forZones: ['zone-a'] }), // listed twice (another slice): once
      ],
      { internalTrafficPolicy: 'Local' },
    );
    expect(servingIPs(s, s.ports[0]!)).toEqual(['10.1.0.1', '10.1.0.3', '10.1.0.6', '10.1.0.9']);
    const d = want(s).get(feKey(fe))!;
    // new flows: only the local ready endpoint (Local policy); flows already on any serving one stay
    expect(d.backends.map((b) => b.ip)).toEqual(['10.1.0.1']);
    expect(d.serving).toEqual(['10.1.0.1', '10.1.0.3', '10.1.0.6', '10.1.0.9']);
    // an endpoint whose slice has no port of the service port's name is not the port's; TCP frontends carry no set
    const named = svc({
      endpoints: [ep('10.1.0.7', { ports: [] }), ep('10.1.0.8', { ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }] })],
    });
    const all = desiredServices(snap([named])).services;
    expect(all.get('10.96.0.10:80/6')!.serving).toBeUndefined();
    expect(servingIPs(named, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 'dns' })).toEqual(['10.1.0.8']);
  });

  it("a scale-up, another endpoint's readiness or a hint change touch only the entries of the endpoints that started or stopped serving", () => {
    const base = [ep('10.1.0.1', { forZones: ['zone-a'] }), ep('10.1.0.2', { forZones: ['zone-a'] })];
    const have = applied(empty(), planServices(want(dns(base)), empty(), BIG));
    expect(have.serving.get(feKey(fe))).toEqual(new Set(['10.1.0.1', '10.1.0.2']));
    // scale-up: one entry added, before the master that counts the new slot (ServiceMaps.apply's order)
    const up = planServices(want(dns([...base, ep('10.1.0.3', { forZones: ['zone-a'] })])), have, BIG);
    expect({ add: up.servingUpsert, del: up.servingDelete }).toEqual({ add: [{ fe, ip: '10.1.0.3' }], del: [] });
    // another endpoint not ready (the controller sets serving false with it): its entry alone goes, in the prune
    const flip = planServices(want(dns([base[0]!, ep('10.1.0.2', { ready: false, serving: false })])), have, BIG);
    expect({ add: flip.servingUpsert, del: flip.servingDelete }).toEqual({ add: [], del: [{ fe, ip: '10.1.0.2' }] });
    // hints move new flows to 10.1.0.2 only: the slots change, the serving set does not
    const hint = planServices(want(dns([ep('10.1.0.1', { forZones: ['zone-b'] }), base[1]!])), have, BIG);
    expect(hint.mastersUpsert).toEqual([{ fe, count: 1 }]);
    expect({ add: hint.servingUpsert, del: hint.servingDelete }).toEqual({ add: [], del: [] });
    // terminating but serving while another is ready: out of the slots, still serving
    const term = planServices(want(dns([base[0]!, ep('10.1.0.2', { ready: false, terminating: true, serving: true })])), have, BIG);
    expect(term.mastersUpsert).toEqual([{ fe, count: 1 }]);
    expect({ add: term.servingUpsert, del: term.servingDelete }).toEqual({ add: [], del: [] });
    // the Service deleted: its entries go with it
    expect(applied(have, planServices(new Map(), have, BIG))).toEqual(empty());
  });

  it("`dump udpflows` applies pw_lb.h's idle timeout: 30 s, 120 s once answered and older than 2 s at its last use", () => {
    const S = 1_000_000_000n;
    expect(udpFlowTimeoutNs(1, 0n, 100n * S)).toBe(30n * S); // opened
    expect(udpFlowTimeoutNs(2, 0n, 2n * S)).toBe(30n * S); // answered within its first 2 s
    expect(udpFlowTimeoutNs(2, 0n, 2n * S + 1n)).toBe(120n * S);
  });

  it('leaves out a Service whose serving endpoints would not fit pw_udp_serve', () => {
    const p = planServices(want(dns([ep('10.1.0.1'), ep('10.1.0.2')])), empty(), { ...BIG, serving: 1 });
    expect(p.dropped).toEqual(['shop/web:dns']);
    expect(svcPlanSize(p)).toBe(0);
  });
});
