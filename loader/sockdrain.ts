// Taking sockets out of pw_sock without losing a byte. Deleting a socket
// whose psock still queues redirected data frees that data, so the drain
// marks both directions of a connection passthrough (pw_flows), waits for
// sendmsg() calls already past the check, and deletes each socket only once
// the drain iterator (bpf/iter/pw_sock_iter.c) says its queue is empty.
//
// Without the iterator (the kernel refused it: loader/parts.ts "drain") no
// one can tell an empty queue from a full one, so nothing is deleted: a
// chosen socket stays in pw_sock, marked passthrough (its peer's sends take
// TCP, the queued bytes are read first, in order), until its application
// closes it and the kernel drops it from the sockhash. The cost: those
// connections keep the tcp_bpf receive path until they close. Uninstall,
// which drops the sockhash and with it every queue, waits for them to close.
import fs from 'node:fs';
import { decode, encode, type StructValue } from '../abi/codec.js';
import { FLOW_FLAGS, SOCK_DRAIN, layoutOf, mapDef } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import { log } from '../host/log.js';
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
    // without the iterator a passthrough socket stays until it closes: nothing to do
    if (!this.pins.hasMap('pw_flows') || !this.canSeeQueues()) return 0;
    const flows = await this.maps.dump('pw_flows');
    const pass = new Set(flows.filter((e) => Number(e.value.flags) & FLOW_FLAGS.PASSTHROUGH).map((e) => sockKeyString(e.key)));
    if (pass.size === 0) return 0;
    return (await this.drain((k) => pass.has(sockKeyString(k)), 1000)).removed;
  }

  /** Whether the drain iterator is pinned (the kernel allowed it). */
  canSeeQueues(): boolean {
    return fs.existsSync(this.pins.iter('pw_sock'));
  }

  /** Runs the drain iterator: for each socket in pw_sock, whether redirected bytes still wait unread; undefined without it. */
  async pending(): Promise<Map<string, boolean> | undefined> {
    const pin = this.pins.iter('pw_sock');
    const out = new Map<string, boolean>();
    if (!fs.existsSync(pin)) return undefined;
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
   * Without the drain iterator (`blind`) no socket is deleted: the chosen
   * ones are marked passthrough and stay until they close; with `waitClose`
   * the call waits up to the deadline for them to close (uninstall), else it
   * returns at once with the open ones as `stuck`.
   */
  async drain(
    select: (k: StructValue) => boolean,
    timeoutMs = 5000,
    opts: { waitClose?: boolean } = {},
  ): Promise<{ removed: number; stuck: string[]; blind: boolean }> {
    const keyDef = mapDef('pw_sock').key;
    const present = await this.present();
    const chosen = new Map<string, StructValue>();
    for (const [s, k] of present) {
      if (!select(k)) continue;
      chosen.set(s, k);
      const r = reverseSockKey(k);
      if (present.has(sockKeyString(r))) chosen.set(sockKeyString(r), r);
    }
    const blind = !this.canSeeQueues();
    if (chosen.size === 0) return { removed: 0, stuck: [], blind };
    const passthrough = [...chosen.values()].map((k) => ({ key: k, value: { flags: FLOW_FLAGS.PASSTHROUGH, bytes: 0n } }));
    await this.maps.write('pw_flows', passthrough, []);
    await sleep(GRACE_MS);
    const deadline = Date.now() + timeoutMs;
    const pin = this.pins.map('pw_sock');
    let removed = 0;
    for (;;) {
      const pending = blind ? undefined : await this.pending();
      const open = pending ?? (await this.present());
      for (const [s] of [...chosen]) if (!open.has(s)) chosen.delete(s); // closed meanwhile
      const ready = pending ? [...chosen].filter(([s]) => pending.get(s) === false) : [];
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
      if (chosen.size === 0 || Date.now() > deadline || (blind && !opts.waitClose)) break;
      await sleep(50);
    }
    if (chosen.size && blind && !opts.waitClose)
      log.info(
        { sockets: chosen.size },
        'sockets on passthrough stay in pw_sock until they close (the kernel refused the drain iterator: their queues cannot be seen)',
      );
    else if (chosen.size)
      log.warn({ sockets: [...chosen.keys()] }, 'sockets still hold unread redirected data; left in pw_sock (passthrough) for now');
    return { removed, stuck: [...chosen.keys()], blind };
  }

  /** The sockets in pw_sock now, by key string. */
  private async present(): Promise<Map<string, StructValue>> {
    return new Map((await this.maps.dump('pw_sock')).map((e) => [sockKeyString(e.key), e.key]));
  }
}
