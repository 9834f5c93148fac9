// pw_proxy.h, the sidecar capture, through the test programs of
// bpf/tests/proxy.c (pw_proxy_conn4/6 and pw_proxy_peer4/6 as entries): which
// connects are sent to the proxy's port on a per-connection loopback address,
// which are left alone (and counted why), what pw_odst_cookie holds
// afterwards, and getpeername() of a captured socket.
import { beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_FLAGS, PROTO } from '../../abi/schema.js';
import type { Datapath } from '../../loader/datapath.js';
import { moved, reasonCounters } from './helpers.js';
import {
  bpfSkipReason,
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

const PROXY_PORT = 15001;
const EXCLUDED = [15020, 3306, 0, 0, 0, 0, 0, 9090]; // 0: unused slot
const POD_IP = '10.244.1.5';
const POD_CG = 5005n;
/** bpf_get_current_ancestor_cgroup_id of a process of the pod: root, kubepods, burstable, the pod, its container. */
const IN_POD = [1n, 100n, 200n, POD_CG, 5006n];
/** A process of another pod on the node. */
const OTHER_POD = [1n, 100n, 200n, 6006n, 6007n];
const APP: Mock = { uid: 1000, gid: 1000, cgroups: IN_POD };

const setConfig = (proxyPort: number) =>
  dp.maps.write(
    'pw_config',
    [
      {
        key: { index: 0 },
        value: {
          flags: CONFIG_FLAGS.SOCKMAP_ON,
          proxy_uid: 1337,
          proxy_port: proxyPort,
          proxy_gid: 1337,
          bulk_bytes: 0,
          excluded_ports: EXCLUDED,
          svc_dropped: 0,
        },
      },
    ],
    [],
  );

const odstCookies = async () =>
  (await dp.maps.dump('pw_odst_cookie')).map((e) => ({ cookie: e.key.cookie, to: `${e.value.ip}:${e.value.port}` }));

/** Runs `prog`; checks the return value (1) and that exactly the `counted` reasons moved, by one each. */
async function proxy(prog: string, ctx: SockAddr, mock: Mock, counted: string[]): Promise<LogicRun> {
  const before = await reasonCounters(dp, 'pw_proxy_conn4');
  const r = await runLogic(dp, `test_proxy_${prog}`, sockAddr(ctx), mock);
  const after = await reasonCounters(dp, 'pw_proxy_conn4');
  expect({ retval: r.retval, moved: moved(before, after) }).toEqual({ retval: 1, moved: Object.fromEntries(counted.map((c) => [c, 1])) });
  return r;
}
const dest = (r: LogicRun) => `${sockAddrDest(r.ctx).ip4}:${sockAddrDest(r.ctx).port}`;
const tcp = (ip4: string, port: number): SockAddr => ({ ip4, port, protocol: PROTO.TCP });

describe.skipIf(!!skip)(`pw_proxy.h${skip ? ` — skipped: ${skip}` : ''}`, () => {
  useLogic(['proxy'], (d) => (dp = d));

  beforeEach(async () => {
    await setConfig(PROXY_PORT);
    for (const m of ['pw_odst_cookie', 'pw_odst_tuple', 'pw_pod_cgroup']) {
      const all = await dp.maps.dump(m);
      if (all.length)
        await dp.maps.write(
          m,
          [],
          all.map((e) => e.key),
        );
    }
    await dp.maps.write('pw_pod_cgroup', [{ key: { ip: POD_IP }, value: { id: POD_CG } }], []);
  });

  describe('connect4: sent to the proxy', () => {
    it("an app's TCP connect goes to 127.128.x.y:15001 (x.y from the cookie), its original destination saved by cookie", async () => {
      const r = await proxy('conn4', tcp('10.96.0.10', 80), { ...APP, cookie: 0x12345n }, ['redirected']);
      expect(dest(r)).toBe('127.129.35.69:15001');
      expect(await odstCookies()).toEqual([{ cookie: 0x12345n, to: '10.96.0.10:80' }]);
    });

    it('the loopback address takes 22 bits of the cookie in 127.128.0.0/10 and is never .0', async () => {
      const cases: [bigint, string][] = [
        [0x400000n, '127.128.0.1'], // low 22 bits 0: .1
        [0x3ffffen, '127.191.255.255'],
        [0xabcdef123n, '127.158.241.35'],
        [0n, '127.128.0.1'],
      ];
      for (const [cookie, ip] of cases) {
        const r = await proxy('conn4', tcp('10.244.2.7', 8080), { ...APP, cookie }, ['redirected']);
        expect({ cookie, dest: dest(r) }).toEqual({ cookie, dest: `${ip}:${PROXY_PORT}` });
      }
    });

    it("another pod's IP, and this pod's IP dialled from another pod's process, are captured", async () => {
      await proxy('conn4', tcp('10.244.1.6', 8080), { ...APP, cookie: 1n }, ['redirected']);
      await proxy('conn4', tcp(POD_IP, 8080), { ...APP, cgroups: OTHER_POD, cookie: 2n }, ['redirected']);
      // a process whose cgroup chain ends above the pod's level (the helper answers 0 below it)
      await proxy('conn4', tcp(POD_IP, 8080), { ...APP, cgroups: [1n, 100n], cookie: 3n }, ['redirected']);
      expect((await odstCookies()).map((o) => o.to).sort()).toEqual(['10.244.1.5:8080', '10.244.1.5:8080', '10.244.1.6:8080']);
    });

    it('ports next to the exceptions are captured: 52 and 54, an unlisted port, port 1', async () => {
      for (const port of [52, 54, 3307, 1]) await proxy('conn4', tcp('10.96.0.10', port), { ...APP, cookie: BigInt(port) }, ['redirected']);
    });
  });

  describe('connect4: left alone', () => {
    const cases: [string, SockAddr, Mock, string][] = [
      ['the proxy uid 1337', tcp('10.96.0.10', 80), { ...APP, uid: 1337 }, 'proxy_uid'],
      ['the proxy gid 1337 (another uid)', tcp('10.96.0.10', 80), { ...APP, gid: 1337 }, 'proxy_gid'],
      ['loopback 127.0.0.1', tcp('127.0.0.1', 8080), APP, 'loopback'],
      ['loopback 127.255.255.254', tcp('127.255.255.254', 8080), APP, 'loopback'],
      ['a 127.128/10 proxy address', tcp('127.129.35.69', PROXY_PORT), APP, 'loopback'],
      ['TCP to port 53 (DNS capture is the pod iptables)', tcp('10.96.0.53', 53), APP, 'dns_port'],
      ['an excluded port (first slot)', tcp('10.96.0.10', 15020), APP, 'excluded_port'],
      ['an excluded port (second slot)', tcp('10.96.0.10', 3306), APP, 'excluded_port'],
      ['an excluded port (last slot)', tcp('10.96.0.10', 9090), APP, 'excluded_port'],
      ["the pod's own IP from the pod's own process", tcp(POD_IP, 8080), APP, 'own_pod_ip'],
      ['UDP', { ip4: '10.96.0.10', port: 80, protocol: PROTO.UDP }, APP, 'not_tcp'],
      // the order of the rules: the first that matches is counted
      ['UDP by the proxy uid: not_tcp first', { ip4: '10.96.0.10', port: 80, protocol: PROTO.UDP }, { ...APP, uid: 1337 }, 'not_tcp'],
      ['the proxy uid to loopback port 53: proxy_uid first', tcp('127.0.0.1', 53), { ...APP, uid: 1337, gid: 1337 }, 'proxy_uid'],
      ['loopback port 53: loopback before dns_port', tcp('127.0.0.53', 53), APP, 'loopback'],
      ["the pod's own IP on an excluded port: excluded_port before own_pod_ip", tcp(POD_IP, 3306), APP, 'excluded_port'],
    ];
    for (const [what, ctx, mock, reason] of cases) {
      it(`${what}: ${reason}, the destination unchanged, nothing saved`, async () => {
        const r = await proxy('conn4', ctx, { ...mock, cookie: 77n }, [reason]);
        expect(dest(r)).toBe(`${ctx.ip4}:${ctx.port}`);
        expect(await odstCookies()).toEqual([]);
      });
    }

    it("the pod's own IP from a process whose pod cgroup sits 12 levels down (a systemd slice below a prefix, as kind nests it)", async () => {
      const deep = [1n, ...Array.from({ length: 11 }, (_, i) => 900n + BigInt(i)), POD_CG];
      expect(deep.length).toBe(13); // levels 0..12: the pod at the deepest level the walk reaches
      const r = await proxy('conn4', tcp(POD_IP, 8080), { ...APP, cgroups: deep, cookie: 78n }, ['own_pod_ip']);
      expect(dest(r)).toBe(`${POD_IP}:8080`);
    });

    it('capture off (pw_config.proxy_port 0): nothing captured, nothing counted', async () => {
      await setConfig(0);
      const r = await proxy('conn4', tcp('10.96.0.10', 80), { ...APP, cookie: 5n }, []);
      expect(dest(r)).toBe('10.96.0.10:80');
      const r6 = await proxy('conn6', { ip6: ip6('fd00::1'), port: 80, protocol: PROTO.TCP }, APP, []);
      expect(sockAddrDest(r6.ctx).port).toBe(80);
      expect(await odstCookies()).toEqual([]);
    });
  });

  describe('connect6 (dual-stack sockets)', () => {
    it('a v4-mapped destination goes to ::ffff:127.128.x.y:15001 (redirected_v6), its IPv4 destination saved', async () => {
      const r = await proxy('conn6', { ip6: v4mapped('10.96.0.10'), port: 80, protocol: PROTO.TCP }, { ...APP, cookie: 0x12345n }, [
        'redirected_v6',
      ]);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: v4mapped('127.129.35.69'), port: PROXY_PORT });
      expect(await odstCookies()).toEqual([{ cookie: 0x12345n, to: '10.96.0.10:80' }]);
    });

    it('a real IPv6 destination is left alone (not_ipv4); a v4-mapped exception is counted as in connect4', async () => {
      const real = ip6('fd00::10');
      const r = await proxy('conn6', { ip6: real, port: 80, protocol: PROTO.TCP }, APP, ['not_ipv4']);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: real, port: 80 });
      const lo = await proxy('conn6', { ip6: v4mapped('127.0.0.1'), port: 80, protocol: PROTO.TCP }, APP, ['loopback']);
      expect(sockAddrDest(lo.ctx)).toMatchObject({ ip6: v4mapped('127.0.0.1'), port: 80 });
      await proxy('conn6', { ip6: v4mapped('10.96.0.10'), port: 80, protocol: PROTO.TCP }, { ...APP, uid: 1337 }, ['proxy_uid']);
      expect(await odstCookies()).toEqual([]);
    });
  });

  describe('getpeername of a captured socket', () => {
    // the app socket 10.244.1.5:40000 → 127.129.35.69:15001, keyed by sockops in pw_odst_tuple
    const PROXY_ADDR = '127.129.35.69';
    const sk = { srcIp4: POD_IP, srcPort: 40000 };
    beforeEach(async () => {
      await dp.maps.write(
        'pw_odst_tuple',
        [{ key: { sip: POD_IP, dip: PROXY_ADDR, sport: 40000, dport: PROXY_PORT }, value: { ip: '10.96.0.10', port: 80 } }],
        [],
      );
    });

    it('getpeername4 answers the original destination (peer_odst)', async () => {
      const r = await proxy('peer4', { ...tcp(PROXY_ADDR, PROXY_PORT), sk }, APP, ['peer_odst']);
      expect(dest(r)).toBe('10.96.0.10:80');
    });

    it('getpeername6 of a v4-mapped socket answers ::ffff:original', async () => {
      const r = await proxy('peer6', { ip6: v4mapped(PROXY_ADDR), port: PROXY_PORT, protocol: PROTO.TCP, sk }, APP, ['peer_odst']);
      expect(sockAddrDest(r.ctx)).toMatchObject({ ip6: v4mapped('10.96.0.10'), port: 80 });
    });

    it('left alone: a peer outside 127.128/10, another port than the proxy, a socket with no saved tuple, capture off', async () => {
      const cases: SockAddr[] = [
        { ...tcp('10.96.0.10', PROXY_PORT), sk },
        { ...tcp('127.0.0.1', PROXY_PORT), sk },
        { ...tcp(PROXY_ADDR, 15006), sk },
        { ...tcp(PROXY_ADDR, PROXY_PORT), sk: { ...sk, srcPort: 40001 } },
      ];
      for (const ctx of cases) expect(dest(await proxy('peer4', ctx, APP, []))).toBe(`${ctx.ip4}:${ctx.port}`);
      await setConfig(0);
      expect(dest(await proxy('peer4', { ...tcp(PROXY_ADDR, PROXY_PORT), sk }, APP, []))).toBe(`${PROXY_ADDR}:${PROXY_PORT}`);
    });
  });
});
