// Sidecar acceleration with a transparent-proxy fixture that, like Envoy,
// asks SO_ORIGINAL_DST and forwards: connect4 capture, original destination
// from a map, no loop for the proxy's own connects, sockmap on both hops;
// and the iptables REDIRECT setup Istio uses today, for comparison.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as bpftool from '../../loader/bpftool.js';
import { cgroupPath } from '../../host/cgroup.js';
import * as iptables from '../../devtools/iptables.js';
import type { Snapshot } from '../../src/model.js';
import { sink, startProxy, startServer, type Server } from '../../devtools/perf.js';
import { reconcile } from '../../src/reconciler.js';
import { loadStateFile } from '../../src/state/load.js';
import { MESHED_PROGS, POD_PROGS, cgroupProgs, counters, delta, setUp, tearDown, type Env } from './helpers.js';

const PROXY_UID = 1337;
const PROXY_PORT = 15001;

describe('sidecar acceleration', () => {
  let env: Env | undefined;
  let base: Snapshot;
  let proxy: Server | undefined;
  const servers: Server[] = [];

  const accel = (on: boolean): Snapshot => ({ ...base, namespaces: base.namespaces.map((n) => ({ ...n, accelerate: on })) });

  beforeAll(async () => {
    env = await setUp({ pods: 3, namespaces: ['team-a', 'team-b'] });
    const snap = loadStateFile(env.m.stateFile).snapshot;
    base = { ...snap, pods: snap.pods.map((p) => (p.name === 'pod-0' ? { ...p, sidecar: true } : p)) };
    await reconcile(env.dp, accel(true));
    servers.push(await startServer(env.m.pods[1]!, 7500)); // team-b/pod-1
    servers.push(await startServer(env.m.pods[2]!, 7501)); // team-a/pod-2
    servers.push(await startServer(env.m.pods[0]!, 7502)); // the app pod itself (loopback target)
    proxy = await startProxy(env.m.pods[0]!, PROXY_PORT, PROXY_UID);
  });

  afterAll(async () => {
    if (env) await iptables.removeOutboundRedirect(env.m.pods[0]!.netns, PROXY_PORT, PROXY_UID);
    await proxy?.stop();
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('attaches connect4, connect6 and getsockopt only to the sidecar pod', async () => {
    const [app, other] = [env!.m.pods[0]!, env!.m.pods[1]!];
    const names = cgroupProgs;
    // no socket LB in a meshed pod (test/integration/mesh.test.ts)
    expect(await names(app.cgroup)).toEqual(MESHED_PROGS);
    expect(await names(other.cgroup)).toEqual(POD_PROGS);
  });

  it('hands the proxy the right original destination for every connection, without a loop', async () => {
    const app = env!.m.pods[0]!;
    const targets = Array.from(
      { length: 10 },
      (_, i) => (i % 2 ? [env!.m.pods[2]!.ip, 7501] : [env!.m.pods[1]!.ip, 7500]) as [string, number],
    );
    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    for (const [ip, port] of targets) {
      const r = await sink(app, ip, port, { bytes: 2 << 20, verify: true });
      expect(r.ok).toBe(true);
    }
    const c1 = await counters(env!.dp);
    const seen = proxy!.lines().slice(before);
    expect(seen).toEqual(targets.map(([ip, port]) => ({ odst: `${ip}:${port}`, ok: true, n: 0 })));
    const px = delta(c0, c1, 'pw_proxy_conn4');
    expect(px.redirected).toBe(10);
    expect(px.proxy_uid).toBe(10); // the proxy's own upstream connects were left alone
    expect(delta(c0, c1, 'pw_proxy_odst').answered).toBe(10);
    const ops = delta(c0, c1, 'pw_sockops');
    expect(ops.added_proxy).toBe(20); // app and proxy ends of each loopback leg
    expect(ops.odst_saved).toBe(10);
    expect(delta(c0, c1, 'pw_sk_msg').redirected).toBeGreaterThan(100);
  });

  it('leaves loopback destinations alone', async () => {
    const app = env!.m.pods[0]!;
    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    expect((await sink(app, '127.0.0.1', 7502, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    expect(proxy!.lines().length).toBe(before);
    expect(delta(c0, await counters(env!.dp), 'pw_proxy_conn4').loopback).toBe(1);
  });

  it('leaves excluded destination ports alone', async () => {
    await reconcile(env!.dp, accel(true), undefined, { sockmap: true, excludedPorts: [7501] });
    const app = env!.m.pods[0]!;
    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    expect((await sink(app, env!.m.pods[2]!.ip, 7501, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    expect((await sink(app, env!.m.pods[1]!.ip, 7500, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    const px = delta(c0, await counters(env!.dp), 'pw_proxy_conn4');
    expect(px.excluded_port).toBe(1);
    expect(px.redirected).toBe(1);
    expect(proxy!.lines().slice(before)).toEqual([{ odst: `${env!.m.pods[1]!.ip}:7500`, ok: true, n: 0 }]);
    await reconcile(env!.dp, accel(true));
  });

  it('stops capturing when the namespace is disabled', async () => {
    await reconcile(env!.dp, { ...base, namespaces: base.namespaces.map((n) => ({ ...n, accelerate: n.name !== 'team-a' })) });
    const app = env!.m.pods[0]!;
    expect(await bpftool.cgroupShow(cgroupPath(app.cgroup))).toEqual([]);
    const before = proxy!.lines().length;
    expect((await sink(app, env!.m.pods[1]!.ip, 7500, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    expect(proxy!.lines().length).toBe(before); // straight to the server
  });

  it('works the same through the iptables REDIRECT baseline (conntrack answers SO_ORIGINAL_DST)', async () => {
    await reconcile(env!.dp, accel(false));
    const app = env!.m.pods[0]!;
    await iptables.addOutboundRedirect(app.netns, PROXY_PORT, PROXY_UID);
    try {
      const before = proxy!.lines().length;
      expect((await sink(app, env!.m.pods[1]!.ip, 7500, { bytes: 2 << 20, verify: true })).ok).toBe(true);
      expect(proxy!.lines().slice(before)).toEqual([{ odst: `${env!.m.pods[1]!.ip}:7500`, ok: true, n: 0 }]);
    } finally {
      await iptables.removeOutboundRedirect(app.netns, PROXY_PORT, PROXY_UID);
    }
  });
});
