// pw_sockops.h through bpf/tests/sockops.c: the pw_sock key built from the
// socket's 4-tuple as sock_ops shows it (local side first, exact bytes), and
// which established sockets enter pw_sock (the mocked bpf_sock_hash_update
// records its key and flags), with the counters, pw_odst_tuple, and the flow
// state dropped at establishment and close.
import { beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_FLAGS, EP_FLAGS, FLOW_FLAGS } from '../../abi/schema.js';
import type { Datapath } from '../../loader/datapath.js';
import { clearMaps, moved, reasonCounters, setConfig } from './helpers.js';
import {
  AF_INET6,
  SOCK_OPS,
  SOCK_OPS_STATE_CB_FLAG,
  TCP_STATE,
  bpfSkipReason,
  ip6,
  runLogic,
  sockKey,
  sockOps,
  useLogic,
  v4mapped,
  type LogicRun,
  type Mock,
  type Tuple,
} from './logic.js';

const skip = bpfSkipReason();
let dp: Datapath;

const A = '10.244.1.2'; // enabled
const B = '10.244.1.3'; // enabled
const C = '10.244.1.4'; // an endpoint, not enabled
const REMOTE = '10.99.0.7'; // no endpoint
const PROXY_PORT = 15001;
const PROXY_ADDR = '127.129.35.69';
const BPF_NOEXIST = 1n;
const EEXIST = 17;
const ENOMEM = 12;

const t4 = (local: string, localPort: number, remote: string, remotePort: number): Tuple => ({ local, remote, localPort, remotePort });

/** Runs the sock_ops logic; checks the return value (1) and that exactly the `counted` reasons moved, by one each. */
async function sockops(
  op: number,
  t: Tuple,
  counted: string[],
  mock: Mock = {},
  opts: { newState?: number; cbFlags?: number; noSk?: boolean } = {},
): Promise<LogicRun> {
  const before = await reasonCounters(dp, 'pw_sockops');
  const r = await runLogic(dp, 'test_sockops', sockOps(op, t, opts), mock);
  const after = await reasonCounters(dp, 'pw_sockops');
  expect({ retval: r.retval, moved: moved(before, after) }).toEqual({ retval: 1, moved: Object.fromEntries(counted.map((c) => [c, 1])) });
  return r;
}

/** The one pw_sock insertion a run asked for: key bytes (hex) and flags. */
const inserted = (r: LogicRun) => ({
  calls: r.calls.hashUpdate,
  key: r.calls.hashUpdateKey.toString('hex'),
  flags: r.calls.hashUpdateFlags,
});
const notInserted = (r: LogicRun) => expect({ update: r.calls.hashUpdate, cb: r.calls.cbFlagsSet }).toEqual({ update: 0, cb: 0 });

describe.skipIf(!!skip)(`pw_sockops.h${skip ? ` — skipped: ${skip}` : ''}`, () => {
  useLogic(['sockops'], (d) => (dp = d));

  beforeEach(async () => {
    await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: PROXY_PORT });
    await clearMaps(dp, ['pw_endpoints', 'pw_flows', 'pw_sock_read', 'pw_odst_cookie', 'pw_odst_tuple', 'pw_revnat']);
    await dp.maps.write(
      'pw_endpoints',
      [A, B, C].map((ip, i) => ({
        key: { ip },
        value: { ifindex: 10 + i, flags: ip === C ? 0 : EP_FLAGS.ENABLED, mac: '02:00:00:00:00:01', gw_mac: '02:00:00:00:00:02' },
      })),
      [],
    );
  });

  describe('keying: the 4-tuple as seen from the socket, local first, network order', () => {
    it('the client side of a pod↔pod connection (ACTIVE_ESTABLISHED): sip dip sport dport', async () => {
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40000, B, 8080), ['added_pod']);
      // 10.244.1.2 10.244.1.3 40000 8080
      expect(inserted(r)).toEqual({ calls: 1, key: '0af401020af401039c401f90', flags: BPF_NOEXIST });
    });

    it('the server side (PASSIVE_ESTABLISHED) is keyed from its own side: the byte-wise reverse of the client key', async () => {
      const r = await sockops(SOCK_OPS.PASSIVE_ESTABLISHED_CB, t4(B, 8080, A, 40000), ['added_pod']);
      expect(inserted(r)).toEqual({ calls: 1, key: '0af401030af401021f909c40', flags: BPF_NOEXIST });
      expect(r.calls.hashUpdateKey).toEqual(sockKey(B, A, 8080, 40000));
    });

    it('ports at both ends of their range (1, 65535, 256) keep their bytes', async () => {
      let r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 1, B, 65535), ['added_pod']);
      expect(inserted(r).key).toBe('0af401020af401030001ffff');
      r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 65535, B, 256), ['added_pod']);
      expect(inserted(r).key).toBe('0af401020af40103ffff0100');
    });

    it('a dual-stack (AF_INET6) socket talking IPv4 as ::ffff:a.b.c.d is keyed by its IPv4 tuple, as an AF_INET one', async () => {
      const r = await sockops(
        SOCK_OPS.ACTIVE_ESTABLISHED_CB,
        { local: v4mapped(A), remote: v4mapped(B), localPort: 40000, remotePort: 8080 },
        ['added_pod'],
      );
      expect(inserted(r)).toEqual({ calls: 1, key: '0af401020af401039c401f90', flags: BPF_NOEXIST });
    });

    it('IPv6 proper is not keyed at all: no insertion, nothing counted, even when the last words are enabled pods', async () => {
      const tail = (ip: string) => Buffer.concat([ip6('fd00::').subarray(0, 12), v4mapped(ip).subarray(12)]);
      const cases: Tuple[] = [
        { local: tail(A), remote: tail(B), localPort: 40000, remotePort: 8080 },
        { local: v4mapped(A), remote: tail(B), localPort: 40000, remotePort: 8080 }, // one side only v4-mapped
        { local: tail(A), remote: v4mapped(B), localPort: 40000, remotePort: 8080 },
      ];
      for (const t of cases) notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t, []));
      // an AF_INET6 socket whose IPv4 fields hold enabled pods is still IPv6
      notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, { ...t4(A, 40000, B, 8080), family: AF_INET6 }, []));
    });
  });

  describe('which sockets enter pw_sock', () => {
    it('after an insertion it asks to be told at close: cb flags = the socket’s flags | STATE_CB_FLAG', async () => {
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40001, B, 80), ['added_pod'], {}, { cbFlags: 0x1 });
      expect({ set: r.calls.cbFlagsSet, flags: r.calls.cbFlags }).toEqual({ set: 1, flags: 0x1 | SOCK_OPS_STATE_CB_FLAG });
    });

    it('not_local: one end disabled, or not a local endpoint at all (either direction)', async () => {
      for (const t of [t4(A, 40002, C, 80), t4(C, 80, A, 40002), t4(A, 40002, REMOTE, 443), t4(REMOTE, 443, B, 40003)])
        notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t, ['not_local']));
    });

    it('exists: the key is in pw_sock already (BPF_NOEXIST refused it): no close callback asked', async () => {
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40004, B, 80), ['exists'], { hashUpdateRet: -EEXIST });
      expect({ update: r.calls.hashUpdate, cb: r.calls.cbFlagsSet }).toEqual({ update: 1, cb: 0 });
    });

    it('add_failed: any other error of the insertion', async () => {
      const r = await sockops(SOCK_OPS.PASSIVE_ESTABLISHED_CB, t4(B, 80, A, 40005), ['add_failed'], { hashUpdateRet: -ENOMEM });
      expect(r.calls.cbFlagsSet).toBe(0);
    });

    it('a new connection never inherits flow state: pw_flows and pw_sock_read of its tuple are dropped at establishment', async () => {
      await dp.maps.write(
        'pw_flows',
        [{ key: { sip: A, dip: B, sport: 40006, dport: 80 }, value: { flags: FLOW_FLAGS.PASSTHROUGH, bytes: 99n } }],
        [],
      );
      await dp.maps.write('pw_sock_read', [{ key: { sip: A, dip: B, sport: 40006, dport: 80 }, value: { bytes: 42n } }], []);
      await dp.maps.write('pw_flows', [{ key: { sip: A, dip: B, sport: 40007, dport: 80 }, value: { flags: 0, bytes: 1n } }], []); // another tuple
      await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40006, B, 80), ['added_pod']);
      expect((await dp.maps.dump('pw_flows')).map((e) => e.key.sport)).toEqual([40007]);
      expect(await dp.maps.dump('pw_sock_read')).toEqual([]);
    });

    it('other callbacks (RTO, a state change that is not a close) change nothing', async () => {
      await dp.maps.write('pw_flows', [{ key: { sip: A, dip: B, sport: 40008, dport: 80 }, value: { flags: 0, bytes: 5n } }], []);
      notInserted(await sockops(SOCK_OPS.RTO_CB, t4(A, 40008, B, 80), []));
      notInserted(await sockops(SOCK_OPS.STATE_CB, t4(A, 40008, B, 80), [], {}, { newState: TCP_STATE.FIN_WAIT1 }));
      expect((await dp.maps.dump('pw_flows')).length).toBe(1);
    });

    it('at close (STATE_CB → TCP_CLOSE) the flow state goes; closed is counted when there was a flow', async () => {
      const key = { sip: A, dip: B, sport: 40009, dport: 80 };
      await dp.maps.write('pw_flows', [{ key, value: { flags: 0, bytes: 5n } }], []);
      await dp.maps.write('pw_sock_read', [{ key, value: { bytes: 5n } }], []);
      notInserted(await sockops(SOCK_OPS.STATE_CB, t4(A, 40009, B, 80), ['closed'], {}, { newState: TCP_STATE.CLOSE }));
      expect({ flows: await dp.maps.dump('pw_flows'), read: await dp.maps.dump('pw_sock_read') }).toEqual({ flows: [], read: [] });
      // a socket that never sent: nothing to drop, nothing counted
      await dp.maps.write('pw_sock_read', [{ key, value: { bytes: 1n } }], []);
      await sockops(SOCK_OPS.STATE_CB, t4(A, 40009, B, 80), [], {}, { newState: TCP_STATE.CLOSE });
      expect(await dp.maps.dump('pw_sock_read')).toEqual([]);
    });
  });

  describe('reverse translations (pw_revnat) live as long as their TCP connection', () => {
    const VIP = { ip: '10.96.0.10', port: 80 };
    const revnat = (cookie: bigint, ip: string, port: number) => ({ key: { cookie, ip, port }, value: VIP });
    const revnatKeys = async () =>
      (await dp.maps.dump('pw_revnat')).map((e) => `${e.key.cookie as bigint}:${e.key.ip as string}:${e.key.port as number}`).sort();

    it('a connect() pw_lb translated (its cookie and peer in pw_revnat) is watched to its close, to a remote backend too', async () => {
      await dp.maps.write('pw_revnat', [revnat(0x777n, REMOTE, 443)], []);
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40010, REMOTE, 443), ['revnat_watch', 'not_local'], { cookie: 0x777n });
      expect({ update: r.calls.hashUpdate, set: r.calls.cbFlagsSet, flags: r.calls.cbFlags }).toEqual({
        update: 0,
        set: 1,
        flags: SOCK_OPS_STATE_CB_FLAG,
      });
      // to a local enabled pod: watched and put into pw_sock
      await dp.maps.write('pw_revnat', [revnat(0x778n, B, 8080)], []);
      const local = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40011, B, 8080), ['revnat_watch', 'added_pod'], { cookie: 0x778n });
      expect(inserted(local).calls).toBe(1);
    });

    it('not watched: another socket, another peer of this socket, the accepting side', async () => {
      await dp.maps.write('pw_revnat', [revnat(0x777n, REMOTE, 443)], []);
      notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40012, REMOTE, 443), ['not_local'], { cookie: 0x776n }));
      notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40012, REMOTE, 444), ['not_local'], { cookie: 0x777n }));
      notInserted(await sockops(SOCK_OPS.PASSIVE_ESTABLISHED_CB, t4(A, 443, REMOTE, 40012), ['not_local'], { cookie: 0x777n }));
    });

    it('a watched connection is marked in its socket storage (pw_revnat_sk); one pw_lb did not translate is not', async () => {
      await dp.maps.write('pw_revnat', [revnat(0x777n, REMOTE, 443)], []);
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40015, REMOTE, 443), ['revnat_watch', 'not_local'], { cookie: 0x777n });
      expect(r.calls.skStorage).toEqual({ watched: 1 });
      // pod↔pod into pw_sock, not translated: no storage created (its close callback is asked for pw_sock's sake)
      const pod = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40016, B, 8080), ['added_pod'], { cookie: 0x780n });
      expect({ cb: pod.calls.cbFlagsSet, storage: pod.calls.skStorage }).toEqual({ cb: 1, storage: undefined });
      // a socket whose storage cannot be had (no full socket): still watched, unmarked
      const bare = await sockops(
        SOCK_OPS.ACTIVE_ESTABLISHED_CB,
        t4(A, 40017, REMOTE, 443),
        ['revnat_watch', 'not_local'],
        { cookie: 0x777n },
        { noSk: true },
      );
      expect({ cb: bare.calls.cbFlagsSet, storage: bare.calls.skStorage }).toEqual({ cb: 1, storage: undefined });
    });

    it('revnat_evicted: a watched connection whose entry the LRU took while it was open; its mark is cleared at close', async () => {
      // established: watched and marked; then the entry is evicted (deleted here) while the connection lives
      const t = t4(A, 40018, REMOTE, 443);
      await dp.maps.write('pw_revnat', [revnat(0x781n, REMOTE, 443)], []);
      const est = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t, ['revnat_watch', 'not_local'], { cookie: 0x781n });
      await dp.maps.write('pw_revnat', [], [revnat(0x781n, REMOTE, 443).key]);
      const close = await sockops(
        SOCK_OPS.STATE_CB,
        t,
        ['revnat_evicted'],
        { cookie: 0x781n, skStorage: est.calls.skStorage },
        {
          newState: TCP_STATE.CLOSE,
        },
      );
      expect(close.calls.skStorage).toEqual({ watched: 0 });
      // the same socket closing again (connect()ed anew elsewhere, untranslated): not counted twice
      await sockops(SOCK_OPS.STATE_CB, t, [], { cookie: 0x781n, skStorage: close.calls.skStorage }, { newState: TCP_STATE.CLOSE });
    });

    it('not revnat_evicted: a normal close of a watched connection, a pw_sock flow, a socket never translated', async () => {
      // watched, entry still there at close: revnat_closed only
      await dp.maps.write('pw_revnat', [revnat(0x782n, REMOTE, 443)], []);
      await sockops(
        SOCK_OPS.STATE_CB,
        t4(A, 40019, REMOTE, 443),
        ['revnat_closed'],
        { cookie: 0x782n, skStorage: { watched: 1 } },
        {
          newState: TCP_STATE.CLOSE,
        },
      );
      // a pod↔pod flow in pw_sock (close callback asked, no mark, no pw_revnat entry): closed only
      const key = { sip: A, dip: B, sport: 40020, dport: 80 };
      await dp.maps.write('pw_flows', [{ key, value: { flags: 0, bytes: 5n } }], []);
      await sockops(SOCK_OPS.STATE_CB, t4(A, 40020, B, 80), ['closed'], { cookie: 0x783n }, { newState: TCP_STATE.CLOSE });
      // storage of another kind of use left unmarked (watched 0), or no full socket at close: nothing
      await sockops(
        SOCK_OPS.STATE_CB,
        t4(A, 40021, REMOTE, 443),
        [],
        { cookie: 0x784n, skStorage: { watched: 0 } },
        { newState: TCP_STATE.CLOSE },
      );
      await sockops(
        SOCK_OPS.STATE_CB,
        t4(A, 40022, REMOTE, 443),
        [],
        { cookie: 0x785n, skStorage: { watched: 1 } },
        {
          newState: TCP_STATE.CLOSE,
          noSk: true,
        },
      );
    });

    it("at close the connection's own entry goes (revnat_closed); other sockets' and other peers' stay", async () => {
      await dp.maps.write('pw_revnat', [revnat(0x777n, REMOTE, 443), revnat(0x777n, REMOTE, 53), revnat(0x779n, REMOTE, 443)], []);
      notInserted(
        await sockops(SOCK_OPS.STATE_CB, t4(A, 40013, REMOTE, 443), ['revnat_closed'], { cookie: 0x777n }, { newState: TCP_STATE.CLOSE }),
      );
      expect(await revnatKeys()).toEqual([`${0x777n}:${REMOTE}:53`, `${0x779n}:${REMOTE}:443`].sort());
      // closed again (or a connection that was never translated): nothing to delete, nothing counted
      await sockops(SOCK_OPS.STATE_CB, t4(A, 40013, REMOTE, 443), [], { cookie: 0x777n }, { newState: TCP_STATE.CLOSE });
      // a state change that is not a close keeps it
      await sockops(SOCK_OPS.STATE_CB, t4(A, 40014, REMOTE, 443), [], { cookie: 0x779n }, { newState: TCP_STATE.FIN_WAIT1 });
      expect((await revnatKeys()).length).toBe(2);
    });
  });

  describe('sidecar acceleration: app↔proxy sockets', () => {
    const app = t4(A, 40100, PROXY_ADDR, PROXY_PORT);
    const odst = { ip: '10.96.0.10', port: 80 };

    it("the app's socket (ACTIVE, peer 127.128/10:proxy port) enters pw_sock, its original destination moves from cookie to 4-tuple", async () => {
      await dp.maps.write('pw_odst_cookie', [{ key: { cookie: 0x12345n }, value: odst }], []);
      const r = await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, app, ['added_proxy', 'odst_saved'], { cookie: 0x12345n });
      expect(inserted(r)).toEqual({ calls: 1, key: '0af401027f8123459ca43a99', flags: BPF_NOEXIST });
      expect((await dp.maps.dump('pw_odst_tuple')).map((e) => ({ ...e.key, ...e.value }))).toEqual([
        { sip: A, dip: PROXY_ADDR, sport: 40100, dport: PROXY_PORT, ...odst },
      ]);
      expect(await dp.maps.dump('pw_odst_cookie')).toEqual([]);
    });

    it("the proxy's accepted socket (PASSIVE, local 127.128/10:proxy port) enters pw_sock; no original destination is moved", async () => {
      await dp.maps.write('pw_odst_cookie', [{ key: { cookie: 0x12345n }, value: odst }], []);
      const r = await sockops(SOCK_OPS.PASSIVE_ESTABLISHED_CB, t4(PROXY_ADDR, PROXY_PORT, A, 40100), ['added_proxy'], { cookie: 0x12345n });
      expect(inserted(r).key).toBe('7f8123450af401023a999ca4');
      expect(await dp.maps.dump('pw_odst_tuple')).toEqual([]);
      expect((await dp.maps.dump('pw_odst_cookie')).length).toBe(1);
    });

    it('an app socket whose cookie saved nothing still enters pw_sock (added_proxy only)', async () => {
      await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, app, ['added_proxy'], { cookie: 0x999n });
      expect(await dp.maps.dump('pw_odst_tuple')).toEqual([]);
    });

    it('not the proxy: a 127.128/10 peer on another port, or any of it while capture is off (proxy_port 0)', async () => {
      notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, t4(A, 40101, PROXY_ADDR, 15006), ['not_local']));
      await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: 0 });
      notInserted(await sockops(SOCK_OPS.ACTIVE_ESTABLISHED_CB, app, ['not_local']));
    });
  });
});
