// The socket programs' logic under BPF_PROG_TEST_RUN. The kernel cannot
// test-run sock_addr, sock_ops or sk_msg programs (ENOTSUPP), so the test
// programs of bpf/tests/ are tc programs that call the logic headers
// (pw_lb.h, pw_proxy.h, pw_sockops.h, pw_sk_msg.h) with a fake context and
// mocked socket helpers (bpf/tests/pw_test.h). This module builds them (the
// clang flags of loader/clang.ts, into build/bpf-tests/), loads them into a
// scratch datapath of their own (the schema's real maps), and speaks the
// packet layout of pw_test.h.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { ipv4ToBytes } from '../../abi/codec.js';
import { BPF_SRC, BUILD, GEN_INCLUDE, build } from '../../loader/build.js';
import { compile } from '../../loader/clang.js';
import { Datapath } from '../../loader/datapath.js';
import * as bpftool from '../../loader/bpftool.js';

export const TESTS_SRC = path.join(BPF_SRC, 'tests');
export const TESTS_OBJ = path.join(BUILD, 'bpf-tests');

/** bpf/tests/<name>.c → build/bpf-tests/<name>.o, compiled when older than any BPF source or header (needs clang). */
export async function buildTestObjects(names: string[]): Promise<string[]> {
  await build(); // the generated headers (and the product's objects, as the other tests use them)
  fs.mkdirSync(TESTS_OBJ, { recursive: true });
  const dirs = [BPF_SRC, path.join(BPF_SRC, 'fallback'), TESTS_SRC, GEN_INCLUDE];
  const inputs = dirs.flatMap((d) =>
    fs
      .readdirSync(d)
      .filter((f) => /\.[ch]$/.test(f))
      .map((f) => path.join(d, f)),
  );
  const newest = Math.max(...inputs.map((f) => fs.statSync(f).mtimeMs));
  const out: string[] = [];
  for (const name of names) {
    const src = path.join(TESTS_SRC, `${name}.c`);
    const obj = path.join(TESTS_OBJ, `${name}.o`);
    if (!fs.existsSync(obj) || fs.statSync(obj).mtimeMs < newest) {
      const tmp = `${obj}.tmp-${process.pid}`;
      await compile({ src, out: tmp, includeDirs: [GEN_INCLUDE, BPF_SRC, TESTS_SRC] });
      fs.renameSync(tmp, obj);
    }
    out.push(obj);
  }
  return out;
}

/** Why these tests cannot run here (only: not root), else undefined. */
export function bpfSkipReason(): string | undefined {
  return process.getuid?.() !== 0 ? 'BPF unit tests load programs and need root (run `npx vitest run --project bpf` as root)' : undefined;
}

/**
 * Builds and loads bpf/tests/<name>.c for each name into a fresh pin
 * directory; the caller uninstalls.
 */
export async function openLogic(names: string[]): Promise<Datapath> {
  const objs = await buildTestObjects(names);
  const dp = await Datapath.open(`pwbpf_${crypto.randomBytes(3).toString('hex')}`);
  try {
    await dp.load(objs);
    return dp;
  } catch (e) {
    await dp.uninstall().catch(() => undefined);
    throw e;
  }
}

/**
 * The hooks of a suite of these tests (call it at the top of its describe):
 * loads the objects before the suite and hands the datapath to `use`, removes
 * it after. Loaded there and not at the top of the file, so collecting the
 * file (`vitest list`) loads nothing. As root a build or load error fails
 * every test of the suite with the kernel's reason: a verifier regression
 * never turns them into skips.
 */
export function useLogic(names: string[], use: (dp: Datapath) => void): void {
  let dp: Datapath | undefined;
  let error: unknown;
  beforeAll(async () => {
    try {
      dp = await openLogic(names);
      use(dp);
    } catch (e) {
      error = e;
    }
  });
  beforeEach(() => {
    if (error) throw error;
  });
  afterAll(async () => {
    await dp?.uninstall();
  });
}

// ---- the test packet (bpf/tests/pw_test.h) ----

const OFF_MOCK = 16;
const OFF_CALLS = 192;
const OFF_CTX = 296;
const CTX_MAX = 512;
const BAD_INPUT = 0xbad;
/** An ethertype the kernel does nothing with (IEEE local experimental): the test run takes the packet as it is. */
const ETHERTYPE = 0x88b5;
const MOCK_LEVELS = 13;

/** What the mocked helpers answer (bpf/tests/pw_test.h struct pw_mock); unset: 0. */
export interface Mock {
  /** bpf_ktime_get_ns */
  now?: bigint;
  /** bpf_get_socket_cookie */
  cookie?: bigint;
  /** bpf_get_netns_cookie */
  netns?: bigint;
  /** bpf_get_current_uid_gid */
  uid?: number;
  gid?: number;
  /** bpf_get_current_ancestor_cgroup_id(level): cgroups[level], 0 past the end (level 0: the root) */
  cgroups?: bigint[];
  /** bpf_probe_read_kernel: the psock chain sk_msg.sk_redir → sock.sk_user_data → sk_psock.msg_tot_len */
  skRedir?: bigint;
  skUserData?: bigint;
  msgTotLen?: number;
  /** bpf_sock_hash_update's answer (0, -EEXIST, …) */
  hashUpdateRet?: number;
  /** bpf_get_prandom_u32 */
  prandom?: number;
  /** bpf_msg_redirect_hash: the key is in pw_sock (SK_PASS) or not (SK_DROP) */
  peerInSock?: boolean;
  /** bpf_sk_storage_get: the socket's pw_revnat_sk (unset: the socket has none) */
  skStorage?: { watched: number };
}

/** What the mocks were asked (struct pw_calls). Keys as their 12 bytes (struct pw_sock_key). */
export interface Calls {
  prandom: number;
  hashUpdate: number;
  hashUpdateFlags: bigint;
  hashUpdateKey: Buffer;
  cbFlagsSet: number;
  cbFlags: number;
  redirect: number;
  redirectFlags: bigint;
  redirectKey: Buffer;
  reads: number;
  readAddr: bigint[];
  psockPath: boolean;
  offUserData: number;
  offMsgTotLen: number;
  /** The socket's pw_revnat_sk after the call (undefined: none). */
  skStorage: { watched: number } | undefined;
}

function encodeMock(m: Mock): Buffer {
  const b = Buffer.alloc(OFF_CALLS - OFF_MOCK);
  b.writeBigUInt64LE(m.now ?? 0n, 0);
  b.writeBigUInt64LE(m.cookie ?? 0n, 8);
  b.writeBigUInt64LE(m.netns ?? 0n, 16);
  b.writeUInt32LE(m.uid ?? 0, 24);
  b.writeUInt32LE(m.gid ?? 0, 28);
  const cg = m.cgroups ?? [];
  if (cg.length > MOCK_LEVELS) throw new Error(`at most ${MOCK_LEVELS} cgroup levels`);
  cg.forEach((id, i) => b.writeBigUInt64LE(id, 32 + 8 * i));
  b.writeBigUInt64LE(m.skRedir ?? 0n, 136);
  b.writeBigUInt64LE(m.skUserData ?? 0n, 144);
  b.writeBigInt64LE(BigInt(m.hashUpdateRet ?? 0), 152);
  b.writeUInt32LE(m.prandom ?? 0, 160);
  b.writeUInt32LE(m.peerInSock ? 1 : 0, 164);
  b.writeUInt32LE(m.msgTotLen ?? 0, 168);
  b.writeUInt32LE(m.skStorage ? 1 + m.skStorage.watched : 0, 172);
  return b;
}

function decodeCalls(b: Buffer): Calls {
  return {
    prandom: b.readUInt32LE(0),
    hashUpdate: b.readUInt32LE(4),
    hashUpdateFlags: b.readBigUInt64LE(8),
    hashUpdateKey: Buffer.from(b.subarray(16, 28)),
    cbFlagsSet: b.readUInt32LE(28),
    cbFlags: b.readUInt32LE(32),
    redirect: b.readUInt32LE(36),
    redirectFlags: b.readBigUInt64LE(40),
    redirectKey: Buffer.from(b.subarray(48, 60)),
    reads: b.readUInt32LE(60),
    readAddr: [0, 1, 2].map((i) => b.readBigUInt64LE(64 + 8 * i)),
    psockPath: b.readUInt32LE(88) === 1,
    offUserData: b.readUInt32LE(92),
    offMsgTotLen: b.readUInt32LE(96),
    skStorage: b.readUInt32LE(100) ? { watched: b.readUInt32LE(100) - 1 } : undefined,
  };
}

export interface LogicRun {
  /** The decision function's return value (sock_addr, sock_ops: 1; sk_msg: SK_PASS 1 / SK_DROP 0). */
  retval: number;
  calls: Calls;
  /** The context after the call (the bytes the fake context held). */
  ctx: Buffer;
}

/** Runs test program `prog` once on a context (its bytes, at most CTX_MAX) with the mocks' answers. */
export async function runLogic(dp: Datapath, prog: string, ctx: Buffer, mock: Mock = {}): Promise<LogicRun> {
  if (ctx.length > CTX_MAX) throw new Error(`context of ${ctx.length} bytes: at most ${CTX_MAX}`);
  const pkt = Buffer.alloc(OFF_CTX + CTX_MAX);
  pkt.writeUInt16BE(ETHERTYPE, 12);
  encodeMock(mock).copy(pkt, OFF_MOCK);
  ctx.copy(pkt, OFF_CTX);
  const r = await bpftool.progRun(dp.pins.prog(prog), pkt);
  if (r.retval === BAD_INPUT) throw new Error(`${prog}: the test program could not read or write its packet`);
  if (r.dataOut.length !== pkt.length) throw new Error(`${prog}: ${r.dataOut.length} bytes out, ${pkt.length} in`);
  return {
    retval: r.retval,
    calls: decodeCalls(r.dataOut.subarray(OFF_CALLS, OFF_CTX)),
    ctx: Buffer.from(r.dataOut.subarray(OFF_CTX, OFF_CTX + ctx.length)),
  };
}

// ---- addresses ----

export const AF_INET = 2;
export const AF_INET6 = 10;

export const ip4 = (s: string): Buffer => Buffer.from(ipv4ToBytes(s));
export const ip4str = (b: Buffer): string => [...b.subarray(0, 4)].join('.');

/** ::ffff:a.b.c.d as 16 bytes. */
export function v4mapped(s: string): Buffer {
  return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), ip4(s)]);
}

/** An IPv6 address as 16 bytes (hex groups, at most one "::"). */
export function ip6(s: string): Buffer {
  const [head = '', tail] = s.split('::');
  const words = (x: string) => (x ? x.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  const all = [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
  const b = Buffer.alloc(16);
  all.forEach((w, i) => b.writeUInt16BE(w, 2 * i));
  return b;
}

/** The 12 bytes of a struct pw_sock_key: sip, dip, sport, dport, all in network order. */
export function sockKey(sip: string, dip: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  ip4(sip).copy(b, 0);
  ip4(dip).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

// ---- contexts ----

/**
 * struct bpf_sock_addr as the kernel shows it (bpf/tests/pw_test_sock_addr.h):
 * user_ip4 and user_ip6 in network order, user_port the be16 port in the low
 * half of a u32, and the socket (ctx->sk) embedded at 64: src_ip4, src_port
 * (host order), dst_ip4, state.
 */
export interface SockAddr {
  /** AF_INET socket: user_ip4 */
  ip4?: string;
  /** AF_INET6 socket: user_ip6 (16 bytes: v4mapped() or ip6()) */
  ip6?: Buffer;
  port: number;
  protocol: number;
  sk?: { srcIp4?: string; srcPort?: number; dstIp4?: string; dstPort?: number; state?: number };
}

const SA = { userFamily: 0, userIp4: 4, userIp6: 8, userPort: 24, family: 28, type: 32, protocol: 36, sk: 64 };
const SK = { family: 4, protocol: 12, srcIp4: 24, srcPort: 44, dstPort: 48, dstIp4: 52, state: 72 };
export const SOCK_ADDR_SIZE = 64 + 80;

export function sockAddr(a: SockAddr): Buffer {
  const b = Buffer.alloc(SOCK_ADDR_SIZE);
  const fam = a.ip6 ? AF_INET6 : AF_INET;
  b.writeUInt32LE(fam, SA.userFamily);
  if (a.ip4) ip4(a.ip4).copy(b, SA.userIp4);
  if (a.ip6) a.ip6.copy(b, SA.userIp6);
  b.writeUInt16BE(a.port, SA.userPort);
  b.writeUInt32LE(fam, SA.family);
  b.writeUInt32LE(a.protocol === 17 ? 2 : 1, SA.type); // SOCK_DGRAM, SOCK_STREAM
  b.writeUInt32LE(a.protocol, SA.protocol);
  const sk = a.sk ?? {};
  b.writeUInt32LE(fam, SA.sk + SK.family);
  b.writeUInt32LE(a.protocol, SA.sk + SK.protocol);
  if (sk.srcIp4) ip4(sk.srcIp4).copy(b, SA.sk + SK.srcIp4);
  b.writeUInt32LE(sk.srcPort ?? 0, SA.sk + SK.srcPort);
  b.writeUInt16BE(sk.dstPort ?? 0, SA.sk + SK.dstPort);
  if (sk.dstIp4) ip4(sk.dstIp4).copy(b, SA.sk + SK.dstIp4);
  b.writeUInt32LE(sk.state ?? 0, SA.sk + SK.state);
  return b;
}

/** The destination a sock_addr context holds (after the call): address and port as the application sees them. */
export function sockAddrDest(b: Buffer): { ip4: string; ip6: Buffer; port: number; portHigh: number } {
  return {
    ip4: ip4str(b.subarray(SA.userIp4)),
    ip6: Buffer.from(b.subarray(SA.userIp6, SA.userIp6 + 16)),
    port: b.readUInt16BE(SA.userPort),
    portHigh: b.readUInt16LE(SA.userPort + 2), // stays 0: a port is 16 bits
  };
}

/** A socket's 4-tuple as sock_ops and sk_msg show it (local first). */
export interface Tuple {
  family?: number;
  /** IPv4 addresses (AF_INET), or for AF_INET6 the 16 bytes of each side */
  local: string | Buffer;
  remote: string | Buffer;
  localPort: number;
  remotePort: number;
}

/**
 * The address fields shared by struct bpf_sock_ops and struct sk_msg_md, from
 * `base` (family): family, remote_ip4, local_ip4, remote_ip6, local_ip6,
 * remote_port, local_port. remote_port as the kernel loads it for these
 * programs: the be16 port in the upper half of the u32 (its bytes at +2);
 * local_port in host order.
 */
function writeTuple(b: Buffer, base: number, t: Tuple): void {
  const fam = t.family ?? (typeof t.local === 'string' ? AF_INET : AF_INET6);
  b.writeUInt32LE(fam, base);
  if (typeof t.remote === 'string') ip4(t.remote).copy(b, base + 4);
  else t.remote.copy(b, base + 12);
  if (typeof t.local === 'string') ip4(t.local).copy(b, base + 8);
  else t.local.copy(b, base + 28);
  b.writeUInt16BE(t.remotePort, base + 44 + 2);
  b.writeUInt32LE(t.localPort, base + 48);
}

/** sock_ops ops and flags (uapi/linux/bpf.h). */
export const SOCK_OPS = { ACTIVE_ESTABLISHED_CB: 4, PASSIVE_ESTABLISHED_CB: 5, STATE_CB: 10, RTO_CB: 8 } as const;
export const SOCK_OPS_STATE_CB_FLAG = 4;
export const TCP_STATE = { ESTABLISHED: 1, CLOSE: 7, FIN_WAIT1: 4 } as const;

/** struct bpf_sock_ops: op, args[1] (STATE_CB: the new state), the tuple, bpf_sock_ops_cb_flags. */
export function sockOps(op: number, t: Tuple, opts: { newState?: number; cbFlags?: number; noSk?: boolean } = {}): Buffer {
  const b = Buffer.alloc(CTX_MAX);
  b.writeUInt32LE(op, 0);
  b.writeUInt32LE(opts.newState ?? 0, 8);
  writeTuple(b, 20, t);
  b.writeUInt32LE(opts.cbFlags ?? 0, 84);
  // sk (184): a full socket is there; the mocked socket storage never dereferences it
  if (!opts.noSk) b.writeBigUInt64LE(1n, 184);
  return b;
}

/** struct sk_msg_md: the tuple from family (16), size (68). */
export function skMsg(t: Tuple, size: number): Buffer {
  const b = Buffer.alloc(CTX_MAX);
  writeTuple(b, 16, t);
  b.writeUInt32LE(size, 68);
  return b;
}
