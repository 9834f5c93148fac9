// Service load balancing at connect(): real ClusterIP traffic from sandbox
// pods, kube-proxy-style iptables rules as the normal path for disabled pods,
// and a churn test while connects hammer the service.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as bpftool from '../../loader/bpftool.js';
import { cgroupPath } from '../../host/cgroup.js';
import * as iptables from '../../devtools/iptables.js';
import { serviceRows } from '../../src/commands/dump.js';
import type { Service, Snapshot } from '../../src/model.js';
import { conn, rr, startServer, udp, type Server } from '../../devtools/perf.js';
import { reconcile } from '../../src/reconciler.js';
import { installServices, kubeProxyPrefix, vip } from '../../devtools/sandbox.js';
import { loadStateFile } from '../../src/state/load.js';
import { POD_PROGS, counters, delta, setUp, tearDown, until, type Env } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('service load balancing at connect()', () => {
  let env: Env | undefined;
  let base: Snapshot;
  const servers: Server[] = [];
  const WEB = vip(0);
  const DNS = vip(1);

  const web = (ips: string[]): Service => ({
    namespace: 'team-b',
    name: 'web',
    clusterIP: WEB,
    ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }],
    endpoints: ips.map((ip) => ({ ip, ready: true, terminating: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }] })),
  });
  const dns = (ips: string[]): Service => ({
    namespace: 'team-b',
    name: 'dns',
    clusterIP: DNS,
    ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 8080 }],
    endpoints: ips.map((ip) => ({ ip, ready: true, terminating: false, ports: [{ name: 'dns', port: 8080, protocol: 'UDP' as const }] })),
  });
  const snap = (on: boolean, webIps: string[], dnsIps: string[]): Snapshot => ({
    ...base,
    namespaces: base.namespaces.map((n) => ({ ...n, accelerate: on })),
    services: [web(webIps), dns(dnsIps)],
  });

  beforeAll(async () => {
    env = await setUp({ pods: 4, namespaces: ['team-a', 'team-b'] });
    base = loadStateFile(env.m.stateFile).snapshot;
    for (const p of env.m.pods.slice(1)) servers.push(await startServer(p, 8080));
    const backends = env.m.pods.slice(1).map((p) => ({ ip: p.ip, port: 8080 }));
    await installServices(env.m, [
      { vip: WEB, port: 80, proto: 'tcp', backends },
      { vip: DNS, port: 53, proto: 'udp', backends: [backends[0]!, backends[2]!] },
    ]);
  });

  afterAll(async () => {
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  const pods = () => env!.m.pods;

  it('writes each service as a master entry with its count and one slot per ready backend', async () => {
    await reconcile(env!.dp, snap(true, [pods()[1]!.ip, pods()[2]!.ip, pods()[3]!.ip], [pods()[1]!.ip, pods()[3]!.ip]));
    const rows = await serviceRows(env!.dp);
    expect(rows.map((r) => [r.frontend, r.proto, r.count, r.slots.map((s) => s.backend)])).toEqual([
      [`${WEB}:80`, 'TCP', 3, [`${pods()[1]!.ip}:8080`, `${pods()[2]!.ip}:8080`, `${pods()[3]!.ip}:8080`]],
      [`${DNS}:53`, 'UDP', 2, [`${pods()[1]!.ip}:8080`, `${pods()[3]!.ip}:8080`]],
    ]);
    const names = (await bpftool.cgroupShow(cgroupPath(pods()[0]!.cgroup))).map((p) => p.name).sort();
    expect(names).toEqual(POD_PROGS);
  });

  it('spreads new connections over every backend, getpeername() shows the ClusterIP, no NAT rule is used', async () => {
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    const r = await conn(pods()[0]!, WEB, 80, { n: 300 });
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ connections: 300, errors: 0, peer_mismatch: 0 });
    const spread = Object.values(r.backends);
    expect(Object.keys(r.backends).sort()).toEqual(
      pods()
        .slice(1)
        .map((p) => `${p.ip}:8080`)
        .sort(),
    );
    expect(Math.min(...spread)).toBeGreaterThan(50); // 100 expected each
    expect(delta(c0, await counters(env!.dp), 'pw_lb').translated).toBe(300);
    expect(await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))).toBe(nat0);
    // each translated connection was watched to its close, where its reverse translation went:
    // pw_revnat holds live connections only, not the history of every connect
    await until(
      'all 300 closed connections dropped from pw_revnat',
      async () => delta(c0, await counters(env!.dp), 'pw_sockops').revnat_closed === 300,
    );
    // a normal close is no eviction
    expect(delta(c0, await counters(env!.dp), 'pw_sockops')).toMatchObject({ revnat_watch: 300, revnat_closed: 300, revnat_evicted: 0 });
    expect(await env!.dp.maps.dump('pw_revnat')).toEqual([]);
  });

  it('revnat_evicted: a connection whose pw_revnat entry goes while it is open (as an LRU eviction) is counted at its close', async () => {
    const c0 = await counters(env!.dp);
    const open = rr(pods()[0]!, WEB, 80, { seconds: 2 }); // one connection, open for 2 s
    const entry = await until('the connection translated', async () => (await env!.dp.maps.dump('pw_revnat'))[0]);
    await env!.dp.maps.write('pw_revnat', [], [entry.key]); // what the LRU does when the map is full
    expect((await open).n).toBeGreaterThan(0);
    await until('counted at close', async () => delta(c0, await counters(env!.dp), 'pw_sockops').revnat_evicted === 1);
    // the connection was also a pod↔pod one in pw_sock: the sockmap's own close callback did not count it twice
    expect(delta(c0, await counters(env!.dp), 'pw_sockops')).toMatchObject({ revnat_watch: 1, revnat_closed: 0, revnat_evicted: 1 });
  });

  it('answers UDP through the ClusterIP, replies come from the ClusterIP, one backend per socket', async () => {
    const u = await udp(pods()[0]!, DNS, 53, { n: 50 });
    expect(u.error).toBeUndefined();
    expect(u).toMatchObject({ replies: 50, errors: 0, wrong_source: 0 });
    expect(Object.values(u.backends)).toEqual([50]);
    // connected UDP is left to kube-proxy (docs/services.md): counted, answered by its rules, alike
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    const c = await udp(pods()[0]!, DNS, 53, { n: 20, connected: true });
    expect(c).toMatchObject({ replies: 20, errors: 0, wrong_source: 0, peer_ok: true });
    const d = delta(c0, await counters(env!.dp), 'pw_lb');
    expect(d).toMatchObject({ udp_connected_left: 1, translated: 0 });
    expect((await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))) - nat0).toBe(1); // conntrack: the socket's first datagram
  });

  it('translates a dual-stack socket dialling ::ffff:<ClusterIP> and accelerates it in the sockmap like an AF_INET one', async () => {
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    const r = await conn(pods()[0]!, WEB, 80, { n: 30, v6: true });
    expect(r).toMatchObject({ connections: 30, errors: 0, peer_mismatch: 0 });
    expect(Object.keys(r.backends)).toHaveLength(3);
    const t = await rr(pods()[0]!, WEB, 80, { n: 2000, v6: true });
    expect(t.n).toBe(2000);
    const c1 = await counters(env!.dp);
    const lb = delta(c0, c1, 'pw_lb');
    // pw_lb_conn6 translated every connect (31), pw_lb_peer6 answered every getpeername() (30)
    expect(lb).toMatchObject({ translated: 31, v4mapped: 61, rev_nat: 30 });
    expect(await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))).toBe(nat0);
    // both ends of the request/response connection went into pw_sock (the client keyed by its embedded IPv4 4-tuple), and the messages skipped TCP
    expect(delta(c0, c1, 'pw_sockops').added_pod).toBeGreaterThanOrEqual(2);
    expect(delta(c0, c1, 'pw_sk_msg').redirected).toBeGreaterThanOrEqual(2000);
  });

  it('leaves a disabled namespace to the kube-proxy rules', async () => {
    await reconcile(env!.dp, {
      ...snap(true, [pods()[1]!.ip, pods()[2]!.ip, pods()[3]!.ip], [pods()[1]!.ip, pods()[3]!.ip]),
      namespaces: base.namespaces.map((n) => ({ ...n, accelerate: n.name !== 'team-a' })),
    });
    expect(await bpftool.cgroupShow(cgroupPath(pods()[0]!.cgroup))).toEqual([]);
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    const r = await conn(pods()[0]!, WEB, 80, { n: 60 });
    expect(r).toMatchObject({ connections: 60, errors: 0, peer_mismatch: 0 });
    expect(delta(c0, await counters(env!.dp), 'pw_lb').translated).toBe(0);
    expect((await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))) - nat0).toBeGreaterThanOrEqual(60);
  });

  it('keeps connections kube-proxy NATs between two enabled pods working (their replies need conntrack)', async () => {
    // socket LB off: the ClusterIP is DNATed by the host; both pods enabled, so the tc program
    // sees the backend's replies as pod-to-pod, but it never saw their SYN: normal path
    await reconcile(env!.dp, snap(true, [pods()[1]!.ip, pods()[2]!.ip, pods()[3]!.ip], [pods()[1]!.ip, pods()[3]!.ip]), undefined, {
      sockmap: false,
      lb: false,
    });
    const c0 = await counters(env!.dp);
    const r = await conn(pods()[0]!, WEB, 80, { n: 60 });
    expect(r).toMatchObject({ connections: 60, errors: 0, peer_mismatch: 0 });
    const d = delta(c0, await counters(env!.dp));
    expect(d.untracked).toBeGreaterThan(60);
    const u = await udp(pods()[0]!, DNS, 53, { n: 10 });
    expect(u).toMatchObject({ replies: 10, errors: 0, wrong_source: 0 });
    expect(delta(c0, await counters(env!.dp)).udp_not_tracked).toBeGreaterThanOrEqual(10); // the backends' replies: never answered directly
  });

  it('survives backend churn under a stream of connects with zero failures', async () => {
    const all = [pods()[1]!.ip, pods()[2]!.ip, pods()[3]!.ip];
    await reconcile(env!.dp, snap(true, all, all));
    const c0 = await counters(env!.dp);
    // a fixed number of updates, and connects for as long as they take (rounds of 1 s):
    // a reconcile pass takes 50 ms on an idle machine and seconds on a loaded or emulated one
    let done = false;
    const rounds: Awaited<ReturnType<typeof conn>>[] = [];
    const hammer = (async () => {
      while (!done) rounds.push(await conn(pods()[0]!, WEB, 80, { seconds: 1 }));
    })();
    const sets = [[all[0]!], [all[0]!, all[1]!], all, [all[2]!], [all[1]!, all[2]!], all, [all[1]!]];
    const UPDATES = 14;
    for (let updates = 0; updates < UPDATES; updates++) {
      await reconcile(env!.dp, snap(true, sets[updates % sets.length]!, all));
      await sleep(20);
    }
    done = true;
    await hammer;
    const d = delta(c0, await counters(env!.dp), 'pw_lb');
    const r = {
      error: rounds.find((x) => x.error)?.error,
      errors: rounds.reduce((n, x) => n + x.errors, 0),
      peer_mismatch: rounds.reduce((n, x) => n + x.peer_mismatch, 0),
      connections: rounds.reduce((n, x) => n + x.connections, 0),
    };
    expect(rounds.length).toBeGreaterThan(0);
    expect(r.error).toBeUndefined();
    expect(r.errors).toBe(0);
    expect(r.peer_mismatch).toBe(0);
    expect(r.connections).toBeGreaterThan(100);
    expect(d.slot_missing).toBe(0);
    expect(d.translated).toBe(r.connections);
  });
});
