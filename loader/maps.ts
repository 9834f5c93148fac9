// Reading and writing pinned maps, decoded and encoded with the schema's
// codecs (abi/). Writes go through one `bpftool batch` per call.
import fs from 'node:fs';
import { decode, encode, type StructValue } from '../abi/codec.js';
import { MAPS, layoutOf, mapDef } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import type { Pins } from './pins.js';

export interface Entry {
  key: StructValue;
  value: StructValue;
}

export interface PerCpuEntry {
  key: StructValue;
  values: StructValue[];
}

/** One write of Maps.batch(): an update when `value` is given, else a delete. */
export interface MapOp {
  map: string;
  key: StructValue;
  value?: StructValue;
}

export interface Counter {
  packets: bigint;
  bytes: bigint;
}

const bytes = (hex: string[]): Buffer => Buffer.from(hex.map((b) => parseInt(b, 16)));

/** The maps whose fill the agent exports (podwarp_map_entries): the LRU maps, where the kernel evicts when full. */
export const COUNTED_MAPS = MAPS.filter((m) => m.type === 'lru_hash').map((m) => m.name);
/** bpf/iter/pw_count_iter.c: pinned on each of COUNTED_MAPS as iter/<map>_count. */
export const COUNT_ITER = 'pw_count_iter';
export const countIterName = (map: string): string => `${map}_count`;

export class Maps {
  private info = new Map<string, bpftool.MapInfo>();
  private progIds = new Map<string, { stamp: string; id: number }>();

  constructor(readonly pins: Pins) {}

  /** Decoded entries of a (non per-CPU) map. */
  async dump(name: string): Promise<Entry[]> {
    const m = mapDef(name);
    const raw = await bpftool.mapDump(this.pins.map(name));
    return raw.map((e) => ({ key: decode(m.key, bytes(e.key)), value: decode(m.value, bytes(e.value ?? [])) }));
  }

  async dumpPerCpu(name: string): Promise<PerCpuEntry[]> {
    const m = mapDef(name);
    const raw = await bpftool.mapDump(this.pins.map(name));
    return raw.map((e) => ({
      key: decode(m.key, bytes(e.key)),
      values: (e.values ?? []).map((v) => decode(m.value, bytes(v.value))),
    }));
  }

  /**
   * Writes to several maps in one bpftool batch, in the given order (a
   * reader relying on ordering, as the service maps do, gets it): an op with
   * a value updates, one without deletes. Accepts a generator, so a large
   * plan is encoded as it is written.
   */
  async batch(ops: Iterable<MapOp>): Promise<void> {
    await bpftool.batch(batchLines(this.pins, ops));
  }

  /** Entries as raw bytes (a sockhash's value is the socket cookie, which the schema does not describe). */
  async dumpRaw(name: string): Promise<{ key: Buffer; value: Buffer }[]> {
    return (await bpftool.mapDump(this.pins.map(name))).map((e) => ({ key: bytes(e.key), value: bytes(e.value ?? []) }));
  }

  /** How many entries a map holds now (an array: its size; socket storage: undefined, the kernel lists it per socket only). */
  async count(name: string): Promise<number | undefined> {
    const m = mapDef(name);
    if (m.type === 'sk_storage') return undefined;
    return m.type.includes('array') ? (await this.show(name)).max_entries : (await bpftool.mapDump(this.pins.map(name))).length;
  }

  /**
   * How many entries a map holds, by its counting iterator (one read, one
   * byte per entry); undefined where it is not pinned (a kernel that refused
   * the map-dump part, or not a counted map).
   */
  countByIter(name: string): number | undefined {
    const pin = this.pins.iter(countIterName(name));
    return fs.existsSync(pin) ? fs.readFileSync(pin).length : undefined;
  }

  /** `bpftool prog show` of a pinned program: id, type, tag. */
  async progInfo(name: string): Promise<bpftool.ProgInfo> {
    return bpftool.progShow(this.pins.prog(name));
  }

  /** Upserts then deletes, in one bpftool batch. */
  async write(name: string, upserts: Entry[], deletes: StructValue[]): Promise<void> {
    const m = mapDef(name);
    const pin = this.pins.map(name);
    await bpftool.batch([
      ...upserts.map((e) => bpftool.updateLine(pin, encode(m.key, e.key), encode(m.value, e.value))),
      ...deletes.map((k) => bpftool.deleteLine(pin, encode(m.key, k))),
    ]);
  }

  /**
   * Runs a map-dump iterator (reads its pin) and decodes its records, laid out
   * as the map's key then value (bpf/iter/pw_map_dump.h); undefined when it is
   * not pinned (pins of an older load).
   */
  readIter(name: string): Entry[] | undefined {
    const pin = this.pins.iter(name);
    if (!fs.existsSync(pin)) return undefined;
    const m = mapDef(name);
    const ks = layoutOf(m.key).size;
    const rec = ks + layoutOf(m.value).size;
    const buf = fs.readFileSync(pin);
    if (buf.length % rec !== 0) throw new Error(`iterator ${name}: ${buf.length} bytes is not a whole number of ${rec}-byte records`);
    const out: Entry[] = [];
    for (let off = 0; off < buf.length; off += rec) {
      out.push({ key: decode(m.key, buf.subarray(off, off + ks)), value: decode(m.value, buf.subarray(off + ks, off + rec)) });
    }
    return out;
  }

  /** The iterator if pinned, else `bpftool map dump`. */
  async readAll(name: string): Promise<Entry[]> {
    return this.readIter(name) ?? (await this.dump(name));
  }

  /** `bpftool map show` of a pinned map, cached (ids and sizes do not change while pinned). */
  async show(name: string): Promise<bpftool.MapInfo> {
    let i = this.info.get(name);
    if (!i) {
      i = await bpftool.mapShow(this.pins.map(name));
      this.info.set(name, i);
    }
    return i;
  }

  async mapId(name: string): Promise<number> {
    return (await bpftool.mapShow(this.pins.map(name))).id;
  }

  /**
   * A pinned program's id. Remembered per pin file (inode and ctime): a
   * reload replaces the pin by a rename, which the next call sees. A pass
   * asks it per pod and hook; one `bpftool prog show` each cost ~70 runs a
   * pass (seconds per pass on an emulated kernel).
   */
  async progId(name: string): Promise<number> {
    const pin = this.pins.prog(name);
    let stamp: string | undefined;
    try {
      const st = fs.statSync(pin, { bigint: true });
      stamp = `${st.ino}:${st.ctimeNs}`;
    } catch {
      // no pin: bpftool says so below
    }
    const hit = this.progIds.get(pin);
    if (stamp !== undefined && hit?.stamp === stamp) return hit.id;
    const id = (await bpftool.progShow(pin)).id;
    if (stamp !== undefined) this.progIds.set(pin, { stamp, id });
    return id;
  }

  /** A per-CPU counter map summed over CPUs, by its (one-field) key. */
  async counters(name = 'pw_stats'): Promise<Map<number, Counter>> {
    const out = new Map<number, Counter>();
    if (!this.pins.hasMap(name)) return out;
    for (const e of await this.dumpPerCpu(name)) {
      let packets = 0n;
      let bytes = 0n;
      for (const v of e.values) {
        packets += BigInt(v.packets as bigint);
        bytes += BigInt(v.bytes as bigint);
      }
      out.set(Number(Object.values(e.key)[0]), { packets, bytes });
    }
    return out;
  }
}

/** The bpftool batch lines of map writes, encoded with the schema's codecs as they are consumed. */
function* batchLines(pins: Pins, ops: Iterable<MapOp>): Generator<bpftool.BatchLine> {
  for (const op of ops) {
    const m = mapDef(op.map);
    const pin = pins.map(op.map);
    yield op.value === undefined
      ? bpftool.deleteLine(pin, encode(m.key, op.key))
      : bpftool.updateLine(pin, encode(m.key, op.key), encode(m.value, op.value));
  }
}
