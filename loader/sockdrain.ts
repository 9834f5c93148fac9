// Taking sockets out of pw_sock without losing a byte. Deleting a socket
// whose psock still queues redirected data frees that data, so the drain
// marks both directions of a connection passthrough (pw_flows), waits for
// sendmsg() calls already past the check, and deletes each socket only once
// the drain iterator (bpf/iter/pw_sock_iter.c) says its queue is empty.
import fs from 'node:fs';
import { decode, encode, type StructValue } from '../abi/codec.js';
import { FLOW_FLAGS, SOCK_DRAIN, layoutOf, mapDef } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import { log } from './log.js';
import type { Maps } from './maps.js';
import type { Pins } from './pins.js';

/** "sip:sport>dip:dport" of a pw_sock key (local side first). */
export function sockKeyString(k: StructValue): string {
  return `${String(k.sip)}:${Number(k.sport)}>${String(k.dip)}:${Number(k.dport)}`;
}

/** The peer socket's key: the same connection seen from the other end. */
export function reverseSockKey(k: StructValue): StructValue {
  return { sip: k.dip!, dip: k.sip!, sport: k.dport!, dport: k.sport! };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Grace period after marking passthrough: sendmsg() calls already past the check finish. */
const GRACE_MS = 20;

export class SocketDrain {
  constructor(
    private readonly pins: Pins,
    private readonly maps: Maps,
  ) {}

  /** Connections with a direction on TCP (no peer at the first message, or marked) leave pw_sock, drained. */
  async drainPassthrough(): Promise<number> {
    if (!this.pins.hasMap('pw_flows')) return 0;
    const flows = await this.maps.dump('pw_flows');
    const pass = new Set(flows.filter((e) => Number(e.value.flags) & FLOW_FLAGS.PASSTHROUGH).map((e) => sockKeyString(e.key)));
    if (pass.size === 0) return 0;
    return (await this.drain((k) => pass.has(sockKeyString(k)), 1000)).removed;
  }

  /** Runs the drain iterator: for each socket in pw_sock, whether redirected bytes still wait unread. */
  async pending(): Promise<Map<string, boolean>> {
    const pin = this.pins.iter('pw_sock');
    const out = new Map<string, boolean>();
    if (!fs.existsSync(pin)) return out;
    const buf = fs.readFileSync(pin);
    const size = layoutOf(SOCK_DRAIN).size;
    if (buf.length % size !== 0) throw new Error(`drain iterator: ${buf.length} bytes is not a whole number of ${size}-byte records`);
    for (let off = 0; off < buf.length; off += size) {
      const r = decode(SOCK_DRAIN, buf.subarray(off, off + size));
      out.set(sockKeyString(r), Number(r.pending) !== 0);
    }
    return out;
  }

  /**
   * Takes the selected sockets (and their peers) out of pw_sock without
   * losing a byte. Connections still holding unread data at the deadline stay
   * (passthrough) and are returned as `stuck`; a later call finishes them.
   */
  async drain(select: (k: StructValue) => boolean, timeoutMs = 5000): Promise<{ removed: number; stuck: string[] }> {
    const keyDef = mapDef('pw_sock').key;
    const present = new Map((await this.maps.dump('pw_sock')).map((e) => [sockKeyString(e.key), e.key]));
    const chosen = new Map<string, StructValue>();
    for (const [s, k] of present) {
      if (!select(k)) continue;
      chosen.set(s, k);
      const r = reverseSockKey(k);
      if (present.has(sockKeyString(r))) chosen.set(sockKeyString(r), r);
    }
    if (chosen.size === 0) return { removed: 0, stuck: [] };
    const passthrough = [...chosen.values()].map((k) => ({ key: k, value: { flags: FLOW_FLAGS.PASSTHROUGH, bytes: 0n } }));
    await this.maps.write('pw_flows', passthrough, []);
    await sleep(GRACE_MS);
    const deadline = Date.now() + timeoutMs;
    const pin = this.pins.map('pw_sock');
    let removed = 0;
    for (;;) {
      const pending = await this.pending();
      const ready = [...chosen].filter(([s]) => pending.get(s) === false);
      for (const [s] of [...chosen]) if (!pending.has(s)) chosen.delete(s); // closed meanwhile
      if (ready.length) {
        try {
          await bpftool.batch(ready.map(([, k]) => bpftool.deleteLine(pin, encode(keyDef, k))));
        } catch {
          // a socket closed between the iterator and the delete: delete the rest one by one
          for (const [, k] of ready) await bpftool.batch([bpftool.deleteLine(pin, encode(keyDef, k))]).catch(() => undefined);
        }
        for (const [s] of ready) chosen.delete(s);
        removed += ready.length;
      }
      if (chosen.size === 0 || Date.now() > deadline) break;
      await sleep(50);
    }
    if (chosen.size)
      log.warn({ sockets: [...chosen.keys()] }, 'sockets still hold unread redirected data; left in pw_sock (passthrough) for now');
    return { removed, stuck: [...chosen.keys()] };
  }
}
