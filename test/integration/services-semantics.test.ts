// Differential: which endpoints a Service resolves to (issue 10, items 2-4),
// sessionAffinity ClientIP (item 1), dual-stack sockets dialling v4-mapped
// addresses (item 7), a connected UDP socket whose backend leaves (item 9),
// and a long-lived unconnected UDP socket while its Service changes, and how
// new unconnected UDP flows spread.
// Each scenario runs twice on the sandbox: acceleration off, so the
// client's connects take kube-proxy-style iptables rules written by hand
// from kube-proxy's documented behaviour, then on (the socket LB). What the
// application observes must be the same: the connect outcome (ok, refused,
// timeout), which backends answer, getpeername() and the reply source.
// The endpoint-selection and external-IP scenarios are installed together
// (an address each) and observed off in the block's beforeAll, then on, one
// test per scenario and protocol; the others toggle within their test.
// "v6" variants use an AF_INET6 socket dialling ::ffff:<ClusterIP>, as Java,
// .NET and Node's udp6 do; kube-proxy's rules see plain IPv4 either way.
// Connected UDP is left to kube-proxy by design (docs/services.md): with
// acceleration on it must still be kube-proxy that answers it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service, ServiceEndpoint, Snapshot } from '../../src/model.js';
import { conn, startServer, udp, udpSession, type Server, type UdpStep } from '../../devtools/perf.js';
import * as iptables from '../../devtools/iptables.js';
import { reconcile } from '../../src/reconciler.js';
import { installServices, kubeProxyPrefix, updateServices, vip, type SandboxPod } from '../../devtools/sandbox.js';
import type { KubeProxyService } from '../../devtools/iptables.js';
import { affinityRows, serviceRows, udpFlowRows } from '../../src/commands/dump.js';
import { BpfServiceMaps } from '../../src/services/maps.js';
import { ServiceSync } from '../../src/services/sync.js';
import type { LeftReason } from '../../src/services/desired.js';
import { loadStateFile } from '../../src/state/load.js';
import { readAffinityState } from '../../src/sources/kube-proxy-affinity.js';
import { xtRecentWrite } from '../../host/netfilter.js';
import { SLOWDOWN, counters, delta, setUp, tearDown, until, type Env } from './helpers.js';

const NODE = 'node-a';
const ZONE = 'zone-a';
const PORT = 80;
const TARGET = 8080;

type Outcome = 'ok' | 'refused' | 'timeout' | 'mixed';
interface Observed {
  outcome: Outcome;
  /** backends that answered (TCP: every one over N connects; UDP: the socket's one) */
  backends: string[];
  /** getpeername() / reply source not the ClusterIP */
  peerMismatch: number;
  /** the tool's counts and first error line, for a failure message */
  detail: string;
}

interface Scenario {
  name: string;
  internalTrafficPolicy?: 'Local';
  /**
   * pod index (1..3) → endpoint fields; an index listed twice is one address in
   * two slices. `ports` are the endpoint's slice ports: unset, the ones the
   * EndpointSlice controller writes for the Service's ports (SLICE_PORTS).
   */
  endpoints: [number, Partial<ServiceEndpoint>][];
  /** kube-proxy's rules, written from its behaviour, not from podwarp's code: the backends, else reject/drop */
  kubeProxy: number[] | 'reject' | 'drop';
  /** also run from a dual-stack AF_INET6 socket dialling the v4-mapped ClusterIP */
  v6?: boolean;
}

/** The slice ports of the endpoint-selection Services' two ports ('p' TCP, 'u' UDP), as the EndpointSlice controller writes them. */
const SLICE_PORTS: ServiceEndpoint['ports'] = [
  { name: 'p', port: TARGET, protocol: 'TCP' },
  { name: 'u', port: TARGET, protocol: 'UDP' },
];

const scenarios: Scenario[] = [
  {
    name: 'internalTrafficPolicy Local: only the ready endpoint on this node',
    internalTrafficPolicy: 'Local',
    endpoints: [
      [1, { nodeName: NODE }],
      [2, { nodeName: 'node-b' }],
      [3, { nodeName: NODE, ready: false }],
    ],
    kubeProxy: [1],
  },
  {
    name: 'internalTrafficPolicy Local, no endpoint on this node: kube-proxy drops (timeout)',
    internalTrafficPolicy: 'Local',
    endpoints: [
      [2, { nodeName: 'node-b' }],
      [3, { nodeName: 'node-c' }],
    ],
    kubeProxy: 'drop',
  },
  {
    name: 'no ready or serving endpoint: kube-proxy rejects (refused)',
    endpoints: [
      [1, { ready: false }],
      [2, { ready: false, terminating: true, serving: false }],
    ],
    kubeProxy: 'reject',
    v6: true,
  },
  {
    name: 'no ready endpoint: the serving-and-terminating ones (KEP-1669)',
    endpoints: [
      [1, { ready: false, terminating: true }],
      [2, { ready: false, terminating: true, serving: false }],
      [3, { ready: false }],
    ],
    kubeProxy: [1],
  },
  {
    name: 'publishNotReadyAddresses: ready terminating endpoints are used with the others',
    endpoints: [
      [1, { terminating: true }],
      [2, {}],
      [3, { ready: false }],
    ],
    kubeProxy: [1, 2],
  },
  {
    name: 'zone hints (PreferClose): the endpoints hinted for this zone',
    endpoints: [
      [1, { forZones: [ZONE] }],
      [2, { forZones: ['zone-b'] }],
      [3, { forZones: [ZONE, 'zone-c'] }],
    ],
    kubeProxy: [1, 3],
  },
  {
    name: 'zone hints, none for this zone: every ready endpoint',
    endpoints: [
      [1, { forZones: ['zone-b'] }],
      [2, { forZones: ['zone-c'] }],
    ],
    kubeProxy: [1, 2],
  },
  {
    name: 'zone hints missing on one ready endpoint: every ready endpoint',
    endpoints: [
      [1, { forZones: [ZONE] }],
      [2, {}],
      [3, { forZones: ['zone-b'] }],
    ],
    kubeProxy: [1, 2, 3],
  },
  {
    name: 'plain Service: every ready endpoint',
    endpoints: [
      [1, {}],
      [2, {}],
      [3, {}],
    ],
    kubeProxy: [1, 2, 3],
    v6: true,
  },
  // kube-proxy takes a service port's endpoints only from slice ports of its name and protocol
  // (pkg/proxy/endpointslicecache.go); a Service whose slices have none is rejected, whatever targetPort says
  {
    name: "slices without a port of the service port's name (manually managed, ports: [] or another name): kube-proxy rejects",
    endpoints: [
      [1, { ports: [] }],
      [2, { ports: SLICE_PORTS.map((p) => ({ ...p, name: `${p.name}-other` })) }],
    ],
    kubeProxy: 'reject',
  },
  {
    name: "one slice with the port, one without: only the first one's endpoints",
    endpoints: [
      [1, {}],
      [2, { ports: [] }],
      [3, { ports: [] }],
    ],
    kubeProxy: [1],
  },
  // one address in two slices: kube-proxy keeps the copy that is not terminating (pkg/proxy/endpointslicecache.go)
  {
    name: 'an address in two slices, ready in one and terminating in the other (a rollout): used',
    endpoints: [
      [1, { ready: false, terminating: true }],
      [1, {}],
      [2, { ready: false, terminating: true }],
    ],
    kubeProxy: [1],
  },
  {
    name: 'an address in two slices, not yet ready in one and serving-terminating in the other (a reused pod IP): the terminating copy does not count',
    endpoints: [
      [1, { ready: false, terminating: true }],
      [1, { ready: false }],
      [2, { ready: false, terminating: true }],
    ],
    kubeProxy: [2],
  },
];

const outcome = (n: number, ok: number, refused: number, timeouts: number): Outcome =>
  ok === n ? 'ok' : refused === n ? 'refused' : timeouts === n ? 'timeout' : 'mixed';

/** What the application in `client` observes of n connects (TCP) or datagrams (UDP) to ip:PORT. */
async function observe(client: SandboxPod, proto: 'TCP' | 'UDP' | 'UDP-connected', ip: string, n: number, v6 = false): Promise<Observed> {
  if (proto === 'TCP') {
    const r = await conn(client, ip, PORT, { n, v6 });
    return {
      outcome: outcome(n, r.connections, r.refused, r.timeouts),
      backends: Object.keys(r.backends).sort(),
      peerMismatch: r.peer_mismatch,
      detail: `${n} connects: ${r.connections} ok, ${r.refused} refused, ${r.timeouts} timed out, ${r.errors} failed${r.error ? ` (${r.error.split('\n')[0]})` : ''}`,
    };
  }
  const u = await udp(client, ip, PORT, { n, connected: proto === 'UDP-connected', v6 });
  return {
    outcome: outcome(n, u.replies, u.refused, u.timeouts),
    backends: Object.keys(u.backends).sort(),
    peerMismatch: u.wrong_source + (u.peer_ok ? 0 : 1),
    detail: `${n} requests: ${u.replies} answered, ${u.refused} refused, ${u.timeouts} timed out, ${u.errors} failed${u.error ? ` (${u.error.split('\n')[0]})` : ''}`,
  };
}

/**
 * kube-proxy's REJECT answers with ICMP port unreachable, which the kernel
 * rate-limits per destination (net.ipv4.icmp_ratelimit: a token a second,
 * a burst of 6): after a few rejected scenarios in a row the next ones would
 * see some attempts time out ('mixed'). A phase of a rejecting scenario waits
 * for 2 tokens (its n = 2 attempts) first.
 */
const icmpTokens = () => new Promise((r) => setTimeout(r, 2000));

/** The sandbox of a describe block: 5 pods, pod-0 the client, a server on TARGET in every other pod. */
function sandboxWithServers() {
  const f: { env?: Env; base?: Snapshot } = {};
  const servers: Server[] = [];
  beforeAll(async () => {
    f.env = await setUp({ pods: 5, namespaces: ['team-a', 'team-b'] });
    f.base = loadStateFile(f.env.m.stateFile).snapshot;
    for (const p of f.env.m.pods.slice(1)) servers.push(await startServer(p, TARGET));
  });
  afterAll(async () => {
    for (const s of servers) await s.stop();
    expect(await tearDown(f.env)).toEqual([]);
  });
  return f;
}

describe('service endpoint selection: kube-proxy rules and the socket LB observed alike', () => {
  const sb = sandboxWithServers();
  const pods = () => sb.env!.m.pods;

  const service = (sc: Scenario, ip: string, protocol: 'TCP' | 'UDP'): Service => ({
    namespace: 'team-b',
    name: 'sem',
    clusterIP: ip,
    ...(sc.internalTrafficPolicy ? { internalTrafficPolicy: sc.internalTrafficPolicy } : {}),
    ports: [{ name: 'p', port: PORT, protocol, targetPort: TARGET }],
    endpoints: sc.endpoints.map(([i, over]) => ({ ip: pods()[i]!.ip, ready: true, terminating: false, ports: SLICE_PORTS, ...over })),
  });
  const snap = (on: boolean, svc: Service): Snapshot => ({
    ...sb.base!,
    node: NODE,
    zone: ZONE,
    namespaces: sb.base!.namespaces.map((n) => ({ ...n, accelerate: on })),
    services: [svc],
  });

  // Every scenario has a ClusterIP of its own, with a TCP and a UDP port, so
  // all of them are installed at once: the kube-proxy rules and one snapshot
  // of every Service. The off phase of every case runs first (one reconcile
  // with acceleration off), then the on phase (one reconcile with it on),
  // one case per test. Two reconciles instead of two per case: each one
  // attaches or detaches the pods' cgroup programs, dozens of bpftool runs,
  // which under the kernel matrix's emulation cost a minute a case.
  interface Case {
    sc: Scenario;
    ip: string;
    proto: 'TCP' | 'UDP' | 'UDP-connected';
    v6: boolean;
  }
  const cases: Case[] = scenarios.flatMap((sc, i) =>
    [
      ...(['TCP', 'UDP', 'UDP-connected'] as const).map((p) => [p, false] as const),
      ...(sc.v6 ? (['TCP', 'UDP', 'UDP-connected'] as const).map((p) => [p, true] as const) : []),
    ].map(([proto, v6]) => ({ sc, ip: vip(20 + i), proto, v6 })),
  );
  const reachableOf = (sc: Scenario) => (Array.isArray(sc.kubeProxy) ? sc.kubeProxy.map((j) => `${pods()[j]!.ip}:${TARGET}`).sort() : []);
  // a failing scenario costs a timeout per attempt: few attempts
  const attempts = (c: Case) => (reachableOf(c.sc).length ? (c.proto === 'TCP' ? 40 : 10) : 2);
  const offSeen = new Map<Case, Observed>();

  describe('each scenario and protocol: acceleration off, then on', () => {
    beforeAll(async () => {
      const kp: KubeProxyService[] = scenarios.flatMap((sc, i) =>
        (['tcp', 'udp'] as const).map((l4) => ({
          vip: vip(20 + i),
          port: PORT,
          proto: l4,
          backends: Array.isArray(sc.kubeProxy) ? sc.kubeProxy.map((j) => ({ ip: pods()[j]!.ip, port: TARGET })) : [],
          empty: Array.isArray(sc.kubeProxy) ? undefined : sc.kubeProxy,
        })),
      );
      await installServices(sb.env!.m, kp);
      const all = scenarios.map((sc, i) => {
        const svc = service(sc, vip(20 + i), 'TCP');
        return { ...svc, name: `sem-${i}`, ports: [...svc.ports, { name: 'u', port: PORT, protocol: 'UDP' as const, targetPort: TARGET }] };
      });
      const at = (on: boolean): Snapshot => ({ ...snap(on, all[0]!), services: all });
      await reconcile(sb.env!.dp, at(false));
      for (const c of cases) {
        if (c.sc.kubeProxy === 'reject') await icmpTokens();
        offSeen.set(c, await observe(pods()[0]!, c.proto, c.ip, attempts(c), c.v6));
      }
      await reconcile(sb.env!.dp, at(true));
    }, 600_000 * SLOWDOWN);

    for (const c of cases) {
      const { sc, ip, proto, v6 } = c;
      it(`${sc.name} (${proto}${v6 ? ', AF_INET6 v4-mapped' : ''})`, async () => {
        const reachable = reachableOf(sc);
        const n = attempts(c);
        const off = offSeen.get(c)!;
        const c0 = await counters(sb.env!.dp);
        const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(sb.env!.m));
        if (sc.kubeProxy === 'reject') await icmpTokens();
        const on = await observe(pods()[0]!, proto, ip, n, v6);
        const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
        const nat = (await iptables.kubeProxyPackets(kubeProxyPrefix(sb.env!.m))) - nat0;

        // kube-proxy's outcome is what the rules say …
        const want: Outcome = reachable.length ? 'ok' : sc.kubeProxy === 'reject' && proto !== 'UDP' ? 'refused' : 'timeout';
        expect(off.outcome, `kube-proxy's rules: ${off.detail}`).toBe(want);
        // … and acceleration changes nothing the application sees
        expect(on.outcome, `socket LB: ${on.detail}`).toBe(off.outcome);
        expect(on.peerMismatch).toBe(0);
        expect(off.peerMismatch).toBe(0);
        if (proto === 'TCP') {
          expect(off.backends).toEqual(reachable);
          expect(on.backends).toEqual(off.backends);
          // and it was the socket LB that answered with acceleration on (a left Service: kube-proxy's rules);
          // v4-mapped: pw_lb_conn6 translated each connect and pw_lb_peer6 answered each getpeername()
          expect(d.translated).toBe(reachable.length ? n : 0);
          expect(d.v4mapped).toBe(v6 && reachable.length ? 2 * n : 0);
          if (reachable.length) expect(nat).toBe(0);
        } else {
          for (const b of [...off.backends, ...on.backends]) expect(reachable).toContain(b);
          // one socket is one flow: kube-proxy's conntrack entry keeps all its datagrams on one
          // backend, and so does the socket LB (a hash of the socket); every one was answered (ok)
          if (reachable.length) {
            expect(off.backends, `kube-proxy's rules: ${off.detail}`).toHaveLength(1);
            expect(on.backends, `socket LB: ${on.detail}`).toHaveLength(1);
          }
          if (proto === 'UDP' && reachable.length) {
            // per datagram by pw_lb_send4 (v4-mapped too), each reply's source by pw_lb_recv4/pw_lb_recv6
            expect(d.translated).toBe(n);
            expect(d.rev_nat).toBe(n);
            expect(d.v4mapped).toBe(v6 ? n : 0);
            expect(nat).toBe(0);
          }
          if (proto === 'UDP-connected') {
            // connected UDP is kube-proxy's, v4-mapped or not: counted, never translated
            expect(d.translated).toBe(0);
            expect(d.v4mapped).toBe(0);
            if (reachable.length) {
              expect(d.udp_connected_left).toBe(1);
              expect(nat).toBeGreaterThanOrEqual(1);
            }
          }
        }
      });
    }
  });

  // ---- a pod dialling its own Service (hairpin, item 6) ----
  // kube-proxy masquerades a connection DNATed back to the pod that sent it
  // (KUBE-MARK-MASQ for `-s <endpoint>`; here: MASQUERADE by original
  // destination, the Service's only endpoint being the client): the client
  // still sees the ClusterIP. The socket LB connects inside the pod: same
  // outcome, same peer; only the server's view of the client differs (its own
  // IP instead of the node's, docs/services.md "A pod dialling its own Service").
  for (const proto of ['TCP', 'UDP'] as const)
    it(`a pod dialling its own Service (hairpin, ${proto}): the same outcome and peer address as with kube-proxy`, async () => {
      const me = pods()[0]!;
      const own = await startServer(me, TARGET);
      try {
        const ip = vip(19);
        const svc: Service = {
          namespace: 'team-b',
          name: 'hairpin',
          clusterIP: ip,
          ports: [{ name: 'p', port: PORT, protocol: proto, targetPort: TARGET }],
          endpoints: [{ ip: me.ip, ready: true, terminating: false, ports: [{ name: 'p', port: TARGET, protocol: proto }] }],
        };
        await installServices(sb.env!.m, [
          { vip: ip, port: PORT, proto: proto === 'TCP' ? 'tcp' : 'udp', backends: [{ ip: me.ip, port: TARGET }], masquerade: true },
        ]);
        const n = proto === 'TCP' ? 20 : 10;
        await reconcile(sb.env!.dp, snap(false, svc));
        const off = await observe(pods()[0]!, proto, ip, n);
        await reconcile(sb.env!.dp, snap(true, svc));
        const c0 = await counters(sb.env!.dp);
        const on = await observe(pods()[0]!, proto, ip, n);
        const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
        const seen = ({ detail: _, ...o }: Observed) => o;
        expect(seen(off), `kube-proxy's rules: ${off.detail}`).toEqual({
          outcome: 'ok',
          backends: [`${me.ip}:${TARGET}`],
          peerMismatch: 0,
        });
        expect(seen(on), `socket LB: ${on.detail}`).toEqual(seen(off));
        expect(d.translated).toBe(n); // the socket LB answered, not the rules
      } finally {
        await own.stop();
      }
    });

  // ---- sessionAffinity: ClientIP (item 1) ----
  // kube-proxy's side: `-m recent --rcheck --seconds T --reap` per endpoint in
  // the service chain and `--set` in the endpoint chain (devtools/iptables.ts).
  // A "flow" is what kube-proxy decides on: a TCP connection, or a UDP socket's
  // first datagram (a new conntrack entry); each UDP request here uses a new socket.
  const STICKY = [1, 2, 3];
  type Flow = 'TCP' | 'UDP' | 'UDP-connected';
  const l4 = (f: Flow) => (f === 'TCP' ? 'TCP' : 'UDP');
  const sticky = (ip: string, f: Flow, timeout: number | undefined, backends: number[], name = 'sticky'): Service => ({
    namespace: 'team-b',
    name,
    clusterIP: ip,
    ...(timeout ? { affinityTimeout: timeout } : {}),
    ports: [{ name: 'p', port: PORT, protocol: l4(f), targetPort: TARGET }],
    endpoints: backends.map((i) => ({
      ip: pods()[i]!.ip,
      ready: true,
      terminating: false,
      ports: [{ name: 'p', port: TARGET, protocol: l4(f) }],
    })),
  });
  const rules = (svc: Service): KubeProxyService => ({
    vip: svc.clusterIP,
    port: PORT,
    proto: svc.ports[0]!.protocol === 'TCP' ? 'tcp' : 'udp',
    backends: svc.endpoints.map((e) => ({ ip: e.ip, port: TARGET })),
    ...(svc.affinityTimeout ? { affinity: svc.affinityTimeout } : {}),
  });
  const snapOf = (on: boolean, services: Service[]): Snapshot => ({ ...snap(on, services[0]!), services });
  const podOf = (backend: string) => pods().findIndex((p) => `${p.ip}:${TARGET}` === backend);
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms * SLOWDOWN));

  /** n new flows from pod 0 to ip: every one must succeed and show the ClusterIP; the backends that answered. */
  async function flows(f: Flow, ip: string, n: number, v6 = false): Promise<Record<string, number>> {
    if (f === 'TCP') {
      const r = await conn(pods()[0]!, ip, PORT, { n, v6 });
      expect(r.errors, r.error).toBe(0);
      expect(r.peer_mismatch).toBe(0);
      return r.backends;
    }
    const u = await udp(pods()[0]!, ip, PORT, { n, connected: f === 'UDP-connected', renew: true, v6 });
    expect(u.errors, u.error).toBe(0);
    expect(u.wrong_source).toBe(0);
    expect(u.peer_ok).toBe(true);
    return u.backends;
  }
  /** The one backend n flows reached (fails on a spread). */
  async function one(f: Flow, ip: string, n: number, v6 = false): Promise<string> {
    const b = await flows(f, ip, n, v6);
    expect(Object.keys(b), JSON.stringify(b)).toHaveLength(1);
    expect(Object.values(b)[0]).toBe(n);
    return Object.keys(b)[0]!;
  }
  /** Flows one at a time, each after `expired()` says the client's affinity ran out, until one reaches another backend: the rounds it took. */
  async function untilAnotherBackend(f: Flow, ip: string, expired: () => Promise<void>, rounds = 12): Promise<number> {
    let last = await one(f, ip, 3); // within the timeout: one backend
    for (let i = 1; i <= rounds; i++) {
      await expired();
      const next = await one(f, ip, 1);
      if (next !== last) return i;
      last = next;
    }
    throw new Error(`${rounds} expiries in a row chose the same backend again (chance (1/3)^${rounds}): affinity never ends`);
  }
  const affinityOf = async (ip: string) => (await affinityRows(sb.env!.dp)).filter((r) => r.frontend === `${ip}:${PORT}`);
  /** kube-proxy's `recent` lists of the frontend at ip (the sandbox's kube-proxy-style rules), with the clients each holds. */
  async function listsOf(ip: string): Promise<{ list: string; backend: string; clients: string[] }[]> {
    const [state] = (await readAffinityState()).filter((x) => x.mode === 'iptables');
    const fe = [...(state?.frontends.values() ?? [])].find((x) => x.fe.ip === ip);
    return (fe?.endpoints ?? []).map((e) => ({
      list: e.list,
      backend: `${e.backend.ip}:${e.backend.port}`,
      clients: [...(state!.lists.get(e.list)?.keys() ?? [])],
    }));
  }

  ([false, true] as const).forEach((v6, k) =>
    (['TCP', 'UDP', 'UDP-connected'] as const).forEach((f, i) => {
      it(`sessionAffinity ClientIP: N new flows from one client reach one backend (${f}${v6 ? ', AF_INET6 v4-mapped' : ''})`, async () => {
        const ip = vip(40 + i + 60 * k);
        const svc = sticky(ip, f, 10800, STICKY);
        const n = f === 'TCP' ? 30 : 12;
        await installServices(sb.env!.m, [rules(svc)]);
        await reconcile(sb.env!.dp, snapOf(false, [svc]));
        const off = await one(f, ip, n, v6);
        await reconcile(sb.env!.dp, snapOf(true, [svc]));
        const c0 = await counters(sb.env!.dp);
        const on = await one(f, ip, n, v6);
        const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
        for (const b of [off, on]) expect(STICKY).toContain(podOf(b));
        // the switch moved nobody: the client's memory was taken over from kube-proxy's list (TCP), or stayed kube-proxy's (UDP)
        expect(on).toBe(off);
        if (f !== 'TCP') {
          // a UDP port with affinity is kube-proxy's whole (udp_affinity): one memory for the client's connected and
          // unconnected sockets, so each kind reaches the backend the other did; nothing translated, no entry of ours
          expect(d.translated).toBe(0);
          expect(f === 'UDP' ? d.no_backend : d.udp_connected_left).toBe(n);
          expect(await affinityOf(ip)).toEqual([]);
          expect((await serviceRows(sb.env!.dp)).find((r) => r.frontend === `${ip}:${PORT}`)?.count).toBe(0);
          expect(await one(f === 'UDP' ? 'UDP-connected' : 'UDP', ip, n, v6)).toBe(off);
          return;
        }
        // the socket LB answered, every flow sent by the affinity entry taken over from kube-proxy
        expect(d.translated).toBe(n);
        expect(d.affinity_hit).toBe(n);
        // v4-mapped: each connect by pw_lb_conn6 and each getpeername() by pw_lb_peer6
        expect(d.v4mapped).toBe(v6 ? 2 * n : 0);
        const [entry, ...more] = await affinityOf(ip);
        expect(more).toHaveLength(0);
        expect(entry).toMatchObject({ backend: on, timeout: 10800, state: 'live' });
        // without affinity the same client spreads (the control: it is the affinity that pins it)
        const plain = sticky(ip, f, undefined, STICKY);
        await reconcile(sb.env!.dp, snapOf(true, [plain]));
        expect(Object.keys(await flows(f, ip, 60, v6)).length).toBeGreaterThan(1);
      });
    }),
  );

  // TCP: a UDP port with affinity is left to kube-proxy whole (udp_affinity; the test above shows it)
  (['TCP'] as const).forEach((f, i) => {
    it(`sessionAffinity ClientIP: switching the client's acceleration on and off moves it in neither direction; one memory at a time (${f})`, async () => {
      const ip = vip(53 + i);
      const svc = sticky(ip, f, 10800, STICKY);
      const n = f === 'TCP' ? 10 : 6;
      const client = pods()[0]!.ip;
      expect(await listsOf(ip)).toEqual([]); // no rules of this frontend yet: the lists below are the test's own
      await installServices(sb.env!.m, [rules(svc)]);
      await reconcile(sb.env!.dp, snapOf(false, [svc]));
      const first = await one(f, ip, n); // kube-proxy's rules chose, its list remembers
      for (let round = 1; round <= 2; round++) {
        // on: pw_affinity takes kube-proxy's memory over, so even the first flow is an affinity hit
        await reconcile(sb.env!.dp, snapOf(true, [svc]));
        const c0 = await counters(sb.env!.dp);
        expect(await one(f, ip, n)).toBe(first);
        const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
        expect({ round, translated: d.translated, hit: d.affinity_hit }).toEqual({ round, translated: n, hit: n });
        expect((await affinityOf(ip)).map((r) => [r.client, r.backend, r.state])).toEqual([[client, first, 'live']]);
        // kube-proxy forgets the client meanwhile (as if its entries had been reaped): only podwarp remembers it now
        for (const l of await listsOf(ip)) xtRecentWrite(l.list, '/');
        // off: kube-proxy is made to remember the client at its backend, in that endpoint's list only; podwarp forgets it
        await reconcile(sb.env!.dp, snapOf(false, [svc]));
        const lists = await listsOf(ip);
        expect(lists.filter((l) => l.clients.includes(client)).map((l) => l.backend)).toEqual([first]);
        expect(await affinityOf(ip)).toEqual([]);
        const c1 = await counters(sb.env!.dp);
        expect(await one(f, ip, n)).toBe(first);
        expect(delta(c1, await counters(sb.env!.dp), 'pw_lb').translated).toBe(0); // kube-proxy's rules answered
      }
    });

    it(`sessionAffinity ClientIP: after timeoutSeconds without a flow the client may reach another backend (${f})`, async () => {
      const ip = vip(45 + i);
      const T = 1; // the smallest timeout the API accepts
      const svc = sticky(ip, f, T, STICKY);
      await installServices(sb.env!.m, [rules(svc)]);
      await reconcile(sb.env!.dp, snapOf(false, [svc]));
      // xt_recent keeps jiffies: nothing to watch from outside, so wait the timeout out (and a margin)
      const offRounds = await untilAnotherBackend(f, ip, () => sleep(T * 1000 + 300));
      await reconcile(sb.env!.dp, snapOf(true, [svc]));
      const c0 = await counters(sb.env!.dp);
      // with the socket LB, the entry's age is visible: wait until `dump affinity` calls it expired
      const onRounds = await untilAnotherBackend(f, ip, async () => {
        await until('the affinity entry to expire', async () => (await affinityOf(ip)).some((r) => r.state === 'expired'), 10_000);
      });
      const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
      expect(d.affinity_expired).toBeGreaterThanOrEqual(onRounds);
      expect(offRounds + onRounds).toBeGreaterThan(1);
    });
  });

  (['TCP'] as const).forEach((f, i) => {
    it(`sessionAffinity ClientIP: another backend leaving changes nothing; the client's own leaving sends it to a new one it sticks to (${f})`, async () => {
      const ip = vip(48 + i);
      const FOUR = [1, 2, 3, 4];
      // another Service keeps every backend, so the ones that leave stay in pw_backends: only pw_aff_match can tell
      const other = sticky(vip(51 + i), f, undefined, FOUR, 'other');
      const n = f === 'TCP' ? 20 : 8;
      const svcOf = (gone: string[]) =>
        sticky(
          ip,
          f,
          10800,
          FOUR.filter((j) => !gone.map(podOf).includes(j)),
        );
      const notMine = (b: string) => `${pods()[FOUR.find((j) => j !== podOf(b))!]!.ip}:${TARGET}`;
      /** the client's backend; then after another backend left; then after its own left */
      async function run(on: boolean, change: (gone: string[]) => Promise<void>): Promise<string[]> {
        await installServices(sb.env!.m, [rules(svcOf([])), rules(other)]);
        await reconcile(sb.env!.dp, snapOf(on, [svcOf([]), other]));
        const first = await one(f, ip, n);
        const gone = [notMine(first)];
        await change(gone);
        const same = await one(f, ip, n);
        gone.push(first);
        await change(gone);
        return [first, same, await one(f, ip, n)];
      }
      const off = await run(false, (gone) => updateServices(sb.env!.m, [rules(svcOf(gone)), rules(other)]));
      const c0 = await counters(sb.env!.dp);
      const on = await run(true, async (gone) => void (await reconcile(sb.env!.dp, snapOf(true, [svcOf(gone), other]))));
      const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
      for (const [first, same, next] of [off, on]) {
        expect(same).toBe(first);
        expect(next).not.toBe(first);
      }
      expect(d.affinity_gone).toBe(1);
      // the on run loads kube-proxy's rules anew (empty lists): nothing to take over, its first flow chooses
      expect(d.affinity_hit).toBe(3 * n - 2);
      expect(d.translated).toBe(3 * n);
    });
  });

  // ---- a connected UDP socket whose backend leaves (item 9) ----
  // kube-proxy rewrites its rules and deletes the removed endpoint's UDP
  // conntrack entries, so a long-lived connected socket (statsd, OTLP/UDP,
  // syslog, a resolver) is NATed anew on its next datagram, transparently.
  // podwarp leaves connected UDP to kube-proxy for exactly this: the same
  // socket must move on with acceleration on as with it off.
  ([false, true] as const).forEach((v6, k) => {
    it(`connected UDP: after its backend leaves the Service, the same socket reaches a live backend (${v6 ? 'AF_INET6 v4-mapped' : 'AF_INET'})`, async () => {
      const ip = vip(55 + k);
      const ALL = [1, 2, 3];
      const svcOf = (gone: number[]) =>
        sticky(
          ip,
          'UDP-connected',
          undefined,
          ALL.filter((j) => !gone.includes(j)),
          'statsd',
        );
      const answered = (s: UdpStep): string => {
        expect(s).toMatchObject({ source_ok: true }); // the reply's source is the ClusterIP
        return (s as { backend: string }).backend;
      };
      /** the backend before the removal, the backends of the same socket's datagrams after it, the conntrack entries kube-proxy's cleanup deleted */
      async function run(on: boolean): Promise<{ before: string; after: string[]; deleted: number }> {
        await installServices(sb.env!.m, [rules(svcOf([]))]);
        await reconcile(sb.env!.dp, snapOf(on, [svcOf([])]));
        await iptables.conntrackDeleteUdp(pods()[0]!.ip, ip); // the flows of an earlier run
        const session = udpSession(pods()[0]!, ip, PORT, { connected: true, v6 });
        let closed = false;
        try {
          const before = answered(await session.request());
          for (let i = 0; i < 3; i++) expect(answered(await session.request())).toBe(before);
          const gone = [podOf(before)];
          // the endpoint leaves: kube-proxy's rules (and podwarp's maps when on), then kube-proxy's conntrack cleanup
          await updateServices(sb.env!.m, [rules(svcOf(gone))]);
          if (on) await reconcile(sb.env!.dp, snapOf(true, [svcOf(gone)]));
          const deleted = await iptables.conntrackDeleteUdp(pods()[0]!.ip, ip, before.split(':')[0]!);
          const after: string[] = [];
          for (let i = 0; i < 5; i++) after.push(answered(await session.request()));
          closed = true;
          const total = await session.close();
          expect(total).toMatchObject({ replies: 9, errors: 0, wrong_source: 0, peer_ok: true });
          return { before, after, deleted };
        } finally {
          if (!closed) await session.close();
        }
      }
      const off = await run(false);
      const c0 = await counters(sb.env!.dp);
      const on = await run(true);
      const c1 = await counters(sb.env!.dp);
      const d = delta(c0, c1, 'pw_lb');
      // the tc fast path never took the NATed flow: the backends' replies look pod-to-pod, but were never answered directly (pw_udp_ct)
      const tc = delta(c0, c1);
      expect(tc.redirected).toBe(0);
      expect(tc.udp_not_tracked).toBeGreaterThanOrEqual(9);
      for (const r of [off, on]) {
        // one live backend for the rest of the socket's life, not the one that left
        expect(new Set(r.after).size).toBe(1);
        expect(r.after[0]).not.toBe(r.before);
        expect(ALL).toContain(podOf(r.after[0]!));
        // kube-proxy NATed the socket's flow in both runs: its cleanup had an entry to delete
        expect(r.deleted).toBe(1);
      }
      expect(d.udp_connected_left).toBe(1);
      expect(d.translated).toBe(0);
    });
  });

  // ---- a long-lived unconnected UDP flow while its Service changes ----
  // kube-proxy: the flow's conntrack entry keeps every datagram of an
  // unconnected socket on the backend its first one was DNATed to, whatever
  // the rules become; its cleanup (pkg/proxy/conntrack/cleanup.go,
  // CleanStaleEntries) deletes a UDP entry only once its endpoint IP no longer
  // serves the Service. Off: kube-proxy-style rules (the ready endpoints), and
  // that cleanup done here as kube-proxy does it: the entries DNATed to each
  // endpoint that stopped serving. On: the socket LB's flow memory
  // (pw_udp_flow, pw_udp_serve); the rules and the cleanup run too, as
  // kube-proxy keeps running beside podwarp.
  it("unconnected UDP: a long-lived flow keeps its backend through a scale-up, another's scale-down and readiness flip, its own termination while serving; it moves when its own backend stops serving", async () => {
    const ip = vip(57);
    const client = pods()[0]!;
    type Eps = Map<number, Partial<ServiceEndpoint>>;
    const svcOf = (eps: Eps): Service => ({
      namespace: 'team-b',
      name: 'flow',
      clusterIP: ip,
      ports: [{ name: 'p', port: PORT, protocol: 'UDP', targetPort: TARGET }],
      endpoints: [...eps].map(([i, over]) => ({
        ip: pods()[i]!.ip,
        ready: true,
        terminating: false,
        ports: [{ name: 'p', port: TARGET, protocol: 'UDP' as const }],
        ...over,
      })),
    });
    // kube-proxy's rules, from its behaviour: the ready endpoints (there always are some here)
    const rulesOf = (eps: Eps): KubeProxyService => ({
      vip: ip,
      port: PORT,
      proto: 'udp',
      backends: [...eps].filter(([, e]) => e.ready !== false).map(([i]) => ({ ip: pods()[i]!.ip, port: TARGET })),
    });
    const answered = (s: UdpStep): string => {
      expect(s).toMatchObject({ source_ok: true }); // the reply's source is the ClusterIP
      return (s as { backend: string }).backend;
    };
    /** Per step: who answered the flow's datagrams (own: its first backend), and the conntrack entries the cleanup deleted; packets kube-proxy's rules NATed. */
    async function run(on: boolean): Promise<{ seen: { step: string; answered: string[]; deleted: number }[]; nat: number }> {
      const all: Eps = new Map([1, 2, 3].map((i) => [i, {}]));
      await installServices(sb.env!.m, [rulesOf(all)]);
      await reconcile(sb.env!.dp, snapOf(on, [svcOf(all)]));
      await iptables.conntrackDeleteUdp(client.ip, ip); // the flows of an earlier run
      const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(sb.env!.m));
      const session = udpSession(client, ip, PORT, { connected: false });
      const seen: { step: string; answered: string[]; deleted: number }[] = [];
      let own = '';
      const role = (b: string) => (b === own ? 'own' : `pod-${podOf(b)}`);
      let closed = false;
      try {
        own = answered(await session.request());
        const o = podOf(own);
        const [x, y] = [1, 2, 3].filter((i) => i !== o);
        const steps: [string, (e: Eps) => void][] = [
          ['start', () => {}],
          ['scale-up: pod 4 added', (e) => e.set(4, {})],
          ['scale-down of another backend', (e) => e.delete(x!)],
          ['another endpoint not ready', (e) => e.set(y!, { ready: false, serving: false })],
          ['own endpoint terminating, still serving', (e) => e.set(o, { ready: false, terminating: true, serving: true })],
          ['own endpoint stops serving', (e) => e.set(o, { ready: false, terminating: true, serving: false })],
        ];
        const eps: Eps = new Map(all);
        for (const [step, change] of steps) {
          const servingBefore = new Set([...eps].filter(([, e]) => e.serving !== false).map(([i]) => i));
          change(eps);
          let deleted = 0;
          if (step !== 'start') {
            await updateServices(sb.env!.m, [rulesOf(eps)]);
            if (on) await reconcile(sb.env!.dp, snapOf(true, [svcOf(eps)]));
            // kube-proxy's cleanup: the entries DNATed to an endpoint IP that no longer serves
            for (const i of servingBefore)
              if (eps.get(i)?.serving === false || !eps.has(i)) deleted += await iptables.conntrackDeleteUdp(client.ip, ip, pods()[i]!.ip);
          }
          const got: string[] = [];
          for (let i = 0; i < 3; i++) got.push(role(answered(await session.request())));
          seen.push({ step, answered: got, deleted });
        }
        closed = true;
        expect(await session.close()).toMatchObject({ replies: 19, errors: 0, wrong_source: 0 });
        return { seen, nat: (await iptables.kubeProxyPackets(kubeProxyPrefix(sb.env!.m))) - nat0 };
      } finally {
        if (!closed) await session.close();
      }
    }
    const { seen: off, nat: natOff } = await run(false);
    const c0 = await counters(sb.env!.dp);
    const { seen: on, nat } = await run(true);
    const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
    // kube-proxy NATed the flow's first datagram and its first after the move (new conntrack entries)
    expect(natOff).toBe(2);
    const stay = ['own', 'own', 'own'];
    const moved = ['pod-4', 'pod-4', 'pod-4']; // the one ready endpoint left
    // kube-proxy: the conntrack entry held the flow until its endpoint stopped serving, then the cleanup deleted it
    expect(off).toEqual([
      { step: 'start', answered: stay, deleted: 0 },
      { step: 'scale-up: pod 4 added', answered: stay, deleted: 0 },
      { step: 'scale-down of another backend', answered: stay, deleted: 0 },
      { step: 'another endpoint not ready', answered: stay, deleted: 0 },
      { step: 'own endpoint terminating, still serving', answered: stay, deleted: 0 },
      { step: 'own endpoint stops serving', answered: moved, deleted: 1 },
    ]);
    // the socket LB: the same observations, and nothing NATed by kube-proxy to clean up
    expect(on.map(({ step, answered }) => ({ step, answered }))).toEqual(off.map(({ step, answered }) => ({ step, answered })));
    expect(on.map((s) => s.deleted)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(nat).toBe(0);
    // the flow's one entry (replaced when it moved), answered by its replies, and within 2 s of its start: conntrack's 30 s
    expect((await udpFlowRows(sb.env!.dp)).filter((r) => r.frontend === `${ip}:${PORT}`)).toEqual([
      expect.objectContaining({ backend: `${pods()[4]!.ip}:${TARGET}`, state: 'answered', timeout: 30, status: 'live' }),
    ]);
    // every datagram translated by pw_lb_send4; all but the flow's first and the one after its backend stopped serving by the flow memory
    expect({
      translated: d.translated,
      hit: d.udp_flow_hit,
      gone: d.udp_flow_gone,
      expired: d.udp_flow_expired,
      rev_nat: d.rev_nat,
    }).toEqual({
      translated: 19,
      hit: 17,
      gone: 1,
      expired: 0,
      rev_nat: 19,
    });
  });

  // ---- which backend a new unconnected UDP flow takes ----
  // kube-proxy: `-m statistic --mode random` per new conntrack entry. The
  // socket LB draws at random too (bpf_get_prandom_u32) for a flow's first
  // datagram. Every new socket here follows one that takes a socket cookie
  // (pwperf -K), as a client alternating "look up, connect" does: a choice by
  // cookie would send every such flow over 2 backends to one of them.
  it('unconnected UDP: new flows spread over the backends at random, whatever the socket cookies (kube-proxy: statistic random)', async () => {
    const ip = vip(58);
    const svc = sticky(ip, 'UDP', undefined, [1, 2], 'spread');
    const N = 200;
    await installServices(sb.env!.m, [rules(svc)]);
    const spread: Record<string, Record<string, number>> = {};
    let d: Record<string, number> = {};
    for (const on of [false, true]) {
      await reconcile(sb.env!.dp, snapOf(on, [svc]));
      const c0 = await counters(sb.env!.dp);
      const u = await udp(pods()[0]!, ip, PORT, { n: N, renew: true, cookieGaps: true });
      expect(u.errors, u.error).toBe(0);
      expect(u.wrong_source).toBe(0);
      spread[on ? 'on' : 'off'] = u.backends;
      if (on) d = delta(c0, await counters(sb.env!.dp), 'pw_lb');
    }
    for (const [mode, backends] of Object.entries(spread)) {
      // each of the 2 backends takes at least 20% (fails by chance with p < 1e-17 when the choice is random)
      expect(Object.keys(backends).sort(), `${mode}: ${JSON.stringify(backends)}`).toEqual(
        [1, 2].map((i) => `${pods()[i]!.ip}:${TARGET}`).sort(),
      );
      for (const n of Object.values(backends)) expect(n, `${mode}: ${JSON.stringify(backends)}`).toBeGreaterThanOrEqual(N / 5);
    }
    // every flow was new: translated by the socket LB, none by the flow memory; one entry per socket
    expect({ translated: d.translated, hit: d.udp_flow_hit }).toEqual({ translated: N, hit: 0 });
    expect((await udpFlowRows(sb.env!.dp)).filter((r) => r.frontend === `${ip}:${PORT}`)).toHaveLength(N);
  });
});

// ---- externalIPs and LoadBalancer ingress IPs dialled from a pod (item 5) ----
// kube-proxy (iptables and nftables proxier, "pod traffic for … external
// destinations"): with externalTrafficPolicy Local, a pod's connection to an
// external IP or VIP-mode LoadBalancer IP jumps straight to the Service's
// Cluster-policy endpoints (whatever either traffic policy says), its source
// kept; with Cluster it is masqueraded; an ingress with ipMode Proxy gets no
// rule (the load balancer answers); no endpoint at all → REJECT. The socket LB
// translates the first kind at connect() and leaves the others alone.
describe('external IPs and LoadBalancer IPs from a pod: kube-proxy rules and the socket LB observed alike', () => {
  const sb = sandboxWithServers();
  const pods = () => sb.env!.m.pods;

  interface ExtScenario {
    name: string;
    /** which address the client dials */
    dial: 'externalIP' | 'ingress';
    over: Partial<Service>;
    endpoints: [number, Partial<ServiceEndpoint>][];
    /** what answers at the dialled address without podwarp (kube-proxy, or the load balancer standing in for ipMode Proxy) */
    baseline: { backends: number[]; masquerade?: true } | 'reject';
    /** the socket LB translates it; else it is left alone (kube-proxy's rule answers in both phases), with this reason */
    translated: boolean;
    left?: LeftReason;
  }
  const ELSEWHERE: [number, Partial<ServiceEndpoint>][] = [
    [1, { nodeName: 'node-b' }],
    [2, { nodeName: 'node-c' }],
    [3, { nodeName: NODE, ready: false }],
  ];
  const extScenarios: ExtScenario[] = [
    {
      name: 'externalIP, externalTrafficPolicy Local and internalTrafficPolicy Local, no endpoint on this node: every Cluster endpoint',
      dial: 'externalIP',
      over: { externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local' },
      endpoints: ELSEWHERE,
      baseline: { backends: [1, 2] },
      translated: true,
    },
    {
      name: 'LoadBalancer ingress IP (ipMode VIP), externalTrafficPolicy Local: every Cluster endpoint',
      dial: 'ingress',
      over: { externalTrafficPolicy: 'Local', loadBalancerIngress: [{ ip: '', ipMode: 'VIP' }] },
      endpoints: [[1, { nodeName: NODE }], ...ELSEWHERE.slice(1)],
      baseline: { backends: [1, 2] },
      translated: true,
    },
    {
      name: 'LoadBalancer ingress IP with ipMode Proxy: left alone, the load balancer answers',
      dial: 'ingress',
      over: { externalTrafficPolicy: 'Local', loadBalancerIngress: [{ ip: '', ipMode: 'Proxy' }] },
      endpoints: ELSEWHERE,
      // the sandbox's stand-in for the load balancer: a DNAT to pod 4, which is no endpoint of the Service
      baseline: { backends: [4] },
      translated: false,
      left: 'ip_mode_proxy',
    },
    {
      name: 'externalIP, externalTrafficPolicy Cluster: left to kube-proxy, which masquerades',
      dial: 'externalIP',
      over: {},
      endpoints: ELSEWHERE,
      baseline: { backends: [1, 2], masquerade: true },
      translated: false,
      left: 'external_masquerade',
    },
    {
      name: 'externalIP, externalTrafficPolicy Local, no usable endpoint: kube-proxy rejects (refused)',
      dial: 'externalIP',
      over: { externalTrafficPolicy: 'Local' },
      endpoints: [
        [1, { ready: false }],
        [2, { ready: false, terminating: true, serving: false }],
      ],
      baseline: 'reject',
      translated: false,
      left: 'no_endpoints',
    },
  ];

  // as above: every scenario at once (a ClusterIP and a dialled address of
  // its own, a TCP and a UDP port), one reconcile off, one on
  interface ExtCase {
    sc: ExtScenario;
    i: number;
    proto: 'TCP' | 'UDP' | 'UDP-connected';
  }
  const extCases: ExtCase[] = extScenarios.flatMap((sc, i) =>
    (['TCP', 'UDP', 'UDP-connected'] as const).map((proto) => ({ sc, i, proto })),
  );
  const dialledOf = (i: number) => vip(61 + 3 * i);
  const addr = (j: number) => `${pods()[j]!.ip}:${TARGET}`;
  const reachableOf = (sc: ExtScenario) => (sc.baseline === 'reject' ? [] : sc.baseline.backends.map(addr).sort());
  const attempts = (c: ExtCase) => (reachableOf(c.sc).length ? (c.proto === 'TCP' ? 30 : 10) : 2);
  const offSeen = new Map<ExtCase, Observed>();
  const ext: { sync?: ServiceSync } = {};

  beforeAll(async () => {
    await installServices(
      sb.env!.m,
      extScenarios.flatMap((sc, i) =>
        (['tcp', 'udp'] as const).map((l4) => ({
          vip: dialledOf(i),
          port: PORT,
          proto: l4,
          backends: sc.baseline === 'reject' ? [] : sc.baseline.backends.map((j) => ({ ip: pods()[j]!.ip, port: TARGET })),
          ...(sc.baseline === 'reject' ? { empty: 'reject' as const } : sc.baseline.masquerade ? { masquerade: true } : {}),
        })),
      ),
    );
    const services: Service[] = extScenarios.map((sc, i) => ({
      namespace: 'team-b',
      name: `ext-${i}`,
      clusterIP: vip(60 + 3 * i),
      ports: [
        { name: 'p', port: PORT, protocol: 'TCP', targetPort: TARGET },
        { name: 'u', port: PORT, protocol: 'UDP', targetPort: TARGET },
      ],
      endpoints: sc.endpoints.map(([j, o]) => ({ ip: pods()[j]!.ip, ready: true, terminating: false, ports: SLICE_PORTS, ...o })),
      ...(sc.dial === 'externalIP'
        ? { ...sc.over, externalIPs: [dialledOf(i)] }
        : { ...sc.over, loadBalancerIngress: sc.over.loadBalancerIngress!.map((g) => ({ ...g, ip: dialledOf(i) })) }),
    }));
    const snapAt = (on: boolean): Snapshot => ({
      ...sb.base!,
      node: NODE,
      zone: ZONE,
      namespaces: sb.base!.namespaces.map((ns) => ({ ...ns, accelerate: on })),
      services,
    });
    await reconcile(sb.env!.dp, snapAt(false));
    for (const c of extCases) {
      if (c.sc.baseline === 'reject') await icmpTokens();
      offSeen.set(c, await observe(pods()[0]!, c.proto, dialledOf(c.i), attempts(c)));
    }
    ext.sync = new ServiceSync(new BpfServiceMaps(sb.env!.dp));
    await reconcile(sb.env!.dp, snapAt(true), undefined, undefined, ext.sync);
  }, 600_000 * SLOWDOWN);

  for (const c of extCases) {
    const { sc, proto } = c;
    it(`${sc.name} (${proto})`, async () => {
      const dialled = dialledOf(c.i);
      const protocol = proto === 'TCP' ? 'TCP' : 'UDP';
      const reachable = reachableOf(sc);
      const n = attempts(c);
      const off = offSeen.get(c)!;
      const sync = ext.sync!;
      const c0 = await counters(sb.env!.dp);
      if (sc.baseline === 'reject') await icmpTokens();
      const on = await observe(pods()[0]!, proto, dialled, n);
      const d = delta(c0, await counters(sb.env!.dp), 'pw_lb');

      // the baseline is what its rules say …
      expect(off.outcome, `baseline: ${off.detail}`).toBe(reachable.length ? 'ok' : proto === 'UDP' ? 'timeout' : 'refused');
      expect(off.peerMismatch).toBe(0);
      // … and acceleration changes nothing the application sees: outcome, getpeername() / reply source = the dialled address
      expect(on.outcome, `socket LB: ${on.detail}`).toBe(off.outcome);
      expect(on.peerMismatch).toBe(0);
      for (const b of [...off.backends, ...on.backends]) expect(reachable).toContain(b);
      if (proto === 'TCP') {
        expect(off.backends).toEqual(reachable);
        expect(on.backends).toEqual(reachable);
      } else if (reachable.length) {
        // one socket is one flow: all its datagrams reach one backend, with kube-proxy's rules as with the socket LB
        expect(off.backends, `baseline: ${off.detail}`).toHaveLength(1);
        expect(on.backends, `socket LB: ${on.detail}`).toHaveLength(1);
      }
      // the frontend is in pw_svc with the backends kube-proxy's short-circuit uses, or with none (left, with its reason)
      const rows = await serviceRows(sb.env!.dp);
      const row = rows.find((r) => r.frontend === `${dialled}:${PORT}` && r.proto === protocol);
      expect(row?.count).toBe(sc.translated ? reachable.length : 0);
      if (sc.translated) expect(row!.slots.map((s) => s.backend).sort()).toEqual(reachable);
      const key = `${dialled}:${PORT}/${protocol === 'TCP' ? 6 : 17}`;
      expect(sync.leftServices().find((l) => l.frontend === key)?.reason).toBe(sc.left);
      expect(sync.namedFrontends(100).find((f) => f.frontend === key)?.kind).toBe(sc.dial === 'externalIP' ? 'external_ip' : 'lb_ingress');
      // who answered: the socket LB, or kube-proxy's rule (a left frontend, and connected UDP always: docs/services.md).
      // Translated: TCP each connect() by pw_lb_conn4 and each getpeername() by pw_lb_peer4; unconnected UDP
      // each datagram by pw_lb_send4 and each reply's source by pw_lb_recv4
      const translated = sc.translated && proto !== 'UDP-connected';
      expect(d.translated).toBe(translated ? n : 0);
      expect(d.rev_nat).toBe(translated ? n : 0);
      // every frontend is in pw_svc (a left one with count 0): the one connect() of the UDP socket is counted and left to kube-proxy
      if (proto === 'UDP-connected') expect(d.udp_connected_left).toBe(1);
    });
  }
});
