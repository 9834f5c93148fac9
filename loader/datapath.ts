// The datapath podwarp owns on a node: pinned maps and programs under
// <bpffs>/<pinName>/, tc attachments on pod veths, and the pw_ifaces ledger
// that records which of those attachments (and qdiscs) podwarp made.
//
//   <bpffs>/podwarp/maps/<map>     one pin per map of src/layout/schema.ts
//   <bpffs>/podwarp/progs/<prog>   one pin per program
import fs from 'node:fs';
import path from 'node:path';
import { decode, encode, type StructValue } from '../src/layout/codec.js';
import { IFACE_FLAGS, MAPS, layoutOf, mapDef, type MapDef } from '../src/layout/schema.js';
import { log } from '../src/log.js';
import * as bpftool from './bpftool.js';
import { ToolError } from './errors.js';
import * as ipr from './ip.js';
import { ensureBpffs } from './mounts.js';
import * as tc from './tc.js';

/** Our cls_bpf filter identity on every device: prio 49, handle 0x7077 ("pw"). */
export const TC_PRIO = 49;
export const TC_HANDLE = 0x7077;
export const TC_PROG = 'pw_tc_egress';

export interface Entry {
  key: StructValue;
  value: StructValue;
}

export interface PerCpuEntry {
  key: StructValue;
  values: StructValue[];
}

export interface IfaceRecord {
  ifindex: number;
  name: string;
  flags: number;
}

export interface AttachmentStatus extends IfaceRecord {
  /** Device still exists with the recorded name. */
  present: boolean;
  /** Our filter is on the device. */
  attached: boolean;
  progId?: number;
  progName?: string;
}

export class Datapath {
  readonly mapsDir: string;
  readonly progsDir: string;

  private constructor(readonly pinRoot: string) {
    this.mapsDir = path.join(pinRoot, 'maps');
    this.progsDir = path.join(pinRoot, 'progs');
  }

  /** pinName: directory under the bpffs mount (default "podwarp"; tests use their own). */
  static async open(pinName = process.env.PODWARP_PIN_NAME ?? 'podwarp'): Promise<Datapath> {
    if (!/^[A-Za-z0-9_-]+$/.test(pinName)) throw new Error(`invalid pin directory name "${pinName}" (bpffs forbids dots; use letters, digits, _ and -)`);
    return new Datapath(path.join(await ensureBpffs(), pinName));
  }

  mapPin(name: string): string {
    return path.join(this.mapsDir, name);
  }

  progPin(name: string): string {
    return path.join(this.progsDir, name);
  }

  /** Every map and the tc program are pinned. */
  isLoaded(): boolean {
    return MAPS.every((m) => fs.existsSync(this.mapPin(m.name))) && fs.existsSync(this.progPin(TC_PROG));
  }

  /**
   * Loads the objects. Maps already pinned are reused (their contents and ids
   * survive); missing maps are created and pinned. New program pins replace
   * old ones, and every recorded attachment is switched to the new program
   * with an atomic `tc filter replace`: a restart never drops traffic.
   */
  async load(objects: string[]): Promise<void> {
    fs.mkdirSync(this.mapsDir, { recursive: true });
    fs.mkdirSync(this.progsDir, { recursive: true });
    for (const obj of objects) {
      const stage = path.join(this.pinRoot, `stage_${process.pid}_${Date.now()}`);
      fs.mkdirSync(stage);
      try {
        const reuse = MAPS.filter((m) => fs.existsSync(this.mapPin(m.name))).map((m) => ({ name: m.name, pin: this.mapPin(m.name) }));
        await this.checkCompatible(reuse.map((r) => mapDef(r.name)));
        await bpftool.progLoadAll(obj, path.join(stage, 'progs'), reuse, path.join(stage, 'maps'));
        for (const m of fs.readdirSync(path.join(stage, 'maps'))) {
          if (!fs.existsSync(this.mapPin(m))) fs.renameSync(path.join(stage, 'maps', m), this.mapPin(m));
        }
        for (const p of fs.readdirSync(path.join(stage, 'progs'))) fs.renameSync(path.join(stage, 'progs', p), this.progPin(p));
      } finally {
        fs.rmSync(stage, { recursive: true, force: true });
      }
    }
    for (const rec of await this.ifaces()) {
      const l = await ipr.link(rec.name);
      if (l && l.ifindex === rec.ifindex) await tc.replaceBpfFilter(rec.name, 'ingress', TC_PRIO, TC_HANDLE, this.progPin(TC_PROG));
    }
    log.info({ pinRoot: this.pinRoot, objects: objects.map((o) => path.basename(o)) }, 'datapath loaded');
  }

  /** A pinned map whose layout differs from the schema cannot be reused: say so clearly. */
  private async checkCompatible(defs: MapDef[]): Promise<void> {
    for (const m of defs) {
      const info = await bpftool.mapShow(this.mapPin(m.name));
      const want = { key: layoutOf(m.key).size, value: layoutOf(m.value).size };
      if (info.bytes_key !== want.key || info.bytes_value !== want.value) {
        throw new ToolError(
          `pinned map ${m.name} has key/value ${info.bytes_key}/${info.bytes_value} bytes, schema says ${want.key}/${want.value}; run \`podwarp uninstall\` to drop the old datapath`,
          ['bpftool', 'map', 'show', 'pinned', this.mapPin(m.name)],
          0,
          '',
        );
      }
    }
  }

  async mapId(name: string): Promise<number> {
    return (await bpftool.mapShow(this.mapPin(name))).id;
  }

  async progId(name: string): Promise<number> {
    return (await bpftool.progShow(this.progPin(name))).id;
  }

  /** Decoded entries of a (non per-CPU) map. */
  async dump(name: string): Promise<Entry[]> {
    const m = mapDef(name);
    const raw = await bpftool.mapDump(this.mapPin(name));
    return raw.map((e) => ({
      key: decode(m.key, Buffer.from(e.key.map((b) => parseInt(b, 16)))),
      value: decode(m.value, Buffer.from((e.value ?? []).map((b) => parseInt(b, 16)))),
    }));
  }

  async dumpPerCpu(name: string): Promise<PerCpuEntry[]> {
    const m = mapDef(name);
    const raw = await bpftool.mapDump(this.mapPin(name));
    return raw.map((e) => ({
      key: decode(m.key, Buffer.from(e.key.map((b) => parseInt(b, 16)))),
      values: (e.values ?? []).map((v) => decode(m.value, Buffer.from(v.value.map((b) => parseInt(b, 16))))),
    }));
  }

  /** Upserts then deletes, in one bpftool batch. */
  async writeMap(name: string, upserts: Entry[], deletes: StructValue[]): Promise<void> {
    const m = mapDef(name);
    const pin = this.mapPin(name);
    await bpftool.batch([
      ...upserts.map((e) => bpftool.updateLine(pin, encode(m.key, e.key), encode(m.value, e.value))),
      ...deletes.map((k) => bpftool.deleteLine(pin, encode(m.key, k))),
    ]);
  }

  async ifaces(): Promise<IfaceRecord[]> {
    if (!fs.existsSync(this.mapPin('pw_ifaces'))) return [];
    return (await this.dump('pw_ifaces')).map((e) => ({
      ifindex: Number(e.key.ifindex),
      name: String(e.value.name),
      flags: Number(e.value.flags),
    }));
  }

  /** Attaches the tc program to ingress of `dev` (idempotent) and records it. */
  async attach(dev: string): Promise<void> {
    const l = await ipr.link(dev);
    if (!l) throw new Error(`attach: no interface ${dev}`);
    const known = (await this.ifaces()).find((r) => r.ifindex === l.ifindex && r.name === dev);
    const created = await tc.ensureClsact(dev);
    const flags = (known?.flags ?? 0) | (created ? IFACE_FLAGS.QDISC_OWNED : 0);
    // record before attaching: a crash in between leaves a ledger entry, never an untracked filter
    await this.writeMap('pw_ifaces', [{ key: { ifindex: l.ifindex }, value: { flags, name: dev } }], []);
    await tc.replaceBpfFilter(dev, 'ingress', TC_PRIO, TC_HANDLE, this.progPin(TC_PROG));
  }

  /** Removes our filter (and the qdisc if we created it and it is now empty), and the ledger entry. */
  async detach(rec: IfaceRecord): Promise<void> {
    const l = await ipr.link(rec.name);
    if (l && l.ifindex === rec.ifindex) {
      if (await tc.hasClsact(rec.name)) {
        if (tc.findFilter(await tc.listFilters(rec.name, 'ingress'), TC_PRIO, TC_HANDLE)) {
          await tc.deleteBpfFilter(rec.name, 'ingress', TC_PRIO, TC_HANDLE);
        }
        if (rec.flags & IFACE_FLAGS.QDISC_OWNED) {
          const rest = [...(await tc.listFilters(rec.name, 'ingress')), ...(await tc.listFilters(rec.name, 'egress'))];
          if (rest.length === 0) await tc.deleteClsact(rec.name);
          else log.info({ dev: rec.name }, 'clsact qdisc kept: other filters were added to it');
        }
      }
    }
    await this.writeMap('pw_ifaces', [], [{ ifindex: rec.ifindex }]);
  }

  /** Ledger entries checked against the live devices and filters. */
  async attachments(): Promise<AttachmentStatus[]> {
    const recs = await this.ifaces();
    const live = new Map((await ipr.links()).map((l) => [l.ifindex, l]));
    const out: AttachmentStatus[] = [];
    for (const r of recs) {
      const l = live.get(r.ifindex);
      const present = !!l && l.ifname === r.name;
      let f: tc.TcFilter | undefined;
      if (present) f = tc.findFilter(await tc.listFilters(r.name, 'ingress'), TC_PRIO, TC_HANDLE);
      out.push({ ...r, present, attached: !!f, progId: f?.options?.prog?.id, progName: f?.options?.prog?.name });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Sum of a per-CPU counter map by key. */
  async counters(name = 'pw_stats'): Promise<Map<number, { packets: bigint; bytes: bigint }>> {
    const out = new Map<number, { packets: bigint; bytes: bigint }>();
    if (!fs.existsSync(this.mapPin(name))) return out;
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

  /**
   * Removes everything this instance created: its filters, the qdiscs it
   * made, every pin. Idempotent. Also sweeps devices for filters at our
   * prio/handle that run one of our programs but are missing from the ledger.
   */
  async uninstall(): Promise<{ detached: string[]; sweptFilters: string[]; removedPins: boolean }> {
    const detached: string[] = [];
    const sweptFilters: string[] = [];
    const ourProgIds = new Set<number>();
    if (fs.existsSync(this.progsDir)) {
      for (const p of fs.readdirSync(this.progsDir)) ourProgIds.add(await this.progId(p));
    }
    for (const r of await this.ifaces()) {
      await this.detach(r);
      detached.push(r.name);
    }
    if (ourProgIds.size > 0) {
      for (const l of await ipr.links()) {
        if (!(await tc.hasClsact(l.ifname).catch(() => false))) continue;
        const f = tc.findFilter(await tc.listFilters(l.ifname, 'ingress'), TC_PRIO, TC_HANDLE);
        if (f?.options?.prog && ourProgIds.has(f.options.prog.id)) {
          await tc.deleteBpfFilter(l.ifname, 'ingress', TC_PRIO, TC_HANDLE);
          sweptFilters.push(l.ifname);
        }
      }
    }
    const removedPins = fs.existsSync(this.pinRoot);
    fs.rmSync(this.pinRoot, { recursive: true, force: true });
    return { detached, sweptFilters, removedPins };
  }
}
