// Fail closed (issue 10, item 11): the apply step against a recording fake
// datapath. Removals go first and each on its own; a pod whose hooks cannot be
// attached is never written enabled, and never holds back another pod.
import { describe, expect, it } from 'vitest';
import { EP_FLAGS } from '../../abi/schema.js';
import type { Datapath } from '../../loader/datapath.js';
import { applyPlan, PodBackoff } from '../../src/pods/apply.js';
import { desired, withApplyOutcome } from '../../src/pods/desired.js';
import type { NodeFacts } from '../../src/facts/gather.js';
import type { Pod, Snapshot } from '../../src/model.js';
import { plan, type ActualState } from '../../src/pods/plan.js';

const pod = (name: string, ip: string, extra: Partial<Pod> = {}): Pod => ({
  namespace: 'ns',
  name,
  ip,
  hostInterface: `v-${name}`,
  podInterface: 'eth0',
  hostNetwork: false,
  sidecar: false,
  labels: { app: name },
  annotations: {},
  cgroup: `/pods/${name}`,
  ...extra,
});

const names = ['a', 'b', 'c', 'd'];
const pods = names.map((n, i) => pod(n, `10.0.0.${i + 2}`));
const facts: NodeFacts = {
  pods: new Map(
    names.map((n, i) => [`ns/${n}`, { ifindex: 10 + i, hostInterface: `v-${n}`, mac: `02:00:00:00:00:0${i}`, gwMac: 'ee:ee:ee:ee:ee:ee' }]),
  ),
  missing: new Map(),
};
const snap = (on: boolean, policyOn: string[] = []): Snapshot => ({
  namespaces: [{ name: 'ns', accelerate: on, labels: {} }],
  pods,
  networkPolicies: policyOn.map((n) => ({ namespace: 'ns', name: `np-${n}`, matchLabels: { app: n } })),
  services: [],
});

/** Records every call; `fail` makes a call throw when its description matches. */
function fakeDp(fail: (call: string) => boolean = () => false) {
  const calls: string[] = [];
  const entries = new Map<string, number>();
  const rec = async (c: string) => {
    calls.push(c);
    if (fail(c)) throw new Error(`injected: ${c}`);
  };
  const dp = {
    // no service maps pinned: the sessionAffinity hand-over (pw_lb_client, pw_affinity) has nothing to do
    pins: { hasMap: () => false },
    maps: {
      dump: async () => [],
      write: async (map: string, ups: { key: { ip: string }; value: { flags: number } }[], dels: { ip: string }[]) => {
        await rec(`write ${map} ${ups.map((u) => `${u.key.ip}=${u.value.flags}`).join(',')} -${dels.map((d) => d.ip).join(',')}`);
        if (map === 'pw_endpoints') {
          for (const u of ups) entries.set(u.key.ip, u.value.flags);
          for (const d of dels) entries.delete(d.ip);
        }
      },
    },
    tc: { attach: (dev: string) => rec(`tc attach ${dev}`), detach: (i: { name: string }) => rec(`tc detach ${i.name}`) },
    cgroups: { set: (path: string, hooks: number) => rec(`cgroup ${path}=${hooks}`) },
    sockets: {
      drain: async (sel: (k: { sip: string; dip: string }) => boolean) => {
        const ips = pods.map((p) => p.ip!).filter((ip) => sel({ sip: ip, dip: '0.0.0.0' }));
        await rec(`drain ${ips.join(',')}`);
        return { removed: 0, stuck: [] };
      },
    },
  };
  return { dp: dp as unknown as Datapath, calls, entries };
}

/** The actual state once `want` was applied whole. */
function converged(on: boolean): ActualState {
  const want = desired(snap(on), facts);
  return {
    endpoints: new Map([...want.endpoints].map(([ip, e]) => [ip, { ip, ifindex: e.ifindex, flags: e.flags, mac: e.mac, gwMac: e.gwMac }])),
    ifaces: [...want.attach].map(([name, ifindex]) => ({ name, ifindex, flags: 1, present: true, attached: true })),
    cgroups: [...want.cgroups].map(([path, hooks]) => ({ path, present: true, hooks })),
    config: want.config,
  };
}

const empty: ActualState = { endpoints: new Map(), ifaces: [], cgroups: [] };
const enabledIps = (entries: Map<string, number>) => [...entries].filter(([, f]) => f & EP_FLAGS.ENABLED).map(([ip]) => ip);

describe('applyPlan: fail closed', () => {
  it('one interface failing to attach leaves that pod disabled and enables every other pod', async () => {
    const f = fakeDp((c) => c === 'tc attach v-b');
    const r = await applyPlan(f.dp, plan(desired(snap(true), facts), empty));
    expect(enabledIps(f.entries).sort()).toEqual(['10.0.0.2', '10.0.0.4', '10.0.0.5']);
    expect(f.entries.get('10.0.0.3')).toBe(0); // present, disabled
    expect([...r.failed]).toEqual([['ns/b', expect.objectContaining({ reason: 'attach-failed', attempts: 1, backingOff: false })]]);
    // b's cgroup hooks were never attached (its tc step failed first); the others' were, before their entries
    expect(f.calls.filter((c) => c.startsWith('cgroup /pods/b=') && !c.endsWith('=0'))).toEqual([]);
    const enable = f.calls.findIndex((c) => c.startsWith('write pw_endpoints') && c.includes('10.0.0.2=1'));
    expect(f.calls.indexOf('cgroup /pods/a=9')).toBeLessThan(enable);
    expect(f.calls.indexOf('tc attach v-a')).toBeLessThan(enable);
  });

  it('a cgroup that cannot be hooked: the pod stays disabled, its partial hooks are taken off', async () => {
    const f = fakeDp((c) => c === 'cgroup /pods/c=9');
    const r = await applyPlan(f.dp, plan(desired(snap(true), facts), empty));
    expect(r.failed.get('ns/c')?.reason).toBe('cgroup-attach-failed');
    expect(f.entries.get('10.0.0.4')).toBe(0);
    expect(f.calls).toContain('cgroup /pods/c=0');
    expect(enabledIps(f.entries)).toHaveLength(3);
  });

  it('removals go first and each on its own: a policy disables a pod while another pod keeps failing', async () => {
    // a, c, d enabled; b failing (disabled)
    const have = converged(true);
    have.endpoints.set('10.0.0.3', { ...have.endpoints.get('10.0.0.3')!, flags: 0 });
    have.ifaces = have.ifaces.filter((i) => i.name !== 'v-b');
    have.cgroups = have.cgroups.filter((c) => c.path !== '/pods/b');
    // a NetworkPolicy now selects a; detaching a's cgroup hooks fails too
    const f = fakeDp((c) => c === 'tc attach v-b' || c === 'cgroup /pods/a=0');
    const p = plan(desired(snap(true, ['a']), facts), have);
    const r = await applyPlan(f.dp, p);
    expect(f.entries.get('10.0.0.2')).toBe(0);
    // the drain ran although the detach before it failed, and before any addition was tried
    const drainA = f.calls.indexOf('drain 10.0.0.2');
    expect(drainA).toBeGreaterThan(f.calls.indexOf('cgroup /pods/a=0'));
    expect(drainA).toBeLessThan(f.calls.indexOf('tc attach v-b'));
    expect(f.calls.findIndex((c) => c.includes('10.0.0.2=0'))).toBeLessThan(drainA);
    expect(r.errors.map((e) => e.step)).toEqual(['detach cgroup hooks of /pods/a']);
    expect(r.failed.get('ns/b')?.reason).toBe('attach-failed');
    expect(enabledIps(f.entries).sort()).toEqual([]); // only what this pass wrote: a and b disabled
  });

  it('a pod that was enabled and whose filter went missing and cannot be put back is disabled and drained', async () => {
    const have = converged(true);
    have.ifaces = have.ifaces.map((i) => (i.name === 'v-d' ? { ...i, attached: false } : i));
    const f = fakeDp((c) => c === 'tc attach v-d');
    const r = await applyPlan(f.dp, plan(desired(snap(true), facts), have));
    expect(r.failed.get('ns/d')?.reason).toBe('attach-failed');
    expect(f.entries.get('10.0.0.5')).toBe(0);
    expect(f.calls).toContain('cgroup /pods/d=0');
    expect(f.calls).toContain('drain 10.0.0.5');
  });

  it('retries with backoff: not before the delay, then again; success clears it', async () => {
    let now = 0;
    const b = new PodBackoff(1000, 30_000, () => now);
    const want = desired(snap(true), facts);
    let f = fakeDp((c) => c === 'tc attach v-b');
    await applyPlan(f.dp, plan(want, empty), b);
    now = 500;
    f = fakeDp((c) => c === 'tc attach v-b');
    const r = await applyPlan(f.dp, plan(want, empty), b);
    expect(f.calls).not.toContain('tc attach v-b');
    expect(r.failed.get('ns/b')).toMatchObject({ backingOff: true, reason: 'attach-failed' });
    expect(f.entries.get('10.0.0.3')).toBe(0);
    // backing off costs nothing once its entry is held disabled and its cgroup out of the ledger
    const held = converged(true);
    held.endpoints.set('10.0.0.3', { ...held.endpoints.get('10.0.0.3')!, flags: 0 });
    held.ifaces = held.ifaces.filter((i) => i.name !== 'v-b');
    held.cgroups = held.cgroups.filter((c) => c.path !== '/pods/b');
    f = fakeDp();
    expect((await applyPlan(f.dp, plan(want, held), b)).failed.get('ns/b')?.backingOff).toBe(true);
    expect(f.calls).toEqual([]);
    now = 1000;
    f = fakeDp((c) => c === 'tc attach v-b');
    expect((await applyPlan(f.dp, plan(want, empty), b)).failed.get('ns/b')).toMatchObject({ attempts: 2, retryInMs: 2000 });
    expect(b.nextRetryMs()).toBe(2000);
    now = 3000;
    f = fakeDp();
    expect((await applyPlan(f.dp, plan(want, empty), b)).failed.size).toBe(0);
    expect(f.entries.get('10.0.0.3')).toBe(EP_FLAGS.ENABLED);
    expect(b.nextRetryMs()).toBeUndefined();
  });

  it('a failing batch write falls back to one entry at a time', async () => {
    const f = fakeDp((c) => c.startsWith('write pw_endpoints') && c.includes(',')); // any multi-entry write
    const r = await applyPlan(f.dp, plan(desired(snap(true), facts), empty));
    expect(enabledIps(f.entries)).toHaveLength(4);
    expect(r.failed.size).toBe(0);
  });
  it('deleting entries: a failing batch falls back to one at a time, one bad entry keeps the others going', async () => {
    // c and d left the node; the batch delete fails, and so does c's own delete
    const have = converged(true);
    const gone = { ...snap(true), pods: pods.filter((x) => x.name !== 'c' && x.name !== 'd') };
    const f = fakeDp((c) => c.startsWith('write pw_endpoints  -') && c.includes('10.0.0.4'));
    for (const [ip, e] of have.endpoints) f.entries.set(ip, e.flags);
    const p = plan(desired(gone, facts), have);
    expect([...p.delete].sort()).toEqual(['10.0.0.4', '10.0.0.5']);
    const r = await applyPlan(f.dp, p);
    expect(f.entries.has('10.0.0.5')).toBe(false); // d deleted on its own
    expect(f.entries.has('10.0.0.4')).toBe(true); // c's delete failed, reported
    expect(r.errors.map((e) => e.step)).toEqual(['delete endpoint 10.0.0.4']);
    expect(enabledIps(f.entries).sort()).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4']);
  });
});

describe('withApplyOutcome: what a pass left', () => {
  it('a pod the apply step left off is disabled with its reason, its entry not enabled; the desired state stays as it was', async () => {
    const want = desired(snap(true), facts);
    want.partial.set('ns/b', 'mesh-sidecar');
    const before = structuredClone(want);
    const r = await applyPlan(fakeDp((c) => c === 'tc attach v-b').dp, plan(want, empty));
    const left = withApplyOutcome(want, r.failed);
    expect(left.disabled.get('ns/b')).toBe('attach-failed');
    expect(left.partial.has('ns/b')).toBe(false);
    expect(left.endpoints.get('10.0.0.3')!.flags).toBe(0);
    expect([...left.endpoints.values()].filter((e) => e.flags & EP_FLAGS.ENABLED).map((e) => e.pod)).toEqual(['ns/a', 'ns/c', 'ns/d']);
    expect(want).toEqual(before);
    expect(withApplyOutcome(want, new Map())).toBe(want);
  });
});
