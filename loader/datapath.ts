// The datapath podwarp owns on a node: pinned maps and programs under
// <bpffs>/<pinName>/, tc attachments on pod veths, and the pw_ifaces ledger
// that records which of those attachments (and qdiscs) podwarp made.
//
//   <bpffs>/podwarp/maps/<map>     one pin per map of src/layout/schema.ts
//   <bpffs>/podwarp/progs/<prog>   one pin per program
import fs from 'node:fs';
import path from 'node:path';
import { decode, encode, type StructValue } from '../src/layout/codec.js';
import { CGROUP_HOOKS, FLOW_FLAGS, IFACE_FLAGS, MAPS, layoutOf, mapDef, type MapDef } from '../src/layout/schema.js';
import { cgroupPath as cgroupAbs } from './cgroup.js';
import { mapSizes } from '../src/build.js';
import type { SockConfig } from '../src/desired.js';
import { feKey, type ActualServices, type Frontend, type Proto, type SvcPlan } from '../src/services.js';
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
export const MSG_PROG = 'pw_sk_msg';
/** Cgroup hook → ledger bit → program. */
export const HOOK_PROGS: [bpftool.CgroupHook, number, string][] = [
  ['sock_ops', CGROUP_HOOKS.SOCK_OPS, 'pw_sockops'],
  ['connect4', CGROUP_HOOKS.CONNECT4, 'pw_proxy_conn4'],
  ['getsockopt', CGROUP_HOOKS.GETSOCKOPT, 'pw_proxy_odst'],
  ['connect4', CGROUP_HOOKS.LB, 'pw_lb_conn4'],
  ['sendmsg4', CGROUP_HOOKS.LB, 'pw_lb_send4'],
  ['recvmsg4', CGROUP_HOOKS.LB, 'pw_lb_recv4'],
  ['getpeername4', CGROUP_HOOKS.LB, 'pw_lb_peer4'],
];

export interface UninstallResult {
  detached: string[];
  sweptFilters: string[];
  removedPins: boolean;
  cgroupsDetached: string[];
  socketsRemoved: number;
}

export interface CgroupRecord {
  id: bigint;
  /** Below the cgroup2 mount. */
  path: string;
  hooks: number;
}

export interface CgroupStatus extends CgroupRecord {
  present: boolean;
  /** podwarp programs attached to the cgroup now */
  attached: string[];
  /** ledger bits whose programs are all attached now */
  liveHooks: number;
}

export function sockKeyString(k: StructValue): string {
  return `${String(k.sip)}:${Number(k.sport)}>${String(k.dip)}:${Number(k.dport)}`;
}

export function reverseSockKey(k: StructValue): StructValue {
  return { sip: k.dip!, dip: k.sip!, sport: k.dport!, dport: k.sport! };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
  readonly iterDir: string;

  private constructor(readonly pinRoot: string) {
    this.mapsDir = path.join(pinRoot, 'maps');
    this.progsDir = path.join(pinRoot, 'progs');
    this.iterDir = path.join(pinRoot, 'iter');
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
  async load(objs: string[]): Promise<void> {
    const objects = objs.filter((o) => !o.includes('/iter/'));
    const iterators = objs.filter((o) => o.includes('/iter/'));
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
          // only the schema's maps are shared; an object's own .rodata/.bss stays with its programs
          if (MAPS.some((x) => x.name === m) && !fs.existsSync(this.mapPin(m))) fs.renameSync(path.join(stage, 'maps', m), this.mapPin(m));
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
    if (fs.existsSync(this.progPin(MSG_PROG))) await bpftool.msgVerdictAttach(this.progPin(MSG_PROG), this.mapPin('pw_sock'));
    // cgroups podwarp attached to move to the new programs: attach new (multi), then detach the old
    for (const rec of await this.cgroups()) await this.syncCgroupHooks(rec, rec.hooks);
    fs.mkdirSync(this.iterDir, { recursive: true });
    for (const it of iterators) {
      const name = path.basename(it, '.o').replace(/_iter$/, '');
      const tmp = path.join(this.iterDir, `${name}_new`);
      fs.rmSync(tmp, { force: true });
      await bpftool.iterPin(it, tmp, this.mapPin(name));
      fs.renameSync(tmp, path.join(this.iterDir, name));
    }
    log.info({ pinRoot: this.pinRoot, objects: objs.map((o) => path.basename(o)) }, 'datapath loaded');
  }

  // ---- pod cgroups (socket programs) ----

  async cgroups(): Promise<CgroupRecord[]> {
    if (!fs.existsSync(this.mapPin('pw_cgroups'))) return [];
    return (await this.dump('pw_cgroups')).map((e) => ({ id: BigInt(e.key.id as bigint), path: String(e.value.path), hooks: Number(e.value.hooks) }));
  }

  /**
   * Makes exactly `hooks` of podwarp's programs attached to the pod cgroup
   * `rel` (a path below the cgroup2 mount), current versions only. Other
   * tools' programs on the cgroup are never touched (multi-attach).
   */
  async setCgroupHooks(rel: string, hooks: number): Promise<void> {
    const abs = cgroupAbs(rel);
    if (!fs.existsSync(abs)) {
      // the pod (and its attachments) are gone: forget it
      const gone = (await this.cgroups()).filter((c) => c.path === rel).map((c) => ({ id: c.id }));
      await this.writeMap('pw_cgroups', [], gone);
      if (hooks !== 0) throw new Error(`cgroup ${rel} does not exist`);
      return;
    }
    const id = BigInt(fs.statSync(abs, { bigint: true }).ino);
    const rec = { id, path: rel, hooks };
    // the ledger first: a crash in between leaves a record, never an untracked attachment
    const prev = (await this.cgroups()).find((c) => c.id === id);
    if (hooks !== 0 || prev) await this.writeMap('pw_cgroups', [{ key: { id }, value: { hooks: hooks | (prev?.hooks ?? 0), path: rel } }], []);
    await this.syncCgroupHooks(rec, hooks);
    if (hooks === 0) await this.writeMap('pw_cgroups', [], prev ? [{ id }] : []);
    else await this.writeMap('pw_cgroups', [{ key: { id }, value: { hooks, path: rel } }], []);
  }

  private async syncCgroupHooks(rec: CgroupRecord, hooks: number): Promise<void> {
    const abs = cgroupAbs(rec.path);
    if (!fs.existsSync(abs)) return; // pod gone: its attachments went with it
    const attached = await bpftool.cgroupShow(abs);
    for (const [hook, bit, prog] of HOOK_PROGS) {
      const cur = fs.existsSync(this.progPin(prog)) ? await this.progId(prog) : undefined;
      const ours = attached.filter((a) => a.attach_type === bpftool.CGROUP_ATTACH[hook].shown && a.name === prog);
      if (hooks & bit && cur !== undefined && !ours.some((a) => a.id === cur)) await bpftool.cgroupAttach(abs, hook, this.progPin(prog));
      for (const a of ours) if (!(hooks & bit) || a.id !== cur) await bpftool.cgroupDetach(abs, hook, a.id);
    }
  }

  /** Ledger entries checked against what each cgroup really has attached. */
  async cgroupAttachments(): Promise<CgroupStatus[]> {
    const out: CgroupStatus[] = [];
    for (const rec of await this.cgroups()) {
      const abs = cgroupAbs(rec.path);
      const present = fs.existsSync(abs);
      const live = present ? await bpftool.cgroupShow(abs) : [];
      const attached = HOOK_PROGS.filter(([hook, , prog]) => live.some((a) => a.name === prog && a.attach_type === bpftool.CGROUP_ATTACH[hook].shown)).map(([, , prog]) => prog);
      // a ledger bit counts as attached when every program of it is
      const live_hooks = [...new Set(HOOK_PROGS.map(([, bit]) => bit))]
        .filter((bit) => HOOK_PROGS.filter(([, b]) => b === bit).every(([, , prog]) => attached.includes(prog)))
        .reduce((a, b) => a | b, 0);
      out.push({ ...rec, present, attached, liveHooks: live_hooks });
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  // ---- services ----

  /**
   * pw_svc and pw_backends as they are. Read through the map-dump iterators
   * (bpf/iter/pw_map_dump.h: one read() per map, fixed-size records) when
   * they are pinned, else through `bpftool map dump` (pins of an older load).
   */
  async readServices(): Promise<ActualServices> {
    const have: ActualServices = { masters: new Map(), slots: new Map(), backends: new Map() };
    if (!fs.existsSync(this.mapPin('pw_svc'))) return have;
    const svcEntries = this.readIter('pw_svc') ?? (await this.dump('pw_svc'));
    for (const e of svcEntries) {
      const fe = { ip: String(e.key.ip), port: Number(e.key.port), proto: Number(e.key.proto) as Proto };
      const slot = Number(e.key.slot);
      const k = feKey(fe);
      if (slot === 0) have.masters.set(k, { fe, count: Number(e.value.count) });
      else {
        if (!have.slots.has(k)) have.slots.set(k, new Map());
        have.slots.get(k)!.set(slot, Number(e.value.backend_id));
      }
    }
    for (const e of this.readIter('pw_backends') ?? (await this.dump('pw_backends'))) {
      have.backends.set(Number(e.key.id), { ip: String(e.value.ip), port: Number(e.value.port), proto: Number(e.value.proto) as Proto });
    }
    return have;
  }

  /** Runs a map-dump iterator (reading its pin) and decodes its records; undefined when it is not pinned. */
  readIter(name: string): Entry[] | undefined {
    const pin = path.join(this.iterDir, name);
    if (!fs.existsSync(pin)) return undefined;
    const m = mapDef(name);
    const ks = layoutOf(m.key).size;
    const rec = ks + layoutOf(m.value).size;
    const buf = fs.readFileSync(pin);
    if (buf.length % rec !== 0) throw new Error(`iterator ${name}: ${buf.length} bytes is not a whole number of ${rec}-byte records`);
    const out: Entry[] = [];
    for (let off = 0; off < buf.length; off += rec) out.push({ key: decode(m.key, buf.subarray(off, off + ks)), value: decode(m.value, buf.subarray(off + ks, off + rec)) });
    return out;
  }

  async serviceCapacity(): Promise<{ svc: number; backends: number }> {
    return { svc: (await this.mapShowCached('pw_svc')).max_entries, backends: (await this.mapShowCached('pw_backends')).max_entries };
  }

  private mapInfo = new Map<string, bpftool.MapInfo>();
  private async mapShowCached(name: string): Promise<bpftool.MapInfo> {
    let i = this.mapInfo.get(name);
    if (!i) {
      i = await bpftool.mapShow(this.mapPin(name));
      this.mapInfo.set(name, i);
    }
    return i;
  }

  /** Applies a service plan: four ordered steps in one bpftool batch (see src/services.ts). */
  async applyServices(p: SvcPlan): Promise<void> {
    const svc = mapDef('pw_svc');
    const be = mapDef('pw_backends');
    const svcPin = this.mapPin('pw_svc');
    const bePin = this.mapPin('pw_backends');
    const svcKeyOf = (fe: Frontend, slot: number) => encode(svc.key, { ip: fe.ip, port: fe.port, proto: fe.proto, slot });
    // in order (see src/services.ts for why this order), generated chunk by chunk
    await bpftool.batch(
      (function* () {
        for (const x of p.backendsUpsert) yield bpftool.updateLine(bePin, encode(be.key, { id: x.id }), encode(be.value, { ip: x.b.ip, port: x.b.port, proto: x.b.proto }));
        for (const x of p.slotsUpsert) yield bpftool.updateLine(svcPin, svcKeyOf(x.fe, x.slot), encode(svc.value, { backend_id: x.id, count: 0 }));
        for (const x of p.mastersUpsert) yield bpftool.updateLine(svcPin, svcKeyOf(x.fe, 0), encode(svc.value, { backend_id: 0, count: x.count }));
        for (const fe of p.mastersDelete) yield bpftool.deleteLine(svcPin, svcKeyOf(fe, 0));
        for (const x of p.slotsDelete) yield bpftool.deleteLine(svcPin, svcKeyOf(x.fe, x.slot));
        for (const id of p.backendsDelete) yield bpftool.deleteLine(bePin, encode(be.key, { id }));
      })(),
    );
  }

  // ---- socket settings and sockets ----

  async readConfig(): Promise<SockConfig | undefined> {
    if (!fs.existsSync(this.mapPin('pw_config'))) return undefined;
    const e = (await this.dump('pw_config'))[0];
    if (!e) return undefined;
    const v = e.value;
    return {
      flags: Number(v.flags),
      proxyUid: Number(v.proxy_uid),
      proxyPort: Number(v.proxy_port),
      bulkBytes: Number(v.bulk_bytes),
      excludedPorts: (v.excluded_ports as number[]).filter((x) => x !== 0),
      svcDropped: Number(v.svc_dropped),
    };
  }

  async writeConfig(c: SockConfig): Promise<void> {
    if (c.excludedPorts.length > 8) throw new Error('at most 8 excluded ports');
    const ports = [...c.excludedPorts, ...new Array<number>(8 - c.excludedPorts.length).fill(0)];
    await this.writeMap('pw_config', [{ key: { index: 0 }, value: { flags: c.flags, proxy_uid: c.proxyUid, proxy_port: c.proxyPort, bulk_bytes: c.bulkBytes, excluded_ports: ports, svc_dropped: c.svcDropped } }], []);
  }

  /** Connections with a direction on TCP (no peer at the first message, or marked) leave pw_sock, drained. */
  async drainPassthrough(): Promise<number> {
    if (!fs.existsSync(this.mapPin('pw_flows'))) return 0;
    const pass = new Set((await this.dump('pw_flows')).filter((e) => Number(e.value.flags) & FLOW_FLAGS.PASSTHROUGH).map((e) => sockKeyString(e.key)));
    if (pass.size === 0) return 0;
    return (await this.drainSockets((k) => pass.has(sockKeyString(k)), 1000)).removed;
  }

  /** Reads the drain iterator: which sockets still hold redirected bytes nobody has read. */
  async pendingSockets(): Promise<Map<string, boolean>> {
    const pin = path.join(this.iterDir, 'pw_sock');
    const out = new Map<string, boolean>();
    if (!fs.existsSync(pin)) return out;
    const buf = fs.readFileSync(pin);
    const keyDef = mapDef('pw_sock').key;
    for (let off = 0; off + 16 <= buf.length; off += 16) {
      const k = decode(keyDef, buf.subarray(off, off + 12));
      out.set(sockKeyString(k), buf.readUInt32LE(off + 12) !== 0);
    }
    return out;
  }

  /**
   * Takes sockets out of pw_sock without losing a byte. Deleting a socket
   * whose psock still queues redirected data frees that data, so: mark both
   * directions of each connection passthrough (no new redirects), wait a
   * grace period for sendmsg calls already past the check, then delete each
   * socket once the drain iterator says its queue is empty. Connections
   * still holding unread data at the deadline stay (passthrough) and are
   * reported; a later call finishes them.
   */
  async drainSockets(select: (k: StructValue) => boolean, timeoutMs = 5000): Promise<{ removed: number; stuck: string[] }> {
    const keyDef = mapDef('pw_sock').key;
    const present = new Map((await this.dump('pw_sock')).map((e) => [sockKeyString(e.key), e.key]));
    const chosen = new Map<string, StructValue>();
    for (const [s, k] of present) {
      if (!select(k)) continue;
      chosen.set(s, k);
      const r = reverseSockKey(k);
      if (present.has(sockKeyString(r))) chosen.set(sockKeyString(r), r);
    }
    if (chosen.size === 0) return { removed: 0, stuck: [] };
    await this.writeMap('pw_flows', [...chosen.values()].map((k) => ({ key: k, value: { flags: FLOW_FLAGS.PASSTHROUGH, bytes: 0n } })), []);
    await sleep(20);
    const deadline = Date.now() + timeoutMs;
    let removed = 0;
    for (;;) {
      const pending = await this.pendingSockets();
      const ready = [...chosen].filter(([s]) => pending.get(s) === false);
      for (const [s] of [...chosen]) if (!pending.has(s)) chosen.delete(s); // closed meanwhile
      if (ready.length) {
        const pin = this.mapPin('pw_sock');
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
    if (chosen.size) log.warn({ sockets: [...chosen.keys()] }, 'sockets still hold unread redirected data; left in pw_sock (passthrough) for now');
    return { removed, stuck: [...chosen.keys()] };
  }

  /** A pinned map whose layout differs from the schema cannot be reused: say so clearly. */
  private async checkCompatible(defs: MapDef[]): Promise<void> {
    for (const m of defs) {
      const info = await bpftool.mapShow(this.mapPin(m.name));
      const want = { key: layoutOf(m.key).size, value: layoutOf(m.value).size };
      const entries = mapSizes(process.env.PODWARP_MAP_SIZES)[m.name] ?? m.maxEntries;
      if (info.max_entries !== entries) {
        throw new ToolError(
          `pinned map ${m.name} holds ${info.max_entries} entries, this build ${entries} (PODWARP_MAP_SIZES); a map cannot be resized in place: run \`podwarp uninstall\` first`,
          ['bpftool', 'map', 'show', 'pinned', this.mapPin(m.name)],
          0,
          '',
        );
      }
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
  async uninstall(opts: { force?: boolean; drainTimeoutMs?: number } = {}): Promise<UninstallResult> {
    const detached: string[] = [];
    const sweptFilters: string[] = [];
    const cgroupsDetached: string[] = [];
    let socketsRemoved = 0;
    const ourProgIds = new Set<number>();
    if (fs.existsSync(this.progsDir)) {
      for (const p of fs.readdirSync(this.progsDir)) ourProgIds.add(await this.progId(p));
    }
    // sockets first: no new ones (detach sock_ops & co), then out of the hash without losing a byte
    for (const c of await this.cgroups()) {
      await this.setCgroupHooks(c.path, 0).catch(async (e: unknown) => {
        if (fs.existsSync(cgroupAbs(c.path))) throw e;
        await this.writeMap('pw_cgroups', [], [{ id: c.id }]);
      });
      cgroupsDetached.push(c.path);
    }
    if (fs.existsSync(this.mapPin('pw_sock'))) {
      const d = await this.drainSockets(() => true, opts.drainTimeoutMs ?? 10_000);
      socketsRemoved = d.removed;
      if (d.stuck.length && !opts.force) {
        throw new Error(
          `uninstall stopped: ${d.stuck.length} accelerated sockets still hold data their applications have not read (${d.stuck.slice(0, 4).join(', ')}${d.stuck.length > 4 ? ', …' : ''}); removing them now would lose it. Run uninstall again later, or with --force to drop it`,
        );
      }
      if (fs.existsSync(this.progPin(MSG_PROG))) await bpftool.msgVerdictDetach(this.progPin(MSG_PROG), this.mapPin('pw_sock')).catch(() => undefined);
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
    return { detached, sweptFilters, removedPins, cgroupsDetached, socketsRemoved };
  }
}
