// pw_lb.h, the socket LB, through the test programs of bpf/tests/lb.c (one
// per production entry: conn4, conn6, send4, and the reverse translation of
// recv4/peer4 and recv6/peer6): service selection over the master/slot
// layout of pw_svc + pw_backends, sessionAffinity ClientIP, and reverse NAT.
// Each run checks the destination the socket is left with, the counters that
// moved in pw_stats, and what pw_revnat and pw_affinity hold afterwards.
import { beforeEach, describe, expect, it } from 'vitest';
import { PROTO } from '../../abi/schema.js';
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

const svcKey = (f: Frontend, slot: number) => ({ ip: f.ip, port: f.port, proto: f.proto, slot });
const affKey = (f: Frontend, netns: bigint) => ({ netns, ip: f.ip, port: f.port, proto: f.proto });

/** Remembers backend `id` for client `netns` at `lastNs`. */
const remember = (f: Frontend, netns: bigint, id: number, lastNs: bigint) =>
  dp.maps.write('pw_affinity', [{ key: affKey(f, netns), value: { backend_id: id, last_ns: lastNs } }], []);

const affinity = async () =>
  (await dp.maps.dump('pw_affinity'))
    .sort((a, b) => Number(a.key.netns) - Number(b.key.netns) || Number(a.key.port) - Number(b.key.port))
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
    await clearMaps(dp, ['pw_svc', 'pw_aff_match', 'pw_affinity', 'pw_revnat']);
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

    it('sendmsg4, unconnected UDP: the backend is a hash of the socket cookie (stable per socket), not random', async () => {
      // pick = (u32)(cookie ^ cookie >> 32) * 2654435761; slot = pick % 2 + 1
      const cases: [bigint, number][] = [
        [1n, 22], // 2654435761 % 2 = 1
        [2n, 21], // 1013904226 % 2 = 0
        [0x100000001n, 21], // the high word folds in: 1 ^ 1 = 0
        [3n, 22], // 3668339987 % 2 = 1
      ];
      for (const [cookie, id] of cases) {
        for (const prandom of [0, 1]) {
          const r = await lb('send4', udpTo(DNS), { cookie, prandom }, ['translated']);
          expect({ cookie, dest: dest(r), randoms: r.calls.prandom }).toEqual({ cookie, dest: backend(id), randoms: 0 });
        }
      }
      expect(await revnat()).toContainEqual({ cookie: 0x100000001n, backend: backend(21), service: '10.96.0.53:53' });
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
      r = await lb('send4', { ...udpTo(DNS), sk: { ...connected, dstIp4: '10.96.0.99' } }, { cookie: 1n }, ['translated']);
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
    const A = 0xaaaan; // a client's netns cookie
    const B = 0xbbbbn;
    const T = BigInt(STICKY.timeout!) * SEC;

    it('a first connect chooses at random and remembers (client netns, frontend) → backend, now', async () => {
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: A, now: NOW, cookie: 1n }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 42, last_ns: NOW }]);
    });

    it('the remembered backend is used again while younger than the timeout (the random draw is not taken), and its time refreshed', async () => {
      for (const age of [0n, SEC, T - 1n, T]) {
        await remember(STICKY, A, 41, NOW - age);
        const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: A, now: NOW }, ['affinity_hit', 'translated']);
        expect({ age, dest: dest(r), randoms: r.calls.prandom }).toEqual({ age, dest: backend(41), randoms: 0 });
        expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 41, last_ns: NOW }]);
      }
    });

    it('a time a little ahead of now (written by another CPU since) counts as fresh', async () => {
      await remember(STICKY, A, 41, NOW + 5n);
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: A, now: NOW }, ['affinity_hit', 'translated']);
      expect(dest(r)).toBe(backend(41));
    });

    it('older than the timeout: affinity_expired, chosen anew, the new backend remembered', async () => {
      for (const age of [T + 1n, 2n * T]) {
        await remember(STICKY, A, 41, NOW - age);
        const r = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: A, now: NOW }, ['affinity_expired', 'translated']);
        expect({ age, dest: dest(r), randoms: r.calls.prandom }).toEqual({ age, dest: backend(42), randoms: 1 });
        expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 42, last_ns: NOW }]);
      }
    });

    it('a remembered backend no longer in pw_aff_match (removed from the service): affinity_gone, chosen anew', async () => {
      await dp.maps.write('pw_aff_match', [], [{ ip: STICKY.ip, port: STICKY.port, proto: STICKY.proto, backend_id: 41 }]);
      await remember(STICKY, A, 41, NOW - SEC);
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 0, netns: A, now: NOW }, ['affinity_gone', 'translated']);
      // the slots still name 41 (the agent removes it from pw_aff_match with the slots): random slot 1
      expect(dest(r)).toBe(backend(41));
      await remember(STICKY, A, 41, NOW - SEC);
      const again = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: A, now: NOW }, ['affinity_gone', 'translated']);
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
      const r = await lb('conn4', tcpTo(STICKY), { prandom: 0, netns: A, now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(41));
      expect(await affinity()).toEqual([{ ...affKey(STICKY, A), backend_id: 41, last_ns: NOW }]);
    });

    it('per client and per frontend: another netns, or another port of the same ClusterIP, has its own entry', async () => {
      await remember(STICKY, A, 41, NOW - SEC);
      let r = await lb('conn4', tcpTo(STICKY), { prandom: 1, netns: B, now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      r = await lb('conn4', tcpTo(STICKY_ALT), { prandom: 1, netns: A, now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(42));
      expect(await affinity()).toEqual([
        { ...affKey(STICKY, A), backend_id: 41, last_ns: NOW - SEC },
        { ...affKey(STICKY_ALT, A), backend_id: 42, last_ns: NOW },
        { ...affKey(STICKY, B), backend_id: 42, last_ns: NOW },
      ]);
    });

    it('a frontend without affinity (timeout 0) neither reads nor writes pw_affinity', async () => {
      await remember(WEB, A, 13, NOW - SEC);
      const r = await lb('conn4', tcpTo(WEB), { prandom: 0, netns: A, now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(11));
      expect(await affinity()).toEqual([{ ...affKey(WEB, A), backend_id: 13, last_ns: NOW - SEC }]);
    });

    it('sendmsg4 UDP: the remembered backend wins over the cookie hash; a new client is remembered with the hash pick', async () => {
      const t = BigInt(STICKY_UDP.timeout!) * SEC;
      await remember(STICKY_UDP, A, 45, NOW - t + SEC);
      let r = await lb('send4', udpTo(STICKY_UDP), { cookie: 1n, netns: A, now: NOW }, ['affinity_hit', 'translated']);
      expect(dest(r)).toBe(backend(45)); // cookie 1 alone would pick slot 2 (46)
      r = await lb('send4', udpTo(STICKY_UDP), { cookie: 1n, netns: B, now: NOW }, ['translated']);
      expect(dest(r)).toBe(backend(46));
      expect(await affinity()).toEqual([
        { ...affKey(STICKY_UDP, A), backend_id: 45, last_ns: NOW },
        { ...affKey(STICKY_UDP, B), backend_id: 46, last_ns: NOW },
      ]);
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
