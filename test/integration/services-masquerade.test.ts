// Differential: kube-proxy's masqueradeAll (issue 24, item 4). kube-proxy
// then masquerades every connection to a Service, so the backend sees the
// node's address, not the pod's. podwarp cannot give that at connect():
// with masqueradeAll it leaves every frontend to kube-proxy. Observed with
// kube-proxy-style rules that masquerade (devtools/iptables.ts), acceleration
// off, then on: the same outcome, the same backends, getpeername() and the
// reply source the ClusterIP, and the peer address the backend saw
// (conntrack's reply direction) the masqueraded one in both phases. Then
// masqueradeAll off, acceleration on: the socket LB translates and the
// backend sees the pod's own address, which shows the observation tells
// the two apart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service, Snapshot } from '../../src/model.js';
import { conn, startServer, udp, type Server } from '../../devtools/perf.js';
import { conntrackPeers } from '../../devtools/iptables.js';
import { installServices, vip } from '../../devtools/sandbox.js';
import { serviceRows } from '../../src/commands/dump.js';
import { reconcile } from '../../src/reconciler.js';
import { BpfServiceMaps } from '../../src/services/maps.js';
import { ServiceSync } from '../../src/services/sync.js';
import { loadStateFile } from '../../src/state/load.js';
import { SLOWDOWN, counters, delta, setUp, tearDown, type Env } from './helpers.js';

const PORT = 80;
const TARGET = 8080;
const N = 20;

describe("kube-proxy's masqueradeAll: every Service left to kube-proxy, which masquerades it", () => {
  let env: Env | undefined;
  let base: Snapshot;
  const servers: Server[] = [];
  const VIP = vip(90);

  beforeAll(async () => {
    env = await setUp({ pods: 3, namespaces: ['team-a', 'team-b'] });
    base = loadStateFile(env.m.stateFile).snapshot;
    for (const p of env.m.pods.slice(1)) servers.push(await startServer(p, TARGET));
    const backends = env.m.pods.slice(1).map((p) => ({ ip: p.ip, port: TARGET }));
    // kube-proxy with masqueradeAll: every Service connection masqueraded
    await installServices(env.m, [
      { vip: VIP, port: PORT, proto: 'tcp', backends, masquerade: true },
      { vip: VIP, port: PORT, proto: 'udp', backends, masquerade: true },
    ]);
  }, 300_000 * SLOWDOWN);
  afterAll(async () => {
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  const service = (): Service => ({
    namespace: 'team-b',
    name: 'masq',
    clusterIP: VIP,
    ports: [
      { name: 'p', port: PORT, protocol: 'TCP', targetPort: TARGET },
      { name: 'u', port: PORT, protocol: 'UDP', targetPort: TARGET },
    ],
    endpoints: env!.m.pods.slice(1).map((p) => ({
      ip: p.ip,
      ready: true,
      terminating: false,
      ports: [
        { name: 'p', port: TARGET, protocol: 'TCP' as const },
        { name: 'u', port: TARGET, protocol: 'UDP' as const },
      ],
    })),
  });
  const snap = (accelerate: boolean, masqueradeAll: boolean): Snapshot => ({
    ...base,
    node: 'node-a',
    masqueradeAll,
    namespaces: base.namespaces.map((n) => ({ ...n, accelerate })),
    services: [service()],
  });

  interface Seen {
    tcpOk: number;
    tcpBackends: string[];
    peerMismatch: number;
    udpReplies: number;
    udpWrongSource: number;
    /** the peer address the backends saw, per protocol (conntrack: only flows the rules translated have an entry to the ClusterIP) */
    peers: { tcp: string[]; udp: string[] };
    translated: number;
  }
  const backendsAll = () =>
    env!.m.pods
      .slice(1)
      .map((p) => `${p.ip}:${TARGET}`)
      .sort();
  const client = () => env!.m.pods[0]!;

  /** One phase: N connects and N datagrams from pod 0 to the ClusterIP, with what the backends saw. */
  async function phase(accelerate: boolean, masqueradeAll: boolean, sync: ServiceSync): Promise<Seen> {
    await reconcile(env!.dp, snap(accelerate, masqueradeAll), undefined, undefined, sync);
    for (const p of ['tcp', 'udp'] as const) await conntrackPeers(p, client().ip, VIP, true);
    const c0 = await counters(env!.dp);
    const t = await conn(client(), VIP, PORT, { n: N });
    const u = await udp(client(), VIP, PORT, { n: N });
    const d = delta(c0, await counters(env!.dp), 'pw_lb');
    return {
      tcpOk: t.connections,
      tcpBackends: Object.keys(t.backends).sort(),
      peerMismatch: t.peer_mismatch + (u.peer_ok ? 0 : 1),
      udpReplies: u.replies,
      udpWrongSource: u.wrong_source,
      peers: {
        tcp: [...new Set(await conntrackPeers('tcp', client().ip, VIP))],
        udp: [...new Set(await conntrackPeers('udp', client().ip, VIP))],
      },
      translated: d.translated ?? 0,
    };
  }

  it('acceleration off and on: the same backends, peers and ClusterIP to the client; the backend sees the node, not the pod', async () => {
    const sync = new ServiceSync(new BpfServiceMaps(env!.dp));
    const off = await phase(false, true, sync);
    const on = await phase(true, true, sync);
    for (const [what, s] of [
      ['off', off],
      ['on', on],
    ] as const) {
      expect(s.tcpOk, what).toBe(N);
      expect(s.tcpBackends, what).toEqual(backendsAll());
      expect(s.udpReplies, what).toBe(N);
      expect(s.peerMismatch + s.udpWrongSource, what).toBe(0);
      // every flow went through kube-proxy's rules and was masqueraded: one peer address, not the client's
      expect(s.peers.tcp, what).toHaveLength(1);
      expect(s.peers.tcp[0], what).not.toBe(client().ip);
      expect(s.peers.udp, what).toEqual(s.peers.tcp);
    }
    expect(on.peers).toEqual(off.peers);
    // podwarp translated nothing: the frontends are in pw_svc with no backend, left with their reason
    expect(on.translated).toBe(0);
    const rows = (await serviceRows(env!.dp)).filter((r) => r.frontend === `${VIP}:${PORT}`);
    expect(rows.map((r) => [r.proto, r.count]).sort()).toEqual([
      ['TCP', 0],
      ['UDP', 0],
    ]);
    expect(sync.leftServices().map((l) => l.reason)).toEqual(['masquerade_all', 'masquerade_all']);
    expect(sync.leftCounts().masquerade_all).toBe(2);
  });

  it('masqueradeAll off, acceleration on: the socket LB translates, so the backend sees the pod (what masqueradeAll must prevent)', async () => {
    const sync = new ServiceSync(new BpfServiceMaps(env!.dp));
    const on = await phase(true, false, sync);
    expect(on.tcpOk).toBe(N);
    expect(on.udpReplies).toBe(N);
    expect(on.peerMismatch + on.udpWrongSource).toBe(0);
    // TCP: each connect(); unconnected UDP: each datagram
    expect(on.translated).toBe(2 * N);
    // no flow reached kube-proxy's rules (the destination was rewritten before): nothing masqueraded
    expect(on.peers).toEqual({ tcp: [], udp: [] });
    expect(sync.leftCounts().masquerade_all ?? 0).toBe(0);
  });
});
