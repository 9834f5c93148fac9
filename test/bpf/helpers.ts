// BPF unit tests: the programs run on crafted inputs with BPF_PROG_TEST_RUN
// (loader/bpftool.ts progRun), against a scratch datapath of their own (a pin
// directory unique to the run). No netns, no device, no attachment.
import crypto from 'node:crypto';
import path from 'node:path';
import { STAT_GROUPS } from '../../abi/schema.js';
import { build } from '../../loader/build.js';
import { Datapath } from '../../loader/datapath.js';
import * as bpftool from '../../loader/bpftool.js';
import { writeConfig } from '../../src/pods/apply.js';
import type { SockConfig } from '../../src/pods/desired.js';

// ---- the scratch datapath ----

/** Only the objects the tests run: loading all of them would cost seconds for nothing. */
const OBJECTS = ['pw_tc_egress.o', 'pw_sk_msg.o', 'pw_sockops.o'];

/**
 * Loads the programs into a fresh pin directory (root only: a file checks
 * bpfSkipReason() first and opens this in beforeAll, so that collecting the
 * tests, e.g. `vitest list`, loads nothing). A build or load error fails the file:
 * a verifier regression must never turn these tests into skips. Every
 * program here is core (tc, sk_msg, sock_ops); one the kernel refuses (or
 * PODWARP_TEST_REFUSE) fails with the kernel's reason. The caller uninstalls
 * in afterAll.
 */
export async function openScratch(): Promise<Datapath> {
  const dp = await Datapath.open(`pwbpf_${crypto.randomBytes(3).toString('hex')}`);
  try {
    const objs = (await build()).filter((o) => OBJECTS.includes(path.basename(o)));
    await dp.load(objs);
    const off = dp.parts.filter((p) => p.state === 'refused' && (p.part === 'sockmap' || p.part === 'socket-lb'));
    if (off.length) throw new Error(`the programs under test were refused: ${off.map((p) => `${p.part} (${p.reason})`).join('; ')}`);
    return dp;
  } catch (e) {
    await dp.uninstall().catch(() => undefined);
    throw e;
  }
}

// ---- map state ----

/** pw_config as a test wants it: the agent's own writer, every field zero unless given. */
export function setConfig(dp: Datapath, c: Partial<SockConfig>): Promise<void> {
  return writeConfig(dp, { flags: 0, proxyUid: 0, proxyGid: 0, proxyPort: 0, bulkBytes: 0, excludedPorts: [], svcDropped: 0, ...c });
}

/** Empties maps (one batch each). */
export async function clearMaps(dp: Datapath, names: string[]): Promise<void> {
  for (const name of names) {
    const all = await dp.maps.dump(name);
    if (all.length)
      await dp.maps.write(
        name,
        [],
        all.map((e) => e.key),
      );
  }
}

// ---- counters ----

/** Packets and bytes of every reason of one program, by reason name. */
export async function reasonCounters(dp: Datapath, prog = 'pw_tc_egress'): Promise<Record<string, { packets: bigint; bytes: bigint }>> {
  const g = STAT_GROUPS.find((x) => x.prog === prog)!;
  const all = await dp.maps.counters();
  return Object.fromEntries(g.reasons.map((r, i) => [r, all.get(g.base + i) ?? { packets: 0n, bytes: 0n }]));
}

/** Growth of each reason's packet count between two readings (only the non-zero ones). */
export function moved(a: Record<string, { packets: bigint }>, b: Record<string, { packets: bigint }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of Object.keys(b)) {
    const d = Number(b[r]!.packets - (a[r]?.packets ?? 0n));
    if (d) out[r] = d;
  }
  return out;
}

// ---- crafted frames ----

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const TC_ACT_OK = 0;
export const TC_ACT_REDIRECT = 7;

export function mac(s: string): Buffer {
  return Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
}

function ip4(s: string): Buffer {
  return Buffer.from(s.split('.').map(Number));
}

/** RFC 1071 Internet checksum of `b` (even length), as the 16-bit value to store big-endian. */
export function inetChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * The IPv4 header's checksum checked two ways: a receiver's check (the
 * one's-complement sum over the header, checksum included, is all ones) and
 * equality with the checksum computed afresh over the header. The second is
 * stricter: an incremental update that skips the end-around carry leaves
 * 0xffff where a fresh computation gives 0x0000, which a receiver accepts.
 */
export function ipv4Checksum(hdr: Buffer): { receiverOk: boolean; stored: number; recomputed: number } {
  const zeroed = Buffer.from(hdr);
  zeroed.writeUInt16BE(0, 10);
  return { receiverOk: inetChecksum(hdr) === 0, stored: hdr.readUInt16BE(10), recomputed: inetChecksum(zeroed) };
}

export interface Ipv4 {
  src: string;
  dst: string;
  proto: number;
  ttl?: number;
  id?: number;
  /** flags + fragment offset word (0x4000: DF). */
  frag?: number;
  /** Header words (5: no options). */
  ihl?: number;
  version?: number;
}

/** IPv4 header (+ options of zeros for ihl > 5) with its checksum, followed by `payload`. */
export function ipv4(h: Ipv4, payload: Buffer): Buffer {
  const ihl = h.ihl ?? 5;
  const hdr = Buffer.alloc(Math.max(ihl, 5) * 4);
  hdr[0] = ((h.version ?? 4) << 4) | ihl;
  hdr.writeUInt16BE(hdr.length + payload.length, 2);
  hdr.writeUInt16BE(h.id ?? 0x1234, 4);
  hdr.writeUInt16BE(h.frag ?? 0x4000, 6);
  hdr[8] = h.ttl ?? 64;
  hdr[9] = h.proto;
  ip4(h.src).copy(hdr, 12);
  ip4(h.dst).copy(hdr, 16);
  hdr.writeUInt16BE(inetChecksum(hdr), 10);
  return Buffer.concat([hdr, payload]);
}

export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/** TCP header (no options; its checksum is not the program's business and left 0) + payload. */
export function tcp(sport: number, dport: number, flags: number, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(1000, 4);
  h.writeUInt32BE(flags & TCP.ACK ? 2000 : 0, 8);
  h[12] = 5 << 4;
  h[13] = flags;
  h.writeUInt16BE(65535, 14);
  return Buffer.concat([h, payload]);
}

export function udp(sport: number, dport: number, payload = Buffer.from('podwarp')): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

export function ether(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

/**
 * A `struct __sk_buff` for ctx_in. BPF_PROG_TEST_RUN of an skb program takes
 * ingress_ifindex as is (skb->skb_iif; no device needed) and ifindex only
 * when a device with that index exists (default: loopback), so the ingress
 * interface the program compares with the endpoint is free to choose.
 */
export const SKB_SIZE = 192;
export const SKB_INGRESS_IFINDEX = 36;
export const SKB_IFINDEX = 40;
export function skbCtx(ingressIfindex: number): Buffer {
  const b = Buffer.alloc(SKB_SIZE);
  b.writeUInt32LE(ingressIfindex, SKB_INGRESS_IFINDEX);
  return b;
}

export async function run(dp: Datapath, prog: string, frame: Buffer, ingressIfindex: number) {
  return bpftool.progRun(dp.pins.prog(prog), frame, skbCtx(ingressIfindex));
}
