import { describe, expect, it } from 'vitest';
import { desired, withServiceOutcome } from '../../src/pods/desired.js';
import type { NodeFacts } from '../../src/facts/gather.js';
import { EP_FLAGS } from '../../abi/schema.js';
import type { Pod, Snapshot } from '../../src/model.js';
import { plan, planSize, type ActualState } from '../../src/pods/plan.js';

const pod = (ns: string, name: string, ip: string | undefined, iface: string | undefined, extra: Partial<Pod> = {}): Pod => ({
  namespace: ns,
  name,
  ip,
  hostInterface: iface,
  podInterface: 'eth0',
  hostNetwork: false,
  sidecar: false,
  labels: {},
  annotations: {},
  ...extra,
});

const snap: Snapshot = {
  namespaces: [
    { name: 'on', accelerate: true, labels: {} },
    { name: 'off', accelerate: false, labels: {} },
  ],
  pods: [
    pod('on', 'a', '10.0.0.2', 'v2'),
    pod('on', 'b', '10.0.0.3', 'v3', { labels: { role: 'db' } }),
    pod('on', 'c', '10.0.0.4', 'v4', { annotations: { 'podwarp.io/accelerate': 'false' } }),
    pod('off', 'd', '10.0.0.5', 'v5'),
    pod('on', 'host', '192.168.1.1', undefined, { hostNetwork: true }),
    pod('on', 'pending', undefined, undefined),
    pod('on', 'nofacts', '10.0.0.9', 'v9'),
  ],
  networkPolicies: [{ namespace: 'on', name: 'db-only', matchLabels: { role: 'db' } }],
  services: [],
};

const facts: NodeFacts = {
  pods: new Map(
    ['a', 'b', 'c', 'd'].map((n, i) => [
      `${n === 'd' ? 'off' : 'on'}/${n}`,
      { ifindex: 10 + i, hostInterface: `v${i + 2}`, mac: `02:00:00:00:00:0${i}`, gwMac: 'ee:ee:ee:ee:ee:ee' },
    ]),
  ),
  missing: new Map([['on/nofacts', 'host interface v9 not found']]),
};

describe('desired()', () => {
  const d = desired(snap, facts);
  it('enables only pods of enabled namespaces that are not opted out or policy-selected', () => {
    expect(d.endpoints.get('10.0.0.2')!.flags).toBe(EP_FLAGS.ENABLED);
    expect(d.endpoints.get('10.0.0.3')!.flags).toBe(0);
    expect(d.endpoints.get('10.0.0.4')!.flags).toBe(0);
    expect(d.endpoints.get('10.0.0.5')!.flags).toBe(0);
    expect(Object.fromEntries(d.disabled)).toEqual({ 'on/b': 'policy-selected', 'on/c': 'opted-out', 'off/d': 'namespace-off' });
  });
  it('never makes hostNetwork, IP-less or fact-less pods endpoints', () => {
    expect([...d.endpoints.keys()].sort()).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
    expect(Object.fromEntries(d.skipped)).toEqual({ 'on/host': 'host-network', 'on/pending': 'no-ip', 'on/nofacts': 'facts-missing' });
  });
  it('attaches to the host veth of every endpoint', () => {
    expect(Object.fromEntries(d.attach)).toEqual({ v2: 10, v3: 11, v4: 12, v5: 13 });
  });
  it('is deterministic (pure)', () => {
    expect(desired(snap, facts)).toEqual(d);
  });
});

describe('plan()', () => {
  const want = desired(snap, facts);
  const converged: ActualState = {
    endpoints: new Map([...want.endpoints].map(([ip, e]) => [ip, { ip, ifindex: e.ifindex, flags: e.flags, mac: e.mac, gwMac: e.gwMac }])),
    ifaces: [...want.attach].map(([name, ifindex]) => ({ name, ifindex, flags: 1, present: true, attached: true })),
    cgroups: [...want.cgroups].map(([path, hooks]) => ({ path, present: true, hooks })),
    config: want.config,
  };

  it('is empty when the maps already hold the desired state', () => {
    expect(planSize(plan(want, converged))).toBe(0);
  });

  it('writes only what differs', () => {
    const have: ActualState = { ...converged, endpoints: new Map(converged.endpoints) };
    have.endpoints.set('10.0.0.2', { ...have.endpoints.get('10.0.0.2')!, flags: 0 });
    have.endpoints.set('10.9.9.9', { ip: '10.9.9.9', ifindex: 99, flags: 1, mac: '02:00:00:00:00:99', gwMac: 'ee:ee:ee:ee:ee:ee' });
    const p = plan(want, have);
    expect(p.upsert.map((e) => e.ip)).toEqual(['10.0.0.2']);
    expect(p.delete).toEqual(['10.9.9.9']);
    expect(p.attach).toEqual([]);
  });

  it('re-attaches a missing filter and detaches interfaces no longer wanted or gone', () => {
    const have: ActualState = {
      ...converged,
      ifaces: [
        ...converged.ifaces.map((i) => (i.name === 'v3' ? { ...i, attached: false } : i)),
        { name: 'old', ifindex: 50, flags: 0, present: true, attached: true },
        { name: 'v5', ifindex: 77, flags: 0, present: false, attached: false },
      ],
    };
    const p = plan(want, have);
    expect(p.attach).toEqual([{ name: 'v3', ifindex: 11 }]);
    expect(p.detach.map((i) => `${i.name}:${i.ifindex}`).sort()).toEqual(['old:50', 'v5:77']);
  });

  it('deletes every endpoint when the snapshot is empty', () => {
    const p = plan(desired({ ...snap, pods: [] }, { pods: new Map(), missing: new Map() }), converged);
    expect(p.delete.sort()).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
    expect(p.detach).toHaveLength(4);
    // the only enabled pod's sockets are drained before its entry goes
    expect(p.drainIps).toEqual(['10.0.0.2']);
  });

  it('attaches socket programs to enabled pods with a cgroup, and detaches when the namespace goes off', () => {
    const withCg: Snapshot = { ...snap, pods: snap.pods.map((p) => ({ ...p, cgroup: `/pods/${p.name}` })) };
    const on = desired(withCg, facts);
    expect(Object.fromEntries(on.cgroups)).toEqual({ '/pods/a': 9 }); // sock_ops | lb
    const withSidecar = desired({ ...withCg, pods: withCg.pods.map((p) => (p.name === 'a' ? { ...p, sidecar: true } : p)) }, facts);
    expect(Object.fromEntries(withSidecar.cgroups)).toEqual({ '/pods/a': 7 }); // sock_ops | connect4 | getsockopt: no socket LB in a sidecar pod
    expect(Object.fromEntries(desired(withCg, facts, { sockmap: false }).cgroups)).toEqual({ '/pods/a': 8 }); // lb only
    expect(desired(withCg, facts, { sockmap: false, lb: false }).cgroups.size).toBe(0);
    const have: ActualState = { ...converged, cgroups: [{ path: '/pods/a', present: true, hooks: 9 }] };
    expect(plan(on, have).cgroups).toEqual([]);
    const off = desired({ ...withCg, namespaces: withCg.namespaces.map((n) => ({ ...n, accelerate: false })) }, facts);
    const p = plan(off, have);
    expect(p.cgroups).toEqual([{ path: '/pods/a', hooks: 0 }]);
    expect(p.drainIps).toEqual(['10.0.0.2']);
    // a hook someone detached behind our back is put back
    expect(plan(on, { ...have, cgroups: [{ path: '/pods/a', present: true, hooks: 0 }] }).cgroups).toEqual([{ path: '/pods/a', hooks: 9 }]);
    // a vanished cgroup is set again (the loader forgets it, or reports it while still wanted)
    expect(plan(on, { ...have, cgroups: [{ path: '/pods/a', present: false, hooks: 0 }] }).cgroups).toEqual([
      { path: '/pods/a', hooks: 9 },
    ]);
    expect(plan(off, { ...have, cgroups: [{ path: '/pods/a', present: false, hooks: 0 }] }).cgroups).toEqual([
      { path: '/pods/a', hooks: 0 },
    ]);
  });

  it('carries sidecar settings into pw_config, excluded ports de-duplicated and bounded', () => {
    const d = desired(snap, facts, { sockmap: true, proxyUid: 1000, proxyGid: 1001, proxyPort: 15100, excludedPorts: [443, 22, 443] });
    expect(d.config).toEqual({
      flags: 1,
      proxyUid: 1000,
      proxyGid: 1001,
      proxyPort: 15100,
      bulkBytes: 0,
      excludedPorts: [22, 443],
      svcDropped: 0,
    });
    expect(desired(snap, facts).config.proxyGid).toBe(1337);
    expect(() => desired(snap, facts, { sockmap: true, excludedPorts: [1, 2, 3, 4, 5, 6, 7, 8, 9] })).toThrow(/at most 8/);
  });

  it('lets UDP skip the host only while every service is resolved at connect()', () => {
    const c = desired(snap, facts).config;
    expect(withServiceOutcome(c, { sockmap: true }, 0)).toMatchObject({ flags: 3, svcDropped: 0 });
    expect(withServiceOutcome(c, { sockmap: true }, 2)).toMatchObject({ flags: 1, svcDropped: 2 });
    expect(withServiceOutcome(c, { sockmap: true, lb: false }, 0).flags).toBe(1);
  });

  it('writes pw_config only when it differs', () => {
    expect(plan(want, converged).config).toBeUndefined();
    expect(plan(want, { ...converged, config: undefined }).config).toEqual(want.config);
    const noSock = desired(snap, facts, { sockmap: false });
    expect(plan(noSock, converged).config?.flags).toBe(0);
  });
});
