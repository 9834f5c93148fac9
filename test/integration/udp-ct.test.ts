// The tc fast path and flows it must not redirect (docs/fast-path.md):
// UDP is redirected only once a flow was answered directly between two enabled
// pods (pw_udp_ct), so a UDP flow kube-proxy NATs keeps its reverse NAT; ICMP
// and SCTP always take the normal path. Differential: what the client sees
// with acceleration on equals what it sees with it off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as iptables from '../../devtools/iptables.js';
import { startServer, udp, type Server, type UdpResult } from '../../devtools/perf.js';
import { installServices, kubeProxyPrefix, podCommand, vip, type SandboxPod } from '../../devtools/sandbox.js';
import { onLines, run, spawnLong } from '../../host/exec.js';
import { CONFIG_FLAGS } from '../../abi/schema.js';
import { readActual } from '../../src/pods/apply.js';
import { flowRows } from '../../src/commands/dump.js';
import { reconcile } from '../../src/reconciler.js';
import { loadStateFile } from '../../src/state/load.js';
import type { Snapshot } from '../../src/model.js';
import { counters, delta, hostTx, setUp, tearDown, type Env } from './helpers.js';

const PY = process.env.PODWARP_PYTHON ?? 'python3';
const TC_ONLY = { sockmap: false };

/** Receives `n` raw IPv4 packets of protocol `proto` from `src` carrying `mark`; prints "ready" once bound, the count at the end. */
const RAW_RECV = `
import socket, sys
proto, src, mark, n = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
s.settimeout(20)
print("ready", flush=True)
got = 0
try:
    while got < n:
        pkt, (addr, _) = s.recvfrom(65535)
        if addr == src and mark in pkt:
            got += 1
except socket.timeout:
    pass
print(got, flush=True)
`;

/** Sends `n` raw IPv4 packets of protocol `proto` to `dst`: an SCTP common header (ports 5000 → 5001) and `mark`. */
const RAW_SEND = `
import socket, struct, sys
proto, dst, mark, n = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
for i in range(n):
    s.sendto(struct.pack("!HHII", 5000, 5001, 0, i) + mark, (dst, 0))
`;

/** ICMP echo: sends `n` requests to `dst`, prints how many replies came back intact. */
const PING = `
import os, socket, struct, sys, time
dst, n = sys.argv[1], int(sys.argv[2])
def csum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
ident, ok = os.getpid() & 0xffff, 0
for seq in range(n):
    body = b"podwarp-icmp-%04d" % seq
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, seq) + body, (dst, 0))
    deadline = time.time() + 2
    while time.time() < deadline:
        try:
            pkt, (addr, _) = s.recvfrom(2048)
        except socket.timeout:
            break
        ihl = (pkt[0] & 15) * 4
        t, _, _, i, q = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
        if addr == dst and t == 0 and i == ident and q == seq and pkt[ihl + 8:] == body:
            ok += 1
            break
print(ok, flush=True)
`;

const python = async (pod: SandboxPod, script: string, args: (string | number)[]) => {
  const r = await run(`python3 in ${pod.name}`, podCommand(pod, [PY, '-c', script, ...args.map(String)]), { reject: false });
  if (r.exitCode !== 0) throw new Error(`python3 in ${pod.name}: exit ${r.exitCode}: ${r.stderr}`);
  return r.stdout.trim();
};

describe('tc fast path: UDP flow tracking, other protocols', () => {
  let env: Env | undefined;
  let base: Snapshot;
  const servers: Server[] = [];
  const DNS = vip(0);
  const pods = () => env!.m.pods;

  // no Service in the snapshot: podwarp does not program the frontend, kube-proxy's rules DNAT it
  // (as for every frontend podwarp leaves to kube-proxy), while pw_config still says "every
  // service resolved at connect()" (the rule that let UDP replies skip the reverse NAT before)
  const snap = (on: boolean): Snapshot => ({
    ...base,
    namespaces: base.namespaces.map((n) => ({ ...n, accelerate: on })),
    services: [],
  });

  beforeAll(async () => {
    env = await setUp({ pods: 3, namespaces: ['team-a', 'team-b'] });
    base = loadStateFile(env.m.stateFile).snapshot;
    for (const p of env.m.pods.slice(1)) servers.push(await startServer(p, 8080));
    await installServices(env.m, [
      { vip: DNS, port: 53, proto: 'udp', backends: env.m.pods.slice(1).map((p) => ({ ip: p.ip, port: 8080 })) },
    ]);
  });

  afterAll(async () => {
    for (const s of servers) await s.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  /** What the application observes of a UDP exchange (no counts of which backend: those are random). */
  const seen = (r: UdpResult & { error?: string }) => ({
    error: r.error,
    replies: r.replies,
    errors: r.errors,
    refused: r.refused,
    timeouts: r.timeouts,
    wrong_source: r.wrong_source,
    peer_ok: r.peer_ok,
  });
  const backendsOk = (r: UdpResult) =>
    Object.keys(r.backends).every((b) =>
      pods()
        .slice(1)
        .some((p) => b === `${p.ip}:8080`),
    );

  it('UDP to a ClusterIP kube-proxy NATs: replies come from the ClusterIP, with acceleration on exactly as off', async () => {
    const runs = async () => ({
      unconnected: await udp(pods()[0]!, DNS, 53, { n: 30 }),
      connected: await udp(pods()[0]!, DNS, 53, { n: 30, connected: true }),
      newFlows: await udp(pods()[0]!, DNS, 53, { n: 12, renew: true }),
    });

    await reconcile(env!.dp, snap(false), undefined, TC_ONLY);
    const off = await runs();

    await reconcile(env!.dp, snap(true), undefined, TC_ONLY);
    const actual = await readActual(env!.dp);
    expect((actual.config?.flags ?? 0) & CONFIG_FLAGS.TC_UDP).toBe(CONFIG_FLAGS.TC_UDP);
    const c0 = await counters(env!.dp);
    const nat0 = await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m));
    const on = await runs();
    const d = delta(c0, await counters(env!.dp));
    const nat = (await iptables.kubeProxyPackets(kubeProxyPrefix(env!.m))) - nat0;

    for (const k of ['unconnected', 'connected', 'newFlows'] as const) {
      expect({ k, ...seen(on[k]) }).toEqual({ k, ...seen(off[k]) });
      expect(backendsOk(on[k]) && backendsOk(off[k])).toBe(true);
    }
    expect(seen(on.unconnected)).toMatchObject({ replies: 30, errors: 0, wrong_source: 0 });
    expect(seen(on.connected)).toMatchObject({ replies: 30, errors: 0, wrong_source: 0, peer_ok: true });
    expect(seen(on.newFlows)).toMatchObject({ replies: 12, errors: 0, wrong_source: 0 });
    // the backends' replies look pod-to-pod to the tc program but were never answered directly
    expect(d.redirected).toBe(0);
    expect(d.udp_not_tracked).toBeGreaterThanOrEqual(72);
    expect(nat).toBeGreaterThanOrEqual(14); // kube-proxy's rules saw each new flow (3 sockets + 12 renewed, conntrack: first packet only)
  });

  it('direct pod→pod UDP is redirected once answered, every byte intact', async () => {
    await reconcile(env!.dp, snap(true), undefined, TC_ONLY);
    const [client, srv] = [pods()[0]!, pods()[1]!];
    const c0 = await counters(env!.dp);
    const host0 = await hostTx(srv);
    const u = await udp(client, srv.ip, 8080, { n: 200 });
    const c = await udp(client, srv.ip, 8080, { n: 200, connected: true });
    const host = (await hostTx(srv)) - host0;
    const d = delta(c0, await counters(env!.dp));
    // pwperf checks each reply's bytes against its request (errors) and its source (wrong_source)
    expect(seen(u)).toMatchObject({ replies: 200, errors: 0, wrong_source: 0 });
    expect(seen(c)).toMatchObject({ replies: 200, errors: 0, wrong_source: 0, peer_ok: true });
    // two flows: each one's first request takes the normal path, its answer and all the rest are redirected
    expect(d.udp_not_tracked).toBe(2);
    expect(d.redirected).toBeGreaterThanOrEqual(2 * 400 - 2);
    expect(host).toBeLessThan(20); // the server's host veth did not carry them
    // `podwarp dump flows` shows both flows answered and counting
    const flows = (await flowRows(env!.dp)).filter((f) => f.proto === 'UDP' && f.server === `${srv.ip}:8080`);
    expect(flows.filter((f) => f.client.startsWith(`${client.ip}:`)).map((f) => [f.state, f.live])).toEqual([
      ['answered', true],
      ['answered', true],
    ]);
  });

  it('ICMP and SCTP between enabled pods take the normal path (not_tcp_udp) and arrive', async () => {
    await reconcile(env!.dp, snap(true), undefined, TC_ONLY);
    const [a, b] = [pods()[0]!, pods()[1]!];
    const N = 20;

    const c0 = await counters(env!.dp);
    const echoed = await python(a, PING, [b.ip, 5]);
    const d0 = delta(c0, await counters(env!.dp));
    expect(echoed).toBe('5');
    expect(d0.not_tcp_udp).toBeGreaterThanOrEqual(10); // requests at a's veth, replies at b's
    expect(d0.redirected).toBe(0);

    const mark = `podwarp-sctp-${env!.id}`;
    const recv = spawnLong(podCommand(b, [PY, '-c', RAW_RECV, '132', a.ip, mark, String(N)]));
    try {
      const out: string[] = [];
      await new Promise<void>((resolve, reject) => {
        onLines(recv.stdout, (l) => {
          out.push(l);
          if (l === 'ready') resolve();
        });
        void recv.then((r) => reject(new Error(`raw receiver exited before it was ready: ${String(r.stderr)}`)));
      });
      const c1 = await counters(env!.dp);
      const host0 = await hostTx(b);
      await python(a, RAW_SEND, [132, b.ip, mark, N]);
      const r = await recv;
      const host = (await hostTx(b)) - host0;
      const d = delta(c1, await counters(env!.dp));
      expect({ exit: r.exitCode, got: out.at(-1) }).toEqual({ exit: 0, got: String(N) });
      expect(d.not_tcp_udp).toBeGreaterThanOrEqual(N);
      expect(d.redirected).toBe(0);
      expect(host).toBeGreaterThanOrEqual(N); // delivered by the host stack, through b's host veth
    } finally {
      recv.kill('SIGKILL');
      await Promise.race([recv, new Promise((r) => setTimeout(r, 2000))]);
    }
  });
});
