// ServiceSync against an in-memory "kernel": chunked full passes, scoped
// changes against the mirror, and a fresh read-back that agrees with both.
import { describe, expect, it } from 'vitest';
import type { Service } from '../../src/model.js';
import { MemoryServiceMaps } from '../doubles/memory-service-maps.js';
import { ServiceSync, svcOpsTotal } from '../../src/services/sync.js';

/**
 * The maps as the kernel would hold them: MemoryServiceMaps is a model of
 * pw_svc/pw_backends written entry by entry, sharing no code with the
 * planner or the mirror, and checking after every write what a concurrent
 * connect() relies on.
 */
function fakeKernel(capacity = { svc: 1 << 20, backends: 1 << 20 }) {
  const maps = new MemoryServiceMaps(capacity);
  return { maps, state: maps };
}

const svc = (i: number, ips: string[], port = 80): Service => ({
  namespace: 'ns',
  name: `s${i}`,
  clusterIP: `10.96.${i >> 8}.${i & 255}`,
  ports: [{ name: 'http', port, protocol: 'TCP', targetPort: 8080 }],
  endpoints: ips.map((ip) => ({ ip, ready: true, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }] })),
});
const many = (n: number) => Array.from({ length: n }, (_, i) => svc(i, [`10.1.${i >> 8}.${i & 255}`, '10.2.0.1']));

describe('ServiceSync', () => {
  it('resolves with its node (internalTrafficPolicy Local) and names the frontends left to kube-proxy, full and changed', async () => {
    const k = fakeKernel();
    const local = (i: number, nodes: string[]): Service => ({
      ...svc(i, []),
      internalTrafficPolicy: 'Local',
      endpoints: nodes.map((nodeName, j) => ({ ...svc(i, [`10.1.${i}.${j + 1}`]).endpoints[0]!, nodeName })),
    });
    const sync = new ServiceSync(k.maps, { name: 'n1' });
    const r = await sync.full([local(1, ['n1', 'n2']), local(2, ['n2']), svc(3, [])]);
    expect(r.left).toMatchObject({ no_endpoints: 1, no_local_endpoints: 1 });
    expect(sync.leftServices()).toEqual([
      { frontend: '10.96.0.2:80/6', name: 'ns/s2:http', reason: 'no_local_endpoints', kind: 'cluster' },
      { frontend: '10.96.0.3:80/6', name: 'ns/s3:http', reason: 'no_endpoints', kind: 'cluster' },
    ]);
    expect((await k.maps.read()).masters.get('10.96.0.1:80/6')?.count).toBe(1);
    expect((await k.maps.read()).masters.get('10.96.0.2:80/6')?.count).toBe(0);
    const c = await sync.changed(new Map([['ns/s2', local(2, ['n2', 'n1'])]]));
    expect(c.left).toMatchObject({ no_endpoints: 1, no_local_endpoints: 0 });
    expect((await k.maps.read()).masters.get('10.96.0.2:80/6')?.count).toBe(1);
    await sync.changed(new Map([['ns/s3', undefined]]));
    expect(sync.leftServices()).toEqual([]);
  });

  it('external IPs and LoadBalancer IPs: frontends with their kind, left ones with their reason; a change of policy or status moves them, a full pass prunes them', async () => {
    const k = fakeKernel();
    const ext = (over: Partial<Service> = {}): Service => ({
      ...svc(1, ['10.1.0.1']),
      externalIPs: ['192.0.2.10'],
      loadBalancerIngress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.2', ipMode: 'Proxy' }],
      externalTrafficPolicy: 'Local',
      ...over,
    });
    const sync = new ServiceSync(k.maps);
    const r = await sync.full([ext()]);
    const masters = async () => Object.fromEntries([...(await k.maps.read()).masters].map(([key, m]) => [key, m.count]));
    expect(await masters()).toEqual({ '10.96.0.1:80/6': 1, '192.0.2.10:80/6': 1, '198.51.100.1:80/6': 1, '198.51.100.2:80/6': 0 });
    expect(r.frontends).toBe(4);
    expect(r.left).toMatchObject({ ip_mode_proxy: 1 });
    expect(sync.kindCounts()).toEqual({ cluster: 1, external_ip: 1, lb_ingress: 2 });
    expect(sync.namedFrontends(2)).toEqual([
      { frontend: '192.0.2.10:80/6', name: 'ns/s1:http', kind: 'external_ip' },
      { frontend: '198.51.100.1:80/6', name: 'ns/s1:http', kind: 'lb_ingress' },
    ]);
    // externalTrafficPolicy Cluster: kube-proxy masquerades, so every external address is left to it
    const c = await sync.changed(new Map([['ns/s1', ext({ externalTrafficPolicy: undefined })]]));
    expect(c.left).toMatchObject({ external_masquerade: 2, ip_mode_proxy: 1 });
    expect(await masters()).toEqual({ '10.96.0.1:80/6': 1, '192.0.2.10:80/6': 0, '198.51.100.1:80/6': 0, '198.51.100.2:80/6': 0 });
    // the load balancer's status goes away: its frontends go with it
    await sync.changed(new Map([['ns/s1', ext({ loadBalancerIngress: undefined })]]));
    expect(await masters()).toEqual({ '10.96.0.1:80/6': 1, '192.0.2.10:80/6': 1 });
    expect(sync.leftServices()).toEqual([]);
    expect(k.maps.violation).toBeUndefined();
    // a restarted agent given the Service without externalIPs prunes that frontend at its full pass
    await new ServiceSync(k.maps).full([ext({ externalIPs: undefined, loadBalancerIngress: undefined })]);
    expect(await masters()).toEqual({ '10.96.0.1:80/6': 1 });
  });

  it('a chunked full pass writes everything; a second one (a restart) writes nothing', async () => {
    const k = fakeKernel();
    const r = await new ServiceSync(k.maps).full(many(250), 100);
    expect(r.frontends).toBe(250);
    expect(r.ops).toEqual({ backendsUpsert: 251, slotsUpsert: 500, mastersUpsert: 250, matchesUpsert: 0, servingUpsert: 0, deletes: 0 });
    const writes = k.state.writes;
    const again = await new ServiceSync(k.maps).full(many(250), 100);
    expect(svcOpsTotal(again.ops)).toBe(0);
    expect(k.state.writes).toBe(writes);
  });

  it('removes stale frontends and orphan backends found in the maps at a full pass', async () => {
    const k = fakeKernel();
    await new ServiceSync(k.maps).full(many(20));
    // what a crash between steps could leave: a backend nobody points to
    k.maps.backends.set(999, { ip: '10.9.9.9', port: 1, proto: 6 });
    const r = await new ServiceSync(k.maps).full(many(10));
    expect([...k.maps.svc.values()].filter((e) => e.slot === 0)).toHaveLength(10);
    expect(k.maps.backends.has(999)).toBe(false);
    expect(k.maps.violation).toBeUndefined();
    // 10 masters + 20 slots of the dropped services, their 10 own backends, and the orphan
    expect(r.ops.deletes).toBe(10 + 20 + 10 + 1);
  });

  it('scoped changes keep the mirror equal to a fresh read-back, including a ClusterIP handed from a deleted Service to a new one', async () => {
    const k = fakeKernel();
    const s = new ServiceSync(k.maps);
    await s.full(many(30));
    await s.changed(new Map([['ns/s3', svc(3, ['10.7.0.1'])]]));
    await s.changed(new Map([['ns/s4', undefined]]));
    // s5's ClusterIP is taken by a new Service before s5's deletion is seen
    const taker: Service = { ...svc(5, ['10.7.0.2']), name: 'taker' };
    await s.changed(new Map([['ns/taker', taker]]));
    await s.changed(new Map([['ns/s5', undefined]]));
    const fe5 = `${svc(5, []).clusterIP}:80/6`;
    expect((await k.maps.read()).masters.get(fe5)?.count).toBe(1);
    expect(k.maps.violation).toBeUndefined();
    const all = [...many(30).filter((x) => x.name !== 's4' && x.name !== 's3' && x.name !== 's5'), svc(3, ['10.7.0.1']), taker];
    const fresh = await new ServiceSync(k.maps).full(all);
    expect(svcOpsTotal(fresh.ops)).toBe(0);
  });

  it('after a failed write the next change reads everything back first', async () => {
    const k = fakeKernel();
    const s = new ServiceSync(k.maps);
    await s.full(many(5));
    k.state.failNext = true;
    await expect(s.changed(new Map([['ns/s1', svc(1, ['10.8.0.1'])]]))).rejects.toThrow('bpftool batch failed');
    expect(s.ready).toBe(false);
    await expect(s.changed(new Map())).rejects.toThrow(/before a full pass/);
    const r = await s.full(many(5).map((x) => (x.name === 's1' ? svc(1, ['10.8.0.1']) : x)));
    expect(r.ops.slotsUpsert).toBeGreaterThan(0);
    expect(s.ready).toBe(true);
  });

  it('ClientIP affinity: matches follow the backends through changes, never naming a missing backend, and a restart rewrites nothing', async () => {
    const k = fakeKernel();
    const s = new ServiceSync(k.maps);
    const sticky = (i: number, ips: string[], t = 10800): Service => ({ ...svc(i, ips), affinityTimeout: t });
    await s.full([sticky(1, ['10.1.0.1', '10.1.0.2', '10.1.0.3']), svc(2, ['10.1.0.1'])]);
    const ids = () => [...k.maps.matches.values()].map((m) => k.maps.backends.get(m.id)?.ip).sort();
    expect(ids()).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3']);
    expect((await k.maps.read()).masters.get('10.96.0.1:80/6')).toMatchObject({ count: 3, affinity: 10800 });
    await s.changed(new Map([['ns/s1', sticky(1, ['10.1.0.1', '10.1.0.4'], 30)]]));
    expect(ids()).toEqual(['10.1.0.1', '10.1.0.4']);
    expect((await k.maps.read()).masters.get('10.96.0.1:80/6')).toMatchObject({ count: 2, affinity: 30 });
    // affinity moves to the other Service, then s1 goes away
    await s.changed(new Map([['ns/s2', sticky(2, ['10.1.0.1'], 60)]]));
    await s.changed(new Map([['ns/s1', undefined]]));
    expect(ids()).toEqual(['10.1.0.1']);
    expect(k.maps.violation).toBeUndefined();
    const again = await new ServiceSync(k.maps).full([sticky(2, ['10.1.0.1'], 60)]);
    expect(svcOpsTotal(again.ops)).toBe(0);
    // None again: the master loses its timeout, the match goes
    const none = await s.changed(new Map([['ns/s2', svc(2, ['10.1.0.1'])]]));
    expect(none.ops).toMatchObject({ mastersUpsert: 1, deletes: 1 });
    expect(k.maps.matches.size).toBe(0);
    expect(k.maps.violation).toBeUndefined();
  });
});
