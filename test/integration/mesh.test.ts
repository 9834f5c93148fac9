// Istio sidecar pods (issue 10, items 15 and 16): what the app and its
// sidecar observe must be what Istio's own capture gives them.
// - no socket LB in a meshed pod: the proxy's SO_ORIGINAL_DST is the
//   ClusterIP, and Istio's DNS capture (UDP :53 REDIRECT to 15053 in the pod)
//   still catches a ClusterIP:53 (differential: acceleration off, then on);
// - connects by the proxy gid and to the pod's own IP are not captured;
// - a dual-stack (AF_INET6) socket dialling ::ffff:a.b.c.d is captured like
//   an AF_INET one, and the proxy still gets its original destination.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupId } from '../../host/cgroup.js';
import { run } from '../../host/exec.js';
import * as iptables from '../../devtools/iptables.js';
import type { Service, Snapshot } from '../../src/model.js';
import { PWPERF, conn, sink, startListener, startProxy, startServer, udp, type Server } from '../../devtools/perf.js';
import { installServices, kubeProxyPrefix, podCommand, vip, type SandboxPod } from '../../devtools/sandbox.js';
import { reconcile } from '../../src/reconciler.js';
import { loadStateFile } from '../../src/state/load.js';
import { MESHED_PROGS, POD_PROGS, SLOWDOWN, cgroupProgs, counters, delta, setUp, tearDown, type Env } from './helpers.js';

const PROXY_UID = 1337;
const PROXY_PORT = 15001;
const DNS_PROXY_PORT = 15053;
const TARGET = 8080;
const OWN_PORT = 7502;

/** A dual-stack client: AF_INET6 socket, connect to [addr]:port, pwperf's "who answered" exchange. */
const V6_CLIENT = `
import json, socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as e:
    print(json.dumps({"error": e.errno})); sys.exit(0)
s.sendall(struct.pack("!IIII", 0x50575046, 4, 1, 0))
peer = s.getpeername()
b = b""
while len(b) < 8:
    c = s.recv(8 - len(b))
    if not c: break
    b += c
s.close()
print(json.dumps({"id": "%s:%d" % (socket.inet_ntoa(b[:4]), struct.unpack("!H", b[4:6])[0]) if len(b) == 8 else None,
                  "peer": "[%s]:%d" % peer[:2]}))
`;

/**
 * Stands in for istio-agent's DNS proxy: UDP on 127.0.0.1:15053 (where the
 * REDIRECT of a locally generated packet lands), answering like pwperf's
 * UDP server (the address that answered, then the request).
 */
const DNS_STANDIN = `
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print('{"listening":%s}' % sys.argv[1], flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(socket.inet_aton("127.0.0.1") + struct.pack("!H", int(sys.argv[1])) + b"\\0\\0" + d, a)
`;

function startDnsStandIn(pod: SandboxPod, port: number): Promise<Server> {
  return startListener(pod, ['python3', '-c', DNS_STANDIN, String(port)]);
}

async function v6Connect(pod: SandboxPod, addr: string, port: number): Promise<{ id?: string | null; peer?: string; error?: number }> {
  const r = await run(`v6 client in ${pod.name}`, podCommand(pod, ['python3', '-c', V6_CLIENT, addr, String(port)]), {
    timeoutMs: 30_000 * SLOWDOWN,
  });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { id?: string | null; peer?: string; error?: number };
}

describe('meshed pods: Istio semantics kept', () => {
  let env: Env | undefined;
  let base: Snapshot;
  let proxy: Server | undefined;
  const servers: Server[] = [];
  const WEB = vip(0);
  const DNS = vip(1);
  const pods = () => env!.m.pods;

  const services = (): Service[] => {
    // one slice port per service port, as the EndpointSlice controller writes them
    const ports = [
      { name: 'http', port: TARGET, protocol: 'TCP' as const },
      { name: 'dns', port: TARGET, protocol: 'UDP' as const },
    ];
    const eps = [pods()[1]!, pods()[2]!].map((p) => ({ ip: p.ip, ready: true, terminating: false, ports }));
    return [
      {
        namespace: 'team-b',
        name: 'web',
        clusterIP: WEB,
        ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: TARGET }],
        endpoints: eps,
      },
      {
        namespace: 'team-b',
        name: 'dns',
        clusterIP: DNS,
        ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: TARGET }],
        endpoints: eps,
      },
    ];
  };
  /** pod-0 (team-a) has the sidecar; `alsoMeshed` names more pods that have one. */
  const snap = (on: boolean, meshed = true, alsoMeshed: string[] = []): Snapshot => ({
    ...base,
    services: services(),
    namespaces: base.namespaces.map((n) => ({ ...n, accelerate: on })),
    pods: base.pods.map((p) => ({ ...p, sidecar: (meshed && p.name === 'pod-0') || alsoMeshed.includes(p.name) })),
  });

  beforeAll(async () => {
    env = await setUp({ pods: 3, namespaces: ['team-a', 'team-b'] });
    base = loadStateFile(env.m.stateFile).snapshot;
    servers.push(await startServer(pods()[1]!, TARGET)); // team-b/pod-1
    servers.push(await startServer(pods()[2]!, TARGET)); // team-a/pod-2
    servers.push(await startServer(pods()[0]!, OWN_PORT)); // the meshed pod's own listener
    servers.push(await startDnsStandIn(pods()[0]!, DNS_PROXY_PORT));
    proxy = await startProxy(pods()[0]!, PROXY_PORT, PROXY_UID);
    const backends = [pods()[1]!, pods()[2]!].map((p) => ({ ip: p.ip, port: TARGET }));
    await installServices(env.m, [
      { vip: WEB, port: 80, proto: 'tcp', backends },
      { vip: DNS, port: 53, proto: 'udp', backends },
    ]);
  });

  afterAll(async () => {
    if (env) await iptables.dnsRedirect('remove', pods()[0]!.netns, DNS_PROXY_PORT);
    await proxy?.stop();
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('a meshed pod never gets the socket LB, even when it had it before; the proxy sees the ClusterIP', async () => {
    // first not meshed: the socket LB is attached (the order in which a later capture would run after it)
    await reconcile(env!.dp, snap(true, false));
    const names = (p: SandboxPod) => cgroupProgs(p.cgroup);
    expect(await names(pods()[0]!)).toContain('pw_lb_conn4');
    const r = await reconcile(env!.dp, snap(true));
    expect(await names(pods()[0]!)).toEqual(MESHED_PROGS);
    expect(await names(pods()[2]!)).toEqual(POD_PROGS);
    expect(r.desired.partial.get(`team-a/pod-0`)).toBe('mesh-sidecar');

    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    for (let i = 0; i < 4; i++) expect((await sink(pods()[0]!, WEB, 80, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    const c1 = await counters(env!.dp);
    // Envoy's view: the Service address, never a backend
    expect(proxy!.lines().slice(before)).toEqual(Array.from({ length: 4 }, () => ({ odst: `${WEB}:80`, ok: true, n: 0 })));
    expect(delta(c0, c1, 'pw_proxy_conn4').redirected).toBe(4);
    expect(delta(c0, c1, 'pw_proxy_odst').answered).toBe(4);
    expect(delta(c0, c1, 'pw_lb').translated).toBe(0);
    // the proxy's own upstream connects to the ClusterIP took kube-proxy's rules (in Istio, Envoy picks the endpoint)
    expect((await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))) - nat0).toBeGreaterThanOrEqual(4);
  });

  it("Istio's DNS capture keeps catching UDP to a ClusterIP:53 (same as without podwarp); a non-meshed pod is still translated", async () => {
    await iptables.dnsRedirect('add', pods()[0]!.netns, DNS_PROXY_PORT);
    try {
      const observe = async () => {
        const c0 = await counters(env!.dp);
        const u = await udp(pods()[0]!, DNS, 53, { n: 20 });
        const c = await udp(pods()[0]!, DNS, 53, { n: 10, connected: true });
        const lb = delta(c0, await counters(env!.dp), 'pw_lb').translated;
        return { unconnected: u, connected: c, lb };
      };
      await reconcile(env!.dp, snap(false));
      const off = await observe();
      await reconcile(env!.dp, snap(true));
      const on = await observe();
      // the DNS proxy stand-in answered every query, from the address dialled, both times
      expect(off.unconnected).toMatchObject({ replies: 20, errors: 0, wrong_source: 0 });
      expect(Object.keys(off.unconnected.backends)).toEqual([`127.0.0.1:${DNS_PROXY_PORT}`]);
      expect(off.connected).toMatchObject({ replies: 10, errors: 0, wrong_source: 0, peer_ok: true });
      expect(on).toEqual(off);
      expect(on.lb).toBe(0);
      // a pod without a sidecar: the socket LB translates its queries to a backend
      const c0 = await counters(env!.dp);
      const plain = await udp(pods()[2]!, DNS, 53, { n: 20 });
      expect(plain).toMatchObject({ replies: 20, errors: 0, wrong_source: 0 });
      expect(Object.keys(plain.backends)[0]).toMatch(new RegExp(`:${TARGET}$`));
      expect(delta(c0, await counters(env!.dp), 'pw_lb').translated).toBe(20);
    } finally {
      await iptables.dnsRedirect('remove', pods()[0]!.netns, DNS_PROXY_PORT);
    }
  });

  it('getpeername() of a captured socket is the address dialled, as under iptables REDIRECT', async () => {
    const dst = pods()[1]!.ip;
    const observe = async () => {
      const c0 = await counters(env!.dp);
      const r = await conn(pods()[0]!, dst, TARGET, { n: 10 });
      return { r, d: delta(c0, await counters(env!.dp), 'pw_proxy_conn4') };
    };
    await reconcile(env!.dp, snap(false));
    await iptables.addOutboundRedirect(pods()[0]!.netns, PROXY_PORT, PROXY_UID);
    let off;
    try {
      off = await observe();
    } finally {
      await iptables.removeOutboundRedirect(pods()[0]!.netns, PROXY_PORT, PROXY_UID);
    }
    await reconcile(env!.dp, snap(true));
    const on = await observe();
    expect(off.r).toMatchObject({ connections: 10, errors: 0, peer_mismatch: 0, backends: { [`${dst}:${TARGET}`]: 10 } });
    expect(on.r).toMatchObject({ connections: 10, errors: 0, peer_mismatch: 0, backends: off.r.backends });
    expect(on.d).toMatchObject({ redirected: 10, peer_odst: 10 });
  });

  it('TCP to port 53 is left to the pod (Istio sends it to its DNS proxy, not to the outbound listener)', async () => {
    await reconcile(env!.dp, snap(true));
    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    // no listener on :53 anywhere: what matters is that the capture let it go
    await run('tcp 53', podCommand(pods()[0]!, [PWPERF, 'conn', '-c', pods()[1]!.ip, '-p', '53', '-n', '1']), { reject: false });
    expect(delta(c0, await counters(env!.dp), 'pw_proxy_conn4')).toMatchObject({ dns_port: 1, redirected: 0 });
    expect(proxy!.lines().length).toBe(before);
  });

  it('a process of the proxy gid (uid not 1337) is not captured; one with neither is', async () => {
    await reconcile(env!.dp, snap(true));
    const app = pods()[0]!;
    const dst = pods()[1]!.ip;
    const sinkAs = async (prefix: string[]) => {
      const r = await run(
        'sink',
        podCommand(app, [...prefix, PWPERF, 'sink', '-c', dst, '-p', String(TARGET), '-b', String(1 << 20), '-v']),
      );
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean };
    };
    let before = proxy!.lines().length;
    let c0 = await counters(env!.dp);
    expect((await sinkAs(['setpriv', '--regid', String(PROXY_UID), '--clear-groups'])).ok).toBe(true);
    let d = delta(c0, await counters(env!.dp), 'pw_proxy_conn4');
    expect(d).toMatchObject({ proxy_gid: 1, proxy_uid: 0, redirected: 0 });
    expect(proxy!.lines().length).toBe(before);

    before = proxy!.lines().length;
    c0 = await counters(env!.dp);
    expect((await sinkAs(['setpriv', '--regid', '4242', '--clear-groups'])).ok).toBe(true);
    d = delta(c0, await counters(env!.dp), 'pw_proxy_conn4');
    expect(d).toMatchObject({ proxy_gid: 0, redirected: 1 });
    expect(proxy!.lines().slice(before)).toEqual([{ odst: `${dst}:${TARGET}`, ok: true, n: 0 }]);
  });

  it("an app's connect to its own pod IP goes straight to its own listener; another meshed pod's IP is captured", async () => {
    // pod-2 meshed too: its IP is in pw_pod_cgroup as well, so only the cgroup check tells them apart
    await reconcile(env!.dp, snap(true, true, ['pod-2']));
    const [app, other] = [pods()[0]!, pods()[2]!];
    const entries = new Map((await env!.dp.maps.dump('pw_pod_cgroup')).map((e) => [String(e.key.ip), BigInt(e.value.id as bigint)]));
    expect(entries).toEqual(
      new Map([
        [app.ip, cgroupId(app.cgroup)],
        [other.ip, cgroupId(other.cgroup)],
      ]),
    );
    let before = proxy!.lines().length;
    let c0 = await counters(env!.dp);
    expect((await sink(app, app.ip, OWN_PORT, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    expect(delta(c0, await counters(env!.dp), 'pw_proxy_conn4')).toMatchObject({ own_pod_ip: 1, redirected: 0 });
    expect(proxy!.lines().length).toBe(before); // the proxy saw nothing

    before = proxy!.lines().length;
    c0 = await counters(env!.dp);
    expect((await sink(app, other.ip, TARGET, { bytes: 1 << 20, verify: true })).ok).toBe(true);
    expect(delta(c0, await counters(env!.dp), 'pw_proxy_conn4')).toMatchObject({ own_pod_ip: 0, redirected: 1 });
    expect(proxy!.lines().slice(before)).toEqual([{ odst: `${other.ip}:${TARGET}`, ok: true, n: 0 }]);

    // pod-2 no longer meshed: its entry goes
    await reconcile(env!.dp, snap(true));
    expect((await env!.dp.maps.dump('pw_pod_cgroup')).map((e) => String(e.key.ip))).toEqual([app.ip]);
  });

  it('a dual-stack socket dialling ::ffff:a.b.c.d is captured like an AF_INET one; pure IPv6 is left alone', async () => {
    const app = pods()[0]!;
    const dst = pods()[1]!.ip;
    await reconcile(env!.dp, snap(false));
    const off = await v6Connect(app, `::ffff:${dst}`, TARGET);
    await reconcile(env!.dp, snap(true));
    const before = proxy!.lines().length;
    const c0 = await counters(env!.dp);
    const on = await v6Connect(app, `::ffff:${dst}`, TARGET);
    const c1 = await counters(env!.dp);
    // what the app sees is the same: who answered, and getpeername() = the address dialled
    expect(off).toEqual({ id: `${dst}:${TARGET}`, peer: `[::ffff:${dst}]:${TARGET}` });
    expect(on).toEqual(off);
    expect(proxy!.lines().slice(before)).toEqual([{ odst: `${dst}:${TARGET}`, ok: true, n: 0 }]);
    expect(delta(c0, c1, 'pw_proxy_conn4')).toMatchObject({ redirected_v6: 1, redirected: 0, peer_odst: 1 });
    // the v4-mapped app end was keyed by its IPv4 4-tuple: the proxy's SO_ORIGINAL_DST came from the map
    expect(delta(c0, c1, 'pw_sockops')).toMatchObject({ odst_saved: 1, added_proxy: 2 });
    expect(delta(c0, c1, 'pw_proxy_odst')).toMatchObject({ answered: 1, not_found: 0 });
    expect(delta(c0, c1, 'pw_sk_msg').redirected).toBeGreaterThan(0);

    // its own pod IP, v4-mapped: not captured either
    const c2 = await counters(env!.dp);
    expect(await v6Connect(app, `::ffff:${app.ip}`, OWN_PORT)).toEqual({
      id: `${app.ip}:${OWN_PORT}`,
      peer: `[::ffff:${app.ip}]:${OWN_PORT}`,
    });
    expect(delta(c2, await counters(env!.dp), 'pw_proxy_conn4')).toMatchObject({ own_pod_ip: 1, redirected_v6: 0 });

    const c3 = await counters(env!.dp);
    const pure = await v6Connect(app, '::1', 9); // nothing listens: refused (or no IPv6 at all); never captured
    expect(pure.error).toBeDefined();
    expect(delta(c3, await counters(env!.dp), 'pw_proxy_conn4')).toMatchObject({ not_ipv4: 1, redirected_v6: 0 });
    expect(proxy!.lines().length).toBe(before + 1);
  });
});
