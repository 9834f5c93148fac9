// Differential: which endpoints a Service resolves to (issue 10, items 2-4).
// Each scenario runs twice in one test on the sandbox: acceleration off, so
// the client's connects take kube-proxy-style iptables rules written by hand
// from kube-proxy's documented behaviour, then on (the socket LB). What the
// application observes must be the same: the connect outcome (ok, refused,
// timeout), which backends answer, getpeername() and the reply source.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service, ServiceEndpoint, Snapshot } from '../../src/model.js';
import { conn, startServer, udp, type Server } from '../../devtools/perf.js';
import { reconcile } from '../../src/reconciler.js';
import { installServices, vip } from '../../devtools/sandbox.js';
import { loadStateFile } from '../../src/state/load.js';
import { counters, delta, setUp, tearDown, type Env } from './helpers.js';

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
}

interface Scenario {
  name: string;
  internalTrafficPolicy?: 'Local';
  /** pod index (1..3) → endpoint fields */
  endpoints: [number, Partial<ServiceEndpoint>][];
  /** kube-proxy's rules, written from its behaviour, not from podwarp's code: the backends, else reject/drop */
  kubeProxy: number[] | 'reject' | 'drop';
}

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
];

describe('service endpoint selection: kube-proxy rules and the socket LB observed alike', () => {
  let env: Env | undefined;
  let base: Snapshot;
  const servers: Server[] = [];
  const pods = () => env!.m.pods;

  beforeAll(async () => {
    env = await setUp({ pods: 4, namespaces: ['team-a', 'team-b'] });
    base = loadStateFile(env.m.stateFile).snapshot;
    for (const p of env.m.pods.slice(1)) servers.push(await startServer(p, TARGET));
  });

  afterAll(async () => {
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  const service = (sc: Scenario, ip: string, protocol: 'TCP' | 'UDP'): Service => ({
    namespace: 'team-b',
    name: 'sem',
    clusterIP: ip,
    ...(sc.internalTrafficPolicy ? { internalTrafficPolicy: sc.internalTrafficPolicy } : {}),
    ports: [{ name: 'p', port: PORT, protocol, targetPort: TARGET }],
    endpoints: sc.endpoints.map(([i, over]) => ({ ip: pods()[i]!.ip, ready: true, terminating: false, ports: [], ...over })),
  });
  const snap = (on: boolean, svc: Service): Snapshot => ({
    ...base,
    node: NODE,
    zone: ZONE,
    namespaces: base.namespaces.map((n) => ({ ...n, accelerate: on })),
    services: [svc],
  });
  const outcome = (n: number, ok: number, refused: number, timeouts: number): Outcome =>
    ok === n ? 'ok' : refused === n ? 'refused' : timeouts === n ? 'timeout' : 'mixed';

  async function observe(proto: 'TCP' | 'UDP' | 'UDP-connected', ip: string, n: number): Promise<Observed> {
    if (proto === 'TCP') {
      const r = await conn(pods()[0]!, ip, PORT, { n });
      return {
        outcome: outcome(n, r.connections, r.refused, r.timeouts),
        backends: Object.keys(r.backends).sort(),
        peerMismatch: r.peer_mismatch,
      };
    }
    const u = await udp(pods()[0]!, ip, PORT, { n, connected: proto === 'UDP-connected' });
    return {
      outcome: outcome(n, u.replies, u.refused, u.timeouts),
      backends: Object.keys(u.backends).sort(),
      peerMismatch: u.wrong_source + (u.peer_ok ? 0 : 1),
    };
  }

  scenarios.forEach((sc, i) => {
    for (const proto of ['TCP', 'UDP', 'UDP-connected'] as const) {
      it(`${sc.name} (${proto})`, async () => {
        const ip = vip(20 + i);
        const l4 = proto === 'TCP' ? 'tcp' : 'udp';
        const svc = service(sc, ip, proto === 'TCP' ? 'TCP' : 'UDP');
        const reachable = Array.isArray(sc.kubeProxy) ? sc.kubeProxy.map((j) => `${pods()[j]!.ip}:${TARGET}`).sort() : [];
        await installServices(env!.m, [
          {
            vip: ip,
            port: PORT,
            proto: l4,
            backends: Array.isArray(sc.kubeProxy) ? sc.kubeProxy.map((j) => ({ ip: pods()[j]!.ip, port: TARGET })) : [],
            empty: Array.isArray(sc.kubeProxy) ? undefined : sc.kubeProxy,
          },
        ]);
        // a failing scenario costs a timeout per attempt: few attempts
        const n = reachable.length ? (proto === 'TCP' ? 40 : 10) : 2;

        await reconcile(env!.dp, snap(false, svc));
        const off = await observe(proto, ip, n);
        await reconcile(env!.dp, snap(true, svc));
        const c0 = await counters(env!.dp);
        const on = await observe(proto, ip, n);
        const d = delta(c0, await counters(env!.dp), 'pw_lb');

        // kube-proxy's outcome is what the rules say …
        const want: Outcome = reachable.length ? 'ok' : sc.kubeProxy === 'reject' && proto !== 'UDP' ? 'refused' : 'timeout';
        expect(off.outcome).toBe(want);
        // … and acceleration changes nothing the application sees
        expect(on.outcome).toBe(off.outcome);
        expect(on.peerMismatch).toBe(0);
        expect(off.peerMismatch).toBe(0);
        if (proto === 'TCP') {
          expect(off.backends).toEqual(reachable);
          expect(on.backends).toEqual(off.backends);
          // and it was the socket LB that answered with acceleration on (a left Service: kube-proxy's rules)
          expect(d.translated).toBe(reachable.length ? n : 0);
        } else {
          for (const b of [...off.backends, ...on.backends]) expect(reachable).toContain(b);
          if (reachable.length) expect(d.translated).toBeGreaterThan(0);
        }
      });
    }
  });
});
