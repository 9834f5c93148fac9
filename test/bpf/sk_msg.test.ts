// pw_sk_msg.h through bpf/tests/sk_msg.c: the verdict on each message of an
// accelerated socket (redirect into the peer keyed by the reversed tuple, or
// TCP for good) and the switches that move a redirected flow to TCP: the
// PASSTHROUGH flag, sockmap off, bulk_bytes, and flow control's queue bound
// (unread bytes from the peer's psock msg_tot_len where the kernel keeps it,
// else redirected − read; sk_msg_no_kernel_read.c builds the second as the
// fallback object does). bpf_msg_redirect_hash is mocked: it records the key
// and answers whether the peer is in pw_sock. Each run checks the verdict,
// the key and flags asked for, the counter that moved (by one message and
// its bytes), and pw_flows afterwards.
import { beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_FLAGS, FLOW_CONTROL, FLOW_FLAGS } from '../../abi/schema.js';
import { kernelStructHasMember } from '../../loader/kbtf.js';
import type { Datapath } from '../../loader/datapath.js';
import { clearMaps, reasonCounters, setConfig } from './helpers.js';
import { bpfSkipReason, ip6, runLogic, skMsg, useLogic, v4mapped, type LogicRun, type Mock, type Tuple } from './logic.js';

const skip = bpfSkipReason();
let dp: Datapath;

const SK_PASS = 1;
const BPF_F_INGRESS = 1n;
const BOUND = FLOW_CONTROL.QUEUE_MAX_BYTES;
const BULK = 65536;
const PASS = FLOW_FLAGS.PASSTHROUGH;
/** Whether this kernel's sk_psock keeps msg_tot_len: then sk_msg.o reads unread bytes there. */
const PSOCK = kernelStructHasMember('sk_psock', 'msg_tot_len');

const A = '10.244.1.2';
const B = '10.244.1.3';
/** The client socket A:40000 → B:8080; its peer is keyed B, A, 8080, 40000. */
const SELF: Tuple = { local: A, remote: B, localPort: 40000, remotePort: 8080 };
const SELF_KEY = { sip: A, dip: B, sport: 40000, dport: 8080 };
const PEER_KEY = { sip: B, dip: A, sport: 8080, dport: 40000 };
const PEER_HEX = '0af401030af401021f909c40';

const setFlow = (flags: number, bytes: number | bigint, key = SELF_KEY) =>
  dp.maps.write('pw_flows', [{ key, value: { flags, bytes: BigInt(bytes) } }], []);
const setRead = (bytes: number | bigint, key = PEER_KEY) => dp.maps.write('pw_sock_read', [{ key, value: { bytes: BigInt(bytes) } }], []);
const flows = async () => (await dp.maps.dump('pw_flows')).map((e) => ({ ...e.key, flags: e.value.flags, bytes: e.value.bytes }));
const flow = (flags: number, bytes: number | bigint) => [{ ...SELF_KEY, flags, bytes: BigInt(bytes) }];

/**
 * One message of `size` bytes through test program `prog`: checks SK_PASS
 * (every verdict is: a redirect is the helper's), that exactly `reason`
 * moved, by one message and `size` bytes (none for an IPv6 socket), and
 * whether a redirect into the peer (BPF_F_INGRESS) was asked for.
 */
async function msg(
  prog: string,
  size: number,
  reason: string | undefined,
  redirect: boolean,
  mock: Mock = {},
  t: Tuple = SELF,
): Promise<LogicRun> {
  const before = await reasonCounters(dp, 'pw_sk_msg');
  const r = await runLogic(dp, prog, skMsg(t, size), mock);
  const after = await reasonCounters(dp, 'pw_sk_msg');
  const moved: Record<string, [number, number]> = {};
  for (const k of Object.keys(after)) {
    const d: [number, number] = [Number(after[k]!.packets - before[k]!.packets), Number(after[k]!.bytes - before[k]!.bytes)];
    if (d[0] || d[1]) moved[k] = d;
  }
  expect({ retval: r.retval, moved }).toEqual({ retval: SK_PASS, moved: reason ? { [reason]: [1, size] } : {} });
  if (redirect)
    expect({ calls: r.calls.redirect, key: r.calls.redirectKey.toString('hex'), flags: r.calls.redirectFlags }).toEqual({
      calls: 1,
      key: PEER_HEX,
      flags: BPF_F_INGRESS,
    });
  else expect(r.calls.redirect).toBe(0);
  return r;
}

const PROGS = ['test_sk_msg', 'test_sk_msg_no_kernel_read'];

describe.skipIf(!!skip)(`pw_sk_msg.h${skip ? ` — skipped: ${skip}` : ''}`, () => {
  useLogic(['sk_msg', 'sk_msg_no_kernel_read'], (d) => (dp = d));

  beforeEach(async () => {
    await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: 15001, bulkBytes: BULK });
    await clearMaps(dp, ['pw_flows', 'pw_sock_read']);
  });

  it('flow control reads the psock exactly where the kernel keeps msg_tot_len, and never in the object built without kernel reads', async () => {
    const r = await runLogic(dp, 'test_sk_msg', skMsg(SELF, 10), { peerInSock: true });
    const f = await runLogic(dp, 'test_sk_msg_no_kernel_read', skMsg(SELF, 10), { peerInSock: true });
    expect({ object: r.calls.psockPath, fallback: f.calls.psockPath, fallbackReads: f.calls.reads }).toEqual({
      object: PSOCK,
      fallback: false,
      fallbackReads: 0,
    });
  });

  // ---- the verdict at the first message, and after ----

  for (const prog of PROGS) {
    describe(`verdicts (${prog})`, () => {
      it('the first message with the peer in pw_sock is redirected into it (reversed tuple, BPF_F_INGRESS); the flow starts counting', async () => {
        await msg(prog, 100, 'redirected', true, { peerInSock: true });
        expect(await flows()).toEqual(flow(0, 100));
        await msg(prog, 250, 'redirected', true, { peerInSock: true });
        expect(await flows()).toEqual(flow(0, 350));
      });

      it('the first message with no peer in pw_sock: TCP for good (no_peer), even once the peer arrives', async () => {
        await msg(prog, 100, 'no_peer', true, { peerInSock: false });
        expect(await flows()).toEqual(flow(PASS, 0));
        await msg(prog, 100, 'passthrough', false, { peerInSock: true });
        expect(await flows()).toEqual(flow(PASS, 0));
      });

      it('a redirected flow whose peer left goes to TCP for good (passthrough), its byte count kept', async () => {
        await setFlow(0, 500);
        await msg(prog, 100, 'passthrough', true, { peerInSock: false });
        expect(await flows()).toEqual(flow(PASS, 500));
        await msg(prog, 100, 'passthrough', false, { peerInSock: true });
      });

      it('a dual-stack socket talking IPv4 (::ffff:) is keyed and redirected as an IPv4 one', async () => {
        const mapped: Tuple = { local: v4mapped(A), remote: v4mapped(B), localPort: 40000, remotePort: 8080 };
        await msg(prog, 64, 'redirected', true, { peerInSock: true }, mapped);
        expect(await flows()).toEqual(flow(0, 64));
      });

      it('an IPv6 socket proper passes without a verdict of its own: nothing asked, counted or written', async () => {
        const v6: Tuple = { local: ip6('fd00::2'), remote: ip6('fd00::3'), localPort: 40000, remotePort: 8080 };
        await msg(prog, 64, undefined, false, { peerInSock: true }, v6);
        expect(await flows()).toEqual([]);
      });
    });

    // ---- the switches to TCP ----

    describe(`switches to TCP (${prog})`, () => {
      it('PASSTHROUGH set on a flow (by the agent: drain, namespace off) sends every message to TCP, the flow untouched', async () => {
        await setFlow(PASS, 1234);
        await msg(prog, 100, 'passthrough', false, { peerInSock: true });
        expect(await flows()).toEqual(flow(PASS, 1234));
      });

      it('sockmap off (pw_config without SOCKMAP_ON): the flow is set to PASSTHROUGH with no bytes (to_tcp_off), no redirect', async () => {
        await setConfig(dp, { flags: 0, proxyUid: 1337, proxyGid: 1337, proxyPort: 15001, bulkBytes: BULK });
        await msg(prog, 100, 'to_tcp_off', false, { peerInSock: true });
        expect(await flows()).toEqual(flow(PASS, 0));
        await setFlow(0, 777); // a redirected flow: its state is replaced
        await msg(prog, 100, 'to_tcp_off', false, { peerInSock: true });
        expect(await flows()).toEqual(flow(PASS, 0));
      });

      it('bulk: a message of a redirected flow reaching bulk_bytes moves it to TCP for good (to_tcp_bulk); one byte less is redirected', async () => {
        await setFlow(0, 1000);
        await msg(prog, BULK - 1, 'redirected', true, { peerInSock: true });
        expect(await flows()).toEqual(flow(0, 1000 + BULK - 1));
        await msg(prog, BULK, 'to_tcp_bulk', false, { peerInSock: true });
        expect(await flows()).toEqual(flow(PASS, 1000 + BULK - 1));
        await msg(prog, 10, 'passthrough', false, { peerInSock: true });
      });

      it('bulk applies to a redirected flow: a first message of bulk size is redirected; bulk_bytes 0 never switches', async () => {
        await msg(prog, BULK * 2, 'redirected', true, { peerInSock: true });
        expect(await flows()).toEqual(flow(0, BULK * 2));
        await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: 15001, bulkBytes: 0 });
        await msg(prog, 1 << 20, 'redirected', true, { peerInSock: true });
        expect(await flows()).toEqual(flow(0, BULK * 2 + (1 << 20)));
      });
    });
  }

  // ---- flow control: the queue bound ----

  describe('queue bound, unread = redirected − read (test_sk_msg_no_kernel_read: the fallback object)', () => {
    const prog = 'test_sk_msg_no_kernel_read';
    beforeEach(async () => {
      await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: 15001, bulkBytes: 0 });
    });

    it('up to the bound the flow stays redirected; the message that would pass it is still redirected, then the flow goes to TCP (to_tcp_queue)', async () => {
      await setFlow(0, BOUND - 1000);
      await msg(prog, 1000, 'redirected', true, { peerInSock: true }); // unread + size = BOUND: not past it
      expect(await flows()).toEqual(flow(0, BOUND));
      await msg(prog, 1, 'to_tcp_queue', true, { peerInSock: true });
      expect(await flows()).toEqual(flow(PASS, BOUND + 1));
      await msg(prog, 1, 'passthrough', false, { peerInSock: true });
    });

    it("what the peer has read (pw_sock_read, keyed by the peer) is taken off; the sender's own read count is not", async () => {
      await setFlow(0, 20 * BOUND);
      await setRead(20 * BOUND - 100);
      await setRead(0, SELF_KEY);
      await msg(prog, BOUND - 100, 'redirected', true, { peerInSock: true }); // 100 + BOUND − 100
      await msg(prog, 1, 'to_tcp_queue', true, { peerInSock: true }); // unread is now BOUND
      expect(await flows()).toEqual(flow(PASS, 21 * BOUND + 1 - 100));
    });

    it('a read counted before the redirect that queued it (read > redirected) counts as nothing unread', async () => {
      await setFlow(0, 100);
      await setRead(200);
      await msg(prog, BOUND, 'redirected', true, { peerInSock: true });
      await setFlow(0, 100);
      await msg(prog, BOUND + 1, 'to_tcp_queue', true, { peerInSock: true });
    });

    it('a first message larger than the bound is redirected and opens its flow on TCP', async () => {
      await msg(prog, BOUND + 1, 'to_tcp_queue', true, { peerInSock: true });
      expect(await flows()).toEqual(flow(PASS, BOUND + 1));
    });
  });

  describe(`queue bound of test_sk_msg on this kernel: ${PSOCK ? "the peer psock's msg_tot_len" : 'no msg_tot_len here: redirected − read'}`, () => {
    const prog = 'test_sk_msg';
    const SK = 0xffff888012340000n; // the peer socket (sk_msg.sk_redir)
    const PSOCK_PTR = 0xffff888056780000n; // its psock (sock.sk_user_data, low bits: flags)
    beforeEach(async () => {
      await setConfig(dp, { flags: CONFIG_FLAGS.SOCKMAP_ON, proxyUid: 1337, proxyGid: 1337, proxyPort: 15001, bulkBytes: 0 });
    });

    it('the unread bytes the psock chain reads decide; redirected − read does not (where the kernel keeps msg_tot_len)', async () => {
      // redirected − read says 0 unread; the psock says BOUND − 99: the two sources disagree
      await setFlow(0, 100);
      await setRead(100);
      const chain: Mock = { peerInSock: true, skRedir: SK, skUserData: PSOCK_PTR | 3n, msgTotLen: BOUND - 99 };
      const r = await msg(prog, 99, 'redirected', true, chain);
      await msg(prog, 100, PSOCK ? 'to_tcp_queue' : 'redirected', true, chain);
      expect(await flows()).toEqual(flow(PSOCK ? PASS : 0, 299));
      if (PSOCK) {
        // sk_redir, then sk_user_data of that socket, then msg_tot_len of the psock with the flag bits masked off
        expect({ reads: r.calls.reads, addr: r.calls.readAddr.slice(1) }).toEqual({
          reads: 3,
          addr: [SK + BigInt(r.calls.offUserData), PSOCK_PTR + BigInt(r.calls.offMsgTotLen)],
        });
        expect(r.calls.offUserData * r.calls.offMsgTotLen).toBeGreaterThan(0);
      } else expect(r.calls.reads).toBe(0);
    });

    it('no peer socket behind the redirect (sk_redir 0) or no psock (sk_user_data only flags): nothing unread', async () => {
      await setFlow(0, 100 * BOUND); // redirected − read would be far past the bound
      const noSk = await msg(prog, 10, PSOCK ? 'redirected' : 'to_tcp_queue', true, { peerInSock: true, skRedir: 0n, msgTotLen: BOUND });
      await setFlow(0, 100 * BOUND);
      const noPsock = await msg(prog, 10, PSOCK ? 'redirected' : 'to_tcp_queue', true, {
        peerInSock: true,
        skRedir: SK,
        skUserData: 5n,
        msgTotLen: BOUND,
      });
      expect({ noSk: noSk.calls.reads, noPsock: noPsock.calls.reads }).toEqual(PSOCK ? { noSk: 1, noPsock: 2 } : { noSk: 0, noPsock: 0 });
    });
  });
});
