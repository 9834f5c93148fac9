// pw_lb.h, the socket LB, through the test programs of bpf/tests/lb.c (one
// per production entry: conn4, conn6, send4, and the reverse translation of
// recv4/peer4 and recv6/peer6): service selection over the master/slot
// layout of pw_svc + pw_backends, sessionAffinity ClientIP, unconnected UDP
// flow memory (pw_udp_flow, pw_udp_serve), and reverse NAT. Each run checks
// the destination the socket is left with, the counters that moved in
// pw_stats, and what pw_revnat, pw_affinity and pw_udp_flow hold afterwards.
import { beforeEach, describe, expect, it } from 'vitest';
import { PROTO, UDP_CT_STATE, UDP_CT_TIMEOUT_NS, UDP_FLOW } from '../../abi/schema.js';
import type { Datapath } from '../../loader/datapath.js';
import { clearMaps, moved, reasonCounters } from './helpers.js';
import {
  bpfSkipReason,
  ip4,
  ip6,
  runLogic,
  sockAddr,
  sockAddrDest,
  useLogic,
  v4mapped,
  type LogicRun,
  type Mock,
  type SockAddr,
} from './logic.js';

const skip = bpfSkipReason();
let dp: Datapath;

const SEC = 1_000_000_000n;
const NOW = 5_000_000n * SEC; // a monotonic clock reading far from 0
const SCTP = 132;
const TCP_ESTABLISHED = 1;

interface Frontend {
  ip: string;
  port: number;
  proto: number;
  /** sessionAffinity ClientIP timeout, s (0: none) */
  timeout?: number;
  /** the master entry's count */
  count: number;
  /** backend id of each slot 1..; undefined: the slot is missing */
  slots: (number | undefined)[];
}
const BACKENDS: Record<number, { ip: string; port: number; proto: number }> = {
  11: { ip: '10.244.1.11', port: 8080, proto: PROTO.TCP },
  12: { ip: '10.244.1.12', port: 8080, proto: PROTO.TCP },
  13: { ip: '10.244.2.13', port: 8081, proto: PROTO.TCP },
  14: { ip: '10.244.2.14', port: 8080, proto: PROTO.TCP }, // only in a stale slot past the count
  21: { ip: '10.244.1.21', port: 5353, proto: PROTO.UDP },
  22: { ip: '10.244.1.22', port: 5353, proto: PROTO.UDP },
  41: { ip: '10.244.1.41', port: 8443, proto: PROTO.TCP },
  42: { ip: '10.244.2.42', port: 8443, proto: PROTO.TCP },
  45: { ip: '10.244.1.45', port: 53, proto: PROTO.UDP },
  46: { ip: '10.244.2.46', port: 53, proto: PROTO.UDP },
};
const WEB: Frontend = { ip: '10.96.0.10', port: 80, proto: PROTO.TCP, count: 3, slots: [11, 12, 13, 14] }; // slot 4: stale
const DNS: Frontend = { ip: '10.96.0.53', port: 53, proto: PROTO.UDP, count: 2, slots: [21, 22] };
const EMPTY: Frontend = { ip: '10.96.0.20', port: 80, proto: PROTO.TCP, count: 0, slots: [] };
const NO_SLOT: Frontend = { ip: '10.96.0.30', port: 80, proto: PROTO.TCP, count: 2, slots: [11, undefined] };
const NO_BACKEND: Frontend = { ip: '10.96.0.31', port: 80, proto: PROTO.TCP, count: 1, slots: [99] };
const STICKY: Frontend = { ip: '10.96.0.40', port: 443, proto: PROTO.TCP, timeout: 10800, count: 2, slots: [41, 42] };
const STICKY_UDP: Frontend = { ip: '10.96.0.41', port: 53, proto: PROTO.UDP, timeout: 60, count: 2, slots: [45, 46] };
/** Another frontend with affinity, same backends as STICKY: its own entries. */
const STICKY_ALT: Frontend = { ip: '10.96.0.40', port: 8443, proto: PROTO.TCP, timeout: 10800, count: 2, slots: [41, 42] };
const FRONTENDS = [WEB, DNS, EMPTY, NO_SLOT, NO_BACKEND, STICKY, STICKY_UDP, STICKY_ALT];

/** Client pods: their pod cgroup id (pw_lb_client) and IP; a process of one sits in a container cgroup below it. */
const CLIENTS = {
  A: { pod: 0xa0n, ip: '10.244.9.1' },
  B: { pod: 0xb0n, ip: '10.244.9.2' },
};
/** bpf_get_current_ancestor_cgroup_id of a process in a container of pod c: root, kubepods, the pod, the container. */
const inPod = (c: { pod: bigint }) => ({ cgroups: [1n, 0x100n, c.pod, c.pod + 1n] });
const svcKey = (f: Frontend, slot: number) => ({ ip: f.ip, port: f.port, proto: f.proto, slot });
const affKey = (f: Frontend, client: string) => ({ client, ip: f.ip, port: f.port, proto: f.proto });
const serveKey = (f: Frontend, id: number) => ({ ip: f.ip, port: f.port, proto: f.proto, ep_ip: BACKENDS[id]!.ip });
const flowKey = (f: Frontend, cookie: bigint) => ({ cookie, ip: f.ip, port: f.port, proto: f.proto });

/** The flows of pw_udp_flow: frontend, cookie, backend, state, times. */
const udpFlows = async () =>
  (await dp.maps.dump('pw_udp_flow'))
    .sort((a, b) => Number(a.key.cookie) - Number(b.key.cookie) || String(a.key.ip).localeCompare(String(b.key.ip)))
    .map((e) => ({
      cookie: e.key.cookie,
      frontend: `${e.key.ip}:${e.key.port}`,
      backend: `${e.value.ip}:${e.value.port}`,
      state: Number(e.value.state),
      first_ns: e.value.first_ns,
      last_ns: e.value.last_ns,
    }));

/** Remembers flow (cookie → frontend) on backend `id`, first and last datagram at the given times. */
const rememberFlow = (f: Frontend, cookie: bigint, id: number, state: number, firstNs: bigint, lastNs: bigint) =>
  dp.maps.write(
    'pw_udp_flow',
    [
      {
        key: flowKey(f, cookie),
        value: { ip: BACKENDS[id]!.ip, port: BACKENDS[id]!.port, state, first_ns: firstNs, last_ns: lastNs },
      },
    ],
    [],
  );

/** Remembers backend `id` for client `client` at `lastNs`. */
const remember = (f: Frontend, client: string, id: number, lastNs: bigint) =>
  dp.maps.write('pw_affinity', [{ key: affKey(f, client), value: { backend_id: id, last_ns: lastNs } }], []);

const affinity = async () =>
  (await dp.maps.dump('pw_affinity'))
    .sort((a, b) => String(a.key.client).localeCompare(String(b.key.client)) || Number(a.key.port) - Number(b.key.port))
    .map((e) => ({ ...e.key, backend_id: e.value.backend_id, last_ns: e.value.last_ns }));

const revnat = async () =>
  (await dp.maps.dump('pw_revnat')).map((e) => ({
    cookie: e.key.cookie,
    backend: `${e.key.ip}:${e.key.port}`,
    service: `${e.value.ip}:${e.value.port}`,
  }));

/** Runs `prog`; checks the return value (always 1: the call goes on) and that exactly the `counted` reasons moved, by one each. */
async function lb(prog: string, ctx: SockAddr, mock: Mock, counted: string[]): Promise<LogicRun> {
  const before = await reasonCounters(dp, 'pw_lb');
  const r = await runLogic(dp, `test_lb_${prog}`, sockAddr(ctx), mock);
  const after = await reasonCounters(dp, 'pw_lb');
  expect({ retval: r.retval, moved: moved(before, after) }).toEqual({ retval: 1, moved: Object.fromEntries(counted.map((c) => [c, 1])) });
  return r;
}

/** The IPv4 destination the socket is left with. */
const dest = (r: LogicRun) => {
  const d = sockAddrDest(r.ctx);
  expect(d.portHigh).toBe(0);
  return `${d.ip4}:${d.port}`;
};
const backend = (id: number) => `${BACKENDS[id]!.ip}:${BACKENDS[id]!.port}`;
const tcpTo = (f: Frontend, port = f.port): SockAddr => ({ ip4: f.ip, port, protocol: PROTO.TCP });
const udpTo = (f: Frontend, port = f.port): SockAddr => ({ ip4: f.ip, port, protocol: PROTO.UDP });

describe.skipIf(!!skip)(`pw_lb.h${skip ? ` — skipped: ${skip}` : ''}`, () => {
  useLogic(['lb'], (d) => (dp = d));

  beforeEach(async () => {
    // the service maps as src/services/sync.ts writes them: backends, slots, masters; no other state
    await dp.maps.write(
      'pw_backends',
      Object.entries(BACKENDS).map(([id, b]) => ({ key: { id: Number(id) }, value: { ...b, _pad0: 0 } })),
      [],
    );
    await clearMaps(dp, ['pw_svc', 'pw_aff_match', 'pw_affinity', 'pw_revnat', 'pw_udp_flow', 'pw_udp_serve', 'pw_lb_client']);
    // the client pods' cgroups, as src/pods/apply.ts writes them
    await dp.maps.write(
      'pw_lb_client',
      Object.values(CLIENTS).map((c) => ({ key: { id: c.pod }, value: { ip: c.ip } })),
      [],
    );
    await dp.maps.write(
      'pw_svc',
      FRONTENDS.flatMap((f) => [
        ...f.slots.flatMap((id, i) => (id === undefined ? [] : [{ key: svcKey(f, i + 1), value: { backend_id: id, count: 0 } }])),
        { key: svcKey(f, 0), value: { backend_id: f.timeout ?? 0, count: f.count } },
      ]),
      [],
    );
    await dp.maps.write(
      'pw_aff_match',
      FRONTENDS.filter((f) => f.timeout).flatMap((f) =>
        f.slots.map((id) => ({ key: { ip: f.ip, port: f.port, proto: f.proto, backend_id: id! }, value: { present: 1 } })),
      ),
      [],
    );
    // every backend of a UDP frontend serves it
    await dp.maps.write(
      'pw_udp_serve',
      FRONTENDS.filter((f) => f.proto === PROTO.UDP).flatMap((f) =>
        f.slots.map((id) => ({ key: serveKey(f, id!), value: { present: 1 } })),
      ),
      [],
    );
  });

  // ---- service selection ----

  describe('service selection', () => {
    it('connect4, TCP, 3 backends: slot (random % count) + 1 of pw_svc names the backend in pw_backends', async () => {
      const cases: [number, number][] = [
        [0, 11],
        [1, 12],
        [2, 13],
        [3, 11],
        [7, 12],
        [0xfffffffe, 13], // 4294967294 % 3 = 2
        [0xffffffff, 11], // 4294967295 % 3 = 0
      ];
      for (const [prandom, id] of cases) {
        const r = await lb('conn4', tcpTo(WEB), { prandom, cookie: 100n + BigInt(prandom) }, ['translated']);
        expect({ prandom, dest: dest(r), randoms: r.calls.prandom }).toEqual({ prandom, dest: backend(id), randoms: 1 });
      }
    });

    it('the master count bounds the slots: a stale slot past it (scale-down, prune pending) is never chosen', async () => {
      const seen = new Set<string>();
      for (let prandom = 0; prandom < 12; prandom++) seen.add(dest(await lb('conn4', tcpTo(WEB), { prandom, cookie: 7n }, ['translated'])));
      expect([...seen].sort()).toEqual([backend(11), backend(12), backend(13)].sort());
    });

    it('connect4 writes the reverse translation: (cookie, backend) → the service, for getpeername()', async () => {
      await lb('conn4', tcpTo(WEB), { prandom: 2, cookie: 0xc0ffeen }, ['translated']);
      expect(await revnat()).toEqual([{ cookie: 0xc0ffeen, backend: backend(13), service: '10.96.0.10:80' }]);
    });

    it('a frontend with no backend (count 0) is left alone: no_backend, no random drawn, nothing written', async () => {
      const r = await lb('conn4', tcpTo(EMPTY), { prandom: 1, cookie: 5n }, ['no_backend']);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: '10.96.0.20:80', randoms: 0 });
      expect(await revnat()).toEqual([]);
    });

    it('not a service: another address, another port of a service address, or the other protocol', async () => {
      for (const ctx of [tcpTo({ ...WEB, ip: '10.96.0.99' }), tcpTo(WEB, 81), udpTo(WEB), tcpTo(DNS)]) {
        const r = await lb(ctx.protocol === PROTO.UDP ? 'send4' : 'conn4', ctx, { prandom: 1, cookie: 6n }, ['not_service']);
        expect(dest(r)).toBe(`${ctx.ip4}:${ctx.port}`);
      }
      expect(await revnat()).toEqual([]);
    });

    it('a slot missing below the count, or a slot naming a missing backend: slot_missing, left alone', async () => {
      let r = await lb('conn4', tcpTo(NO_SLOT), { prandom: 1 }, ['slot_missing']); // slot 2
      expect(dest(r)).toBe('10.96.0.30:80');
      r = await lb('conn4', tcpTo(NO_SLOT), { prandom: 0 }, ['translated']); // slot 1 is there
      expect(dest(r)).toBe(backend(11));
      r = await lb('conn4', tcpTo(NO_BACKEND), { prandom: 5 }, ['slot_missing']);
      expect(dest(r)).toBe('10.96.0.31:80');
      expect((await revnat()).length).toBe(1);
    });

    it('sendmsg4, unconnected UDP: a new flow chooses at random (slot = random % count + 1), whatever the socket cookie', async () => {
      // cookies of one parity: what a client alternating "look up, connect" gets from the kernel-wide counter
      const cases: [bigint, number, number][] = [
        [2n, 0, 21],
        [4n, 1, 22],
        [6n, 2, 21],
        [8n, 3, 22],
        [0x100000001n, 0xffffffff, 22], // 4294967295 % 2 = 1
      ];
      for (const [cookie, prandom, id] of cases) {
        const r = await lb('send4', udpTo(DNS), { cookie, prandom, now: NOW }, ['translated']);
        expect({ cookie, dest: dest(r), randoms: r.calls.prandom }).toEqual({ cookie, dest: backend(id), randoms: 1 });
      }
      expect(await revnat()).toContainEqual({ cookie: 0x100000001n, backend: backend(22), service: '10.96.0.53:53' });
    });

    it('connect4 of a UDP socket to a service is left to kube-proxy (udp_connected_left); to anything else, not counted', async () => {
      let r = await lb('conn4', udpTo(DNS), { prandom: 0, cookie: 8n }, ['udp_connected_left']);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: '10.96.0.53:53', randoms: 0 });
      r = await lb('conn4', udpTo(DNS, 54), { cookie: 8n }, []);
      expect(dest(r)).toBe('10.96.0.53:54');
      expect(await revnat()).toEqual([]);
    });

    it('sendmsg4 of a connected UDP socket to its own peer (a v4-mapped send()) is left alone; to another address it is translated', async () => {
      const connected = { srcIp4: '10.244.3.3', srcPort: 40000, dstIp4: DNS.ip, dstPort: 53, state: TCP_ESTABLISHED };
      let r = await lb('send4', { ...udpTo(DNS), sk: connected }, { cookie: 1n }, []);
      expect(dest(r)).toBe('10.96.0.53:53');
      r = await lb('send4', { ...udpTo(DNS), sk: { ...connected, dstIp4: '10.96.0.99' } }, { cookie: 1n, prandom: 1 }, ['translated']);
      expect(dest(r)).toBe(backend(22));
    });

    it('neither TCP nor UDP (SCTP) is left alone, not counted', async () => {
      const r = await lb('conn4', { ip4: WEB.ip, port: WEB.port, protocol: SCTP }, { prandom: 0 }, []);
      expect(dest(r)).toBe('10.96.0.10:80');
    });

    it('connect6 to a v4-mapped service address: ::ffff:backend, counted translated and v4mapped', async () => {
      const r = await lb('conn6', { ip6: v4mapped(WEB.ip), port: 80, protocol: PROTO.TCP }, { prandom: 1, cookie: 9n }, [
        'translated',
        'v4mapped',
      ]);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: v4mapped(BACKENDS[12]!.ip), port: 8080 });
      expect(await revnat()).toEqual([{ cookie: 9n, backend: backend(12), service: '10.96.0.10:80' }]);
    });

    it('connect6 to a real IPv6 address is left alone, even when its last word is a service address', async () => {
      const real = Buffer.concat([ip6('fd00::').subarray(0, 12), ip4(WEB.ip)]);
      const r = await lb('conn6', { ip6: real, port: 80, protocol: PROTO.TCP }, { prandom: 1 }, []);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: real, port: 80 });
    });
  });

  // ---- sessionAffinity ClientIP ----

  describe('sessionAffinity ClientIP', () => {
    const A = CLIENTS.A.ip;
    const B = CLIENTS.B.ip;
    const T = BigInt(STICKY.timeout!) * SEC;

    it('a first connect chooses at random and remembers (client pod IP, frontend) → backend, now', async () => {
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.A), now: NOW, cookie: 1n }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 42, last_ns: NOW }]);
    });

    it('the remembered backend is used again while younger than the timeout (the random draw is not taken), and its time refreshed', async () => {
      for (const age of [0n, SEC, T - 1n, T]) {
        await remember(STICKY, A, 41, NOW - age);
        const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.A), now: NOW }, ['affinity_hit', 'translated']);
        expect({ age, dest: dest(r), randoms: r.calls.prandom }).toEqual({ age, dest: backend(41), randoms: 0 });
        expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 41, last_ns: NOW }]);
      }
    });

    it('a time a little ahead of now (written by another CPU since) counts as fresh', async () => {
      await remember(STICKY, A, 41, NOW + 5n);
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.A), now: NOW }, ['affinity_hit', 'translated']);
      expect(dest(r)).toBe(backend(41));
    });

    it('older than the timeout: affinity_expired, chosen anew, the new backend remembered', async () => {
      for (const age of [T + 1n, 2n * T]) {
        await remember(STICKY, A, 41, NOW - age);
        const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.A), now: NOW }, ['affinity_expired', 'translated']);
        expect({ age, dest: dest(r), randoms: r.calls.prandom }).toEqual({ age, dest: backend(42), randoms: 1 });
        expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 42, last_ns: NOW }]);
      }
    });

    it('a remembered backend no longer in pw_aff_match (removed from the service): affinity_gone, chosen anew', async () => {
      await dp.maps.write('pw_aff_match', [], [{ ip: STICKY.ip, port: STICKY.port, proto: STICKY.proto, backend_id: 41 }]);
      await remember(STICKY, A, 41, NOW - SEC);
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 0, ...inPod(CLIENTS.A), now: NOW }, ['affinity_gone', 'translated']);
      // the slots still name 41 (the agent removes it from pw_aff_match with the slots): random slot 1
      expect(dest(r)).toBe(backend(41));
      await remember(STICKY, A, 41, NOW - SEC);
      const again = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.A), now: NOW }, ['affinity_gone', 'translated']);
      expect(dest(again)).toBe(backend(42));
      expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 42, last_ns: NOW }]);
    });

    it('a remembered backend in pw_aff_match but gone from pw_backends: chosen anew (no affinity counter)', async () => {
      await dp.maps.write(
        'pw_aff_match',
        [{ key: { ip: STICKY.ip, port: STICKY.port, proto: STICKY.proto, backend_id: 77 }, value: { present: 1 } }],
        [],
      );
      await remember(STICKY, A, 77, NOW - SEC);
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 0, ...inPod(CLIENTS.A), now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(41));
      expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 41, last_ns: NOW }]);
    });

    it('per client and per frontend: another client pod, or another port of the same ClusterIP, has its own entry', async () => {
      await remember(STICKY, A, 41, NOW - SEC);
      let r = await lb('conn4', tcpTo(STICKY), { prandom: 1, ...inPod(CLIENTS.B), now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      r = await lb('conn4', tcpTo(STICKY_ALT), { prandom: 1, ...inPod(CLIENTS.A), now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      expect(await affinity()).toEqual([
        { ...affKey(STICKY, A), backend_id: 41, last_ns: NOW - SEC },
        { ...affKey(STICKY_ALT, A), backend_id: 42, last_ns: NOW },
        { ...affKey(STICKY, B), backend_id: 42, last_ns: NOW },
      ]);
    });

    it('the client is the pod whose cgroup is an ancestor of the process, at whatever level (pod cgroup, or a container below it)', async () => {
      await remember(STICKY, A, 41, NOW - SEC);
      for (const cgroups of [
        [1n, 0x100n, CLIENTS.A.pod], // a process in the pod cgroup itself
        [1n, 0x100n, CLIENTS.A.pod, CLIENTS.A.pod + 1n, CLIENTS.A.pod + 2n], // two levels below it
        [1n, 0x100n, 0x101n, 0x102n, 0x103n, CLIENTS.A.pod], // a deeper pod cgroup (systemd slices under a prefix)
      ]) {
        const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, cgroups, now: NOW }, ['affinity_hit', 'translated']);
        expect({ cgroups, dest: dest(r) }).toEqual({ cgroups, dest: backend(41) });
      }
    });

    it('a process in no client pod cgroup: affinity_no_client, not translated (kube-proxy keeps the client), nothing remembered', async () => {
      for (const cgroups of [[], [1n], [1n, 0x100n, 0xc0n, 0xc1n]]) {
        for (const [prog, ctx] of [
          ['conn4', tcpTo(STICKY)],
          ['send4', udpTo(STICKY_UDP)],
        ] as const) {
          const r = await lb(prog, ctx, { prandom: 1, cgroups, now: NOW, cookie: 3n }, ['affinity_no_client']);
          expect(sockAddrDest(r.ctx)).toMatchObject({ ip4: ctx.ip4, port: ctx.port });
        }
      }
      expect(await affinity()).toEqual([]);
      expect(await revnat()).toEqual([]);
      expect(await udpFlows()).toEqual([]);
      // the same process reaches a frontend without affinity as usual
      const r = await lb('conn4', tcpTo(WEB), { prandom: 0, cgroups: [1n], now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(11));
    });

    it('a frontend without affinity (timeout 0) neither reads nor writes pw_affinity', async () => {
      await remember(WEB, A, 13, NOW - SEC);
      const r = await lb('conn4', tcpTo(WEB), { prandom: 0, ...inPod(CLIENTS.A), now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(11));
      expect(await affinity()).toEqual([{ ...affKey(WEB, A), backend_id: 13, last_ns: NOW - SEC }]);
    });

    it('sendmsg4 UDP: a new flow takes the remembered backend over the random draw; a new client is remembered with the random pick', async () => {
      const t = BigInt(STICKY_UDP.timeout!) * SEC;
      await remember(STICKY_UDP, A, 45, NOW - t + SEC);
      let r = await lb('send4', udpTo(STICKY_UDP), { cookie: 1n, ...inPod(CLIENTS.A), now: NOW, prandom: 1 }, [
        'affinity_hit',
        'translated',
      ]);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: backend(45), randoms: 0 }); // the draw alone: slot 2 (46)
      r = await lb('send4', udpTo(STICKY_UDP), { cookie: 2n, ...inPod(CLIENTS.B), now: NOW, prandom: 1 }, ['translated']);
      expect(dest(r)).toBe(backend(46));
      expect(await affinity()).toEqual([
        { ...affKey(STICKY_UDP, A), backend_id: 45, last_ns: NOW },
        { ...affKey(STICKY_UDP, B), backend_id: 46, last_ns: NOW },
      ]);
      // both flows remember their backend
      expect((await udpFlows()).map((f) => [f.cookie, f.backend])).toEqual([
        [1n, backend(45)],
        [2n, backend(46)],
      ]);
    });

    it("sendmsg4 UDP: a known flow's datagrams follow the flow, not the affinity entry, which they neither read nor refresh (kube-proxy: conntrack before `recent`)", async () => {
      await rememberFlow(STICKY_UDP, 1n, 46, UDP_CT_STATE.OPENED, NOW - SEC, NOW - SEC);
      await remember(STICKY_UDP, A, 45, NOW - 5n * SEC);
      const r = await lb('send4', udpTo(STICKY_UDP), { cookie: 1n, ...inPod(CLIENTS.A), now: NOW }, ['udp_flow_hit', 'translated']);
      expect(dest(r)).toBe(backend(46));
      expect(await affinity()).toEqual([{ ...affKey(STICKY_UDP, A), backend_id: 45, last_ns: NOW - 5n * SEC }]);
    });
  });

  // ---- unconnected UDP flow memory ----

  describe('unconnected UDP flow memory (kube-proxy: the conntrack entry and its cleanup)', () => {
    const OPENED = UDP_CT_STATE.OPENED;
    const ANSWERED = UDP_CT_STATE.ANSWERED;
    const T_OPENED = BigInt(UDP_CT_TIMEOUT_NS.OPENED);
    const T_ANSWERED = BigInt(UDP_CT_TIMEOUT_NS.ANSWERED);
    const STREAM = BigInt(UDP_FLOW.STREAM_AFTER_NS);
    const send = (cookie: bigint, prandom: number, now: bigint, counted: string[], f = DNS) =>
      lb('send4', udpTo(f), { cookie, prandom, now, ...inPod(CLIENTS.A) }, counted);
    const reply = (cookie: bigint, id: number, now: bigint, counted = ['rev_nat']) =>
      lb('reverse4', { ip4: BACKENDS[id]!.ip, port: BACKENDS[id]!.port, protocol: PROTO.UDP }, { cookie, now }, counted);
    /** The master entry (count) and slots of DNS rewritten, as the agent does on a change. */
    const reslot = async (ids: number[]) => {
      await clearMaps(dp, ['pw_svc']);
      await dp.maps.write(
        'pw_svc',
        [
          ...ids.map((id, i) => ({ key: svcKey(DNS, i + 1), value: { backend_id: id, count: 0 } })),
          { key: svcKey(DNS, 0), value: { backend_id: 0, count: ids.length } },
        ],
        [],
      );
    };

    it("the first datagram chooses at random and remembers (socket, frontend) → backend; the flow's later ones go there whatever the draw, refreshing it", async () => {
      let r = await send(7n, 1, NOW, ['translated']);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: backend(22), randoms: 1 });
      expect(await udpFlows()).toEqual([
        { cookie: 7n, frontend: '10.96.0.53:53', backend: backend(22), state: OPENED, first_ns: NOW, last_ns: NOW },
      ]);
      for (const [i, prandom] of [0, 1, 0, 0].entries()) {
        const now = NOW + BigInt(i + 1) * SEC;
        r = await send(7n, prandom, now, ['udp_flow_hit', 'translated']);
        expect({ prandom, dest: dest(r), randoms: r.calls.prandom }).toEqual({ prandom, dest: backend(22), randoms: 0 });
        expect((await udpFlows())[0]).toMatchObject({ first_ns: NOW, last_ns: now, state: OPENED });
      }
      // the reply's source is still the service: one reverse entry for the socket and its backend
      expect(await revnat()).toEqual([{ cookie: 7n, backend: backend(22), service: '10.96.0.53:53' }]);
    });

    it('per socket and per frontend: another socket, or the same socket to another UDP frontend, is a flow of its own', async () => {
      await send(7n, 1, NOW, ['translated']); // → 22
      let r = await send(8n, 0, NOW, ['translated']);
      expect(dest(r)).toBe(backend(21));
      r = await send(7n, 0, NOW, ['translated'], STICKY_UDP); // affinity frontend: client A, not remembered yet
      expect(dest(r)).toBe(backend(45));
      expect((await udpFlows()).map((f) => [f.cookie, f.frontend, f.backend])).toEqual([
        [7n, '10.96.0.41:53', backend(45)],
        [7n, '10.96.0.53:53', backend(22)],
        [8n, '10.96.0.53:53', backend(21)],
      ]);
    });

    it('scale-up, scale-down of another backend, another backend not ready: the flow keeps its backend (the slots and the count change, the flow does not)', async () => {
      await send(7n, 0, NOW, ['translated']); // → 21
      for (const slots of [
        [21, 22, 11], // scale-up (a third backend; the draw would now be % 3)
        [11, 21], // 22 scaled down, 21 now in slot 2
        [22], // 21 out of the slots but still serving (terminating, or hinted elsewhere): kube-proxy keeps its flows
      ]) {
        await reslot(slots);
        const r = await send(7n, 0, NOW + SEC, ['udp_flow_hit', 'translated']);
        expect({ slots, dest: dest(r) }).toEqual({ slots, dest: backend(21) });
      }
      // a new flow takes the slots as they are
      expect(dest(await send(9n, 0, NOW + SEC, ['translated']))).toBe(backend(22));
    });

    it('the backend stops serving (its IP leaves pw_udp_serve): udp_flow_gone, chosen anew at random, the new backend remembered', async () => {
      await send(7n, 0, NOW, ['translated']); // → 21
      await reslot([22]);
      await dp.maps.write('pw_udp_serve', [], [serveKey(DNS, 21)]);
      const r = await send(7n, 0, NOW + SEC, ['udp_flow_gone', 'translated']);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: backend(22), randoms: 1 });
      expect(await udpFlows()).toEqual([
        { cookie: 7n, frontend: '10.96.0.53:53', backend: backend(22), state: OPENED, first_ns: NOW + SEC, last_ns: NOW + SEC },
      ]);
    });

    it('the serving check is by IP, as kube-proxy matches the reply source: the same IP on another port still serves', async () => {
      await dp.maps.write(
        'pw_udp_flow',
        [{ key: flowKey(DNS, 7n), value: { ip: BACKENDS[21]!.ip, port: 5300, state: OPENED, first_ns: NOW, last_ns: NOW } }],
        [],
      );
      const r = await send(7n, 1, NOW + SEC, ['udp_flow_hit', 'translated']);
      expect(dest(r)).toBe(`${BACKENDS[21]!.ip}:5300`);
    });

    it('a frontend with no backend for new flows (count 0: internalTrafficPolicy Local, none here) keeps a flow whose backend still serves; a new flow is left alone', async () => {
      await send(7n, 0, NOW, ['translated']); // → 21
      await reslot([]);
      expect(dest(await send(7n, 0, NOW + SEC, ['udp_flow_hit', 'translated']))).toBe(backend(21));
      const r = await send(8n, 0, NOW + SEC, ['no_backend']);
      expect({ dest: dest(r), randoms: r.calls.prandom }).toEqual({ dest: '10.96.0.53:53', randoms: 0 });
    });

    it('no longer a service (master gone): not_service, left alone, the flow not consulted', async () => {
      await send(7n, 0, NOW, ['translated']);
      await clearMaps(dp, ['pw_svc']);
      const r = await send(7n, 0, NOW + SEC, ['not_service']);
      expect(dest(r)).toBe('10.96.0.53:53');
    });

    it("idle timeout, as conntrack's: 30 s unanswered; 120 s once answered and older than 2 s; 30 s when answered within its first 2 s", async () => {
      const cases: [string, number, bigint, bigint, boolean][] = [
        // what, state, first datagram age, idle, still the flow
        ['opened, idle 30 s', OPENED, 100n * SEC, T_OPENED, true],
        ['opened, idle 30 s + 1 ns', OPENED, 100n * SEC, T_OPENED + 1n, false],
        ['opened, idle 60 s (an answered stream would keep it)', OPENED, 100n * SEC, 60n * SEC, false],
        ['answered, idle 120 s', ANSWERED, 300n * SEC, T_ANSWERED, true],
        ['answered, idle 120 s + 1 ns', ANSWERED, 300n * SEC, T_ANSWERED + 1n, false],
        ['answered within 2 s of its start (a query and its reply), idle 30 s', ANSWERED, T_OPENED + STREAM, T_OPENED, true],
        ['answered within 2 s of its start, idle 31 s', ANSWERED, 31n * SEC + STREAM, 31n * SEC, false],
        ['last used a hair after now (another CPU)', OPENED, SEC, -5n, true],
      ];
      for (const [what, state, age, idle, kept] of cases) {
        await rememberFlow(DNS, 7n, 22, state, NOW - age, NOW - idle);
        const r = await send(7n, 0, NOW, kept ? ['udp_flow_hit', 'translated'] : ['udp_flow_expired', 'translated']);
        expect({ what, dest: dest(r) }).toEqual({ what, dest: backend(kept ? 22 : 21) });
        // expired: a new flow (OPENED, first = now), as a new conntrack entry
        if (!kept) expect((await udpFlows())[0]).toMatchObject({ state: OPENED, first_ns: NOW, last_ns: NOW });
      }
    });

    it("recvmsg: a reply read from the flow's backend marks it answered and refreshes it; a stream then lives 120 s", async () => {
      await send(7n, 1, NOW, ['translated']); // → 22
      const back = await reply(7n, 22, NOW + 3n * SEC);
      expect(dest(back)).toBe('10.96.0.53:53');
      expect(await udpFlows()).toEqual([
        { cookie: 7n, frontend: '10.96.0.53:53', backend: backend(22), state: ANSWERED, first_ns: NOW, last_ns: NOW + 3n * SEC },
      ]);
      // 100 s idle: an unanswered flow would have expired
      const r = await send(7n, 0, NOW + 103n * SEC, ['udp_flow_hit', 'translated']);
      expect(dest(r)).toBe(backend(22));
    });

    it("a flow that chooses anew drops its old backend's reverse entry (kube-proxy's conntrack entry goes with it): gone and expired", async () => {
      await send(7n, 0, NOW, ['translated']); // → 21
      await dp.maps.write('pw_udp_serve', [], [serveKey(DNS, 21)]);
      await send(7n, 1, NOW + SEC, ['udp_flow_gone', 'translated']); // → 22
      expect(await revnat()).toEqual([{ cookie: 7n, backend: backend(22), service: '10.96.0.53:53' }]);
      // the late reply of 21 is not translated: its own address, as through kube-proxy after the cleanup
      const late = await reply(7n, 21, NOW + 2n * SEC, []);
      expect(dest(late)).toBe(backend(21));
      // expired: the old entry goes, the new pick writes its own (the same backend again: written anew)
      const r = await send(7n, 1, NOW + 2n * SEC + T_OPENED, ['udp_flow_expired', 'translated']);
      expect(await revnat()).toEqual([{ cookie: 7n, backend: dest(r), service: '10.96.0.53:53' }]);
    });

    it("a backend behind two frontends: the flow that leaves it keeps the reverse entry the other frontend's flow wrote since", async () => {
      await rememberFlow(DNS, 7n, 21, OPENED, NOW - 100n * SEC, NOW - 100n * SEC); // expired
      const other = { key: { cookie: 7n, ip: BACKENDS[21]!.ip, port: BACKENDS[21]!.port }, value: { ip: '10.96.0.99', port: 53 } };
      await dp.maps.write('pw_revnat', [other], []);
      await send(7n, 1, NOW, ['udp_flow_expired', 'translated']); // → 22
      expect((await revnat()).map((e) => e.service).sort()).toEqual(['10.96.0.53:53', '10.96.0.99:53']);
    });

    it('recvmsg: a reply of another backend (an older flow of the socket), an expired flow, or another socket changes nothing', async () => {
      await send(7n, 0, NOW, ['translated']); // → 21
      await dp.maps.write('pw_udp_serve', [], [serveKey(DNS, 21)]);
      await send(7n, 1, NOW + SEC, ['udp_flow_gone', 'translated']); // → 22; 21's reverse entry goes
      await reply(7n, 21, NOW + 2n * SEC, []); // the late reply of 21: no reverse entry, no flow change
      expect((await udpFlows())[0]).toMatchObject({ backend: backend(22), state: OPENED, last_ns: NOW + SEC });
      await reply(7n, 22, NOW + SEC + T_OPENED + 1n); // expired: not revived
      expect((await udpFlows())[0]).toMatchObject({ state: OPENED, last_ns: NOW + SEC });
      await reply(8n, 22, NOW + 2n * SEC, []); // another socket: no reverse entry, nothing
      expect((await udpFlows())[0]).toMatchObject({ state: OPENED, last_ns: NOW + SEC });
    });

    it('TCP never reads or writes pw_udp_flow', async () => {
      await lb('conn4', tcpTo(WEB), { prandom: 0, cookie: 7n, now: NOW }, ['translated']);
      await lb('reverse4', { ip4: BACKENDS[11]!.ip, port: 8080, protocol: PROTO.TCP }, { cookie: 7n, now: NOW }, ['rev_nat']);
      expect(await udpFlows()).toEqual([]);
    });
  });

  // ---- reverse NAT ----

  describe('reverse NAT', () => {
    it('recvmsg4: a reply from the backend a UDP datagram was sent to shows the ClusterIP and service port', async () => {
      const sent = await lb('send4', udpTo(DNS), { cookie: 2n }, ['translated']);
      expect(dest(sent)).toBe(backend(21));
      const r = await lb('reverse4', { ip4: BACKENDS[21]!.ip, port: 5353, protocol: PROTO.UDP }, { cookie: 2n }, ['rev_nat']);
      expect(dest(r)).toBe('10.96.0.53:53');
    });

    it('getpeername4 of a TCP socket connected through a service answers the service (the same function)', async () => {
      await lb('conn4', tcpTo(WEB), { prandom: 2, cookie: 3n }, ['translated']);
      const r = await lb('reverse4', { ip4: BACKENDS[13]!.ip, port: 8081, protocol: PROTO.TCP }, { cookie: 3n }, ['rev_nat']);
      expect(dest(r)).toBe('10.96.0.10:80');
    });

    it('left alone: another socket, another port of the backend, an address never translated, neither TCP nor UDP', async () => {
      await lb('send4', udpTo(DNS), { cookie: 2n }, ['translated']); // → 10.244.1.21:5353 for cookie 2
      const cases: [SockAddr, bigint][] = [
        [{ ip4: BACKENDS[21]!.ip, port: 5353, protocol: PROTO.UDP }, 4n],
        [{ ip4: BACKENDS[21]!.ip, port: 5354, protocol: PROTO.UDP }, 2n],
        [{ ip4: '10.244.9.9', port: 5353, protocol: PROTO.UDP }, 2n],
        [{ ip4: BACKENDS[21]!.ip, port: 5353, protocol: SCTP }, 2n],
      ];
      for (const [ctx, cookie] of cases) {
        const r = await lb('reverse4', ctx, { cookie }, []);
        expect(dest(r)).toBe(`${ctx.ip4}:${ctx.port}`);
      }
    });

    it('recvmsg6/getpeername6: a v4-mapped reply shows ::ffff:ClusterIP; a real IPv6 peer is left alone', async () => {
      await lb('send4', udpTo(DNS), { cookie: 2n }, ['translated']);
      const r = await lb('reverse6', { ip6: v4mapped(BACKENDS[21]!.ip), port: 5353, protocol: PROTO.UDP }, { cookie: 2n }, [
        'rev_nat',
        'v4mapped',
      ]);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: v4mapped(DNS.ip), port: 53 });
      const real = ip6('fd00::21');
      const left = await lb('reverse6', { ip6: real, port: 5353, protocol: PROTO.UDP }, { cookie: 2n }, []);
      expect(sockAddrDest(left.ctx)).toMatchObject({ ip6: real, port: 5353 });
    });
  });
});
