// The datapath podwarp owns on a node, as one object: its pins (pins.ts),
// map I/O (maps.ts), the tc ledger (tcattach.ts), the cgroup ledger
// (cgroupattach.ts), the socket drain (sockdrain.ts) and flow control's read
// counter (flowcontrol.ts). This file only loads the objects and uninstalls
// everything; each concept lives in its own module.
import fs from 'node:fs';
import path from 'node:path';
import { MAPS, layoutOf, mapDef, type MapDef } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import { mapSizes } from './build.js';
import { CONNTRACK_SIZED, asPinned, conntrackSizing, describeSizing, readConntrackMax, type MapSizing } from './mapsize.js';
import { CgroupAttachments } from './cgroupattach.js';
import { flowControlFrom, loadReadCounter, readCounterOf, type FlowControl } from './flowcontrol.js';
import { FeatureMissingError, ToolError } from '../host/errors.js';
import {
  NEEDS,
  NOT_PINNED,
  TEST_REFUSAL,
  activePart,
  coreOf,
  describePart,
  joinReasons,
  kernelReason,
  partOf,
  refusedPart,
  testRefused,
  type CorePartId,
  type Part,
  type PartId,
} from './parts.js';
import { PinLock, lockState, type LockHolder, type LockOptions } from '../host/lock.js';
import { log } from '../host/log.js';
import { COUNTED_MAPS, COUNT_ITER, Maps, countIterName } from './maps.js';
import { MSG_PROG, Pins } from './pins.js';
import { SocketDrain } from './sockdrain.js';
import { TcAttachments } from './tcattach.js';

export interface UninstallResult {
  detached: string[];
  sweptFilters: string[];
  removedPins: boolean;
  cgroupsDetached: string[];
  socketsRemoved: number;
}

/**
 * The optional parts as the pins show them, for a process that did not load
 * (status); the kernel's reasons are known only to the loading process
 * (the agent's report carries them).
 */
export function partsOf(pins: Pins, kernelHasMsgLen: boolean): Part[] {
  const iters = (names: string[]) => names.every((n) => fs.existsSync(pins.iter(n)));
  const notPinned = NOT_PINNED;
  const core = (part: CorePartId, prefix: RegExp, objects: string[]): Part => {
    const have = pins.progs().filter((p) => prefix.test(p));
    return have.length
      ? activePart(
          part,
          have.map((p) => `${p}.o`),
        )
      : refusedPart(part, objects, notPinned);
  };
  return [
    core('sockmap', /^pw_(sockops|sk_msg)$/, ['pw_sockops.o', 'pw_sk_msg.o']),
    core('socket-lb', /^pw_lb_/, ['pw_lb_*.o']),
    core('sidecar', /^pw_proxy_/, ['pw_proxy_*.o']),
    iters(['pw_svc', 'pw_backends'])
      ? activePart('map-dump', ['pw_svc_iter.o', 'pw_backends_iter.o'])
      : refusedPart('map-dump', ['pw_svc_iter.o', 'pw_backends_iter.o'], notPinned),
    iters(['pw_sock']) ? activePart('drain', ['pw_sock_iter.o']) : refusedPart('drain', ['pw_sock_iter.o'], notPinned),
    readCounterOf(pins, kernelHasMsgLen),
  ];
}

export class Datapath {
  readonly maps: Maps;
  readonly tc: TcAttachments;
  readonly cgroups: CgroupAttachments;
  readonly sockets: SocketDrain;

  private constructor(readonly pins: Pins) {
    this.maps = new Maps(pins);
    this.tc = new TcAttachments(pins, this.maps);
    this.cgroups = new CgroupAttachments(pins, this.maps);
    this.sockets = new SocketDrain(pins, this.maps);
  }

  /** pinName: directory under the bpffs mount (default $PODWARP_PIN_NAME or "podwarp"; tests use their own). */
  static async open(pinName?: string): Promise<Datapath> {
    return new Datapath(await Pins.open(pinName));
  }

  get pinRoot(): string {
    return this.pins.root;
  }

  isLoaded(): boolean {
    return this.pins.isLoaded();
  }

  /**
   * The node lock of this datapath (host/lock.ts): every command that
   * writes its pins takes it first; readers (dump, status, doctor) never do.
   */
  lock(opts: LockOptions): Promise<PinLock> {
    return PinLock.acquire(this.pins.root, opts);
  }

  /** Who holds the node lock now (undefined: nobody), and how many wait for it. */
  writer(): { holder?: LockHolder; waiters: number } {
    return lockState(this.pins.root) ?? { waiters: 0 };
  }

  /**
   * Loads the objects. Maps already pinned are reused (their contents and ids
   * survive); missing maps are created and pinned. New program pins replace
   * old ones, and every recorded attachment is switched to the new program
   * atomically: a restart never drops traffic.
   */
  async load(objs: string[]): Promise<void> {
    const objects = objs.filter((o) => kindOf(o) === 'program');
    const iterators = objs.filter((o) => kindOf(o) === 'iter');
    const traces = objs.filter((o) => kindOf(o) === 'trace');
    const fallbacks = new Map(objs.filter((o) => kindOf(o) === 'fallback').map((o) => [path.basename(o), o]));
    fs.mkdirSync(this.pins.mapsDir, { recursive: true });
    fs.mkdirSync(this.pins.progsDir, { recursive: true });
    // each pinned map's layout is checked once per load (once per object cost
    // ~250 `bpftool map show` runs; minutes on an emulated kernel); a map this
    // load pinned comes from this build and needs no check
    const checked = new Set<string>();
    this.sizing = await this.createSized(checked);
    const core = await this.loadCore(objects, fallbacks, checked);
    await this.tc.reattach();
    if (this.pins.hasProg(MSG_PROG)) await bpftool.msgVerdictAttach(this.pins.prog(MSG_PROG), this.pins.map('pw_sock'));
    await this.cgroups.reattach();
    const readCounter = await loadReadCounter(this.pins, traces, this.kernelReadRefused, (obj) => this.loadObject(obj, checked));
    this.parts = [...core, ...(await this.loadIterators(iterators)), readCounter];
    this.flowControl = flowControlFrom(readCounter);
    for (const p of this.parts.filter((x) => x.state === 'refused'))
      log.warn({ part: p.part, objects: p.objects, reason: p.reason }, describePart(p));
    log.info(
      {
        pinRoot: this.pins.root,
        objects: objs.map((o) => path.basename(o)),
        parts: Object.fromEntries(this.parts.map((p) => [p.part, p.state])),
      },
      'datapath loaded',
    );
  }

  /** The conntrack-sized maps (loader/mapsize.ts): their size and where it came from, after load(). */
  sizing: MapSizing[] = [];

  /**
   * Creates each conntrack-sized map the node has no pin of, at the size
   * nf_conntrack_max asks (the objects' own size is the schema's default; a
   * pinned map is what they reuse). One pinned already keeps its size: a
   * changed sysctl applies at the next `podwarp uninstall`, never by
   * refusing to load. An explicit size (PODWARP_MAP_SIZES) is the build's,
   * checked as every map's.
   */
  private async createSized(checked: Set<string>): Promise<MapSizing[]> {
    const out: MapSizing[] = [];
    for (const s of conntrackSizing(mapSizes(process.env.PODWARP_MAP_SIZES), readConntrackMax())) {
      const m = mapDef(s.map);
      const pin = this.pins.map(s.map);
      if (s.source === 'explicit') out.push(s);
      else if (this.pins.hasMap(s.map)) out.push(asPinned(s, (await bpftool.mapShow(pin)).max_entries));
      else {
        await bpftool.mapCreate(pin, {
          type: m.type,
          key: layoutOf(m.key).size,
          value: layoutOf(m.value).size,
          entries: s.entries,
          name: m.name,
        });
        checked.add(s.map);
        out.push(s);
      }
    }
    for (const s of out) log.info({ map: s.map, entries: s.pinned ?? s.entries, source: s.source, pinned: s.pinned }, describeSizing(s));
    return out;
  }

  /** How flow control counts a peer's unread bytes on this kernel, after load(). */
  flowControl: FlowControl = { source: 'none' };

  /** Why the kernel refused pw_sk_msg.o's kernel read (its fallback runs), after load(). */
  kernelReadRefused: string | undefined;

  /** The optional parts (loader/parts.ts) and what became of each, after load(). */
  parts: Part[] = [];

  /**
   * The core objects, feature by feature (loader/parts.ts coreOf). The tc
   * program is required: its refusal is a FeatureMissingError. Any other
   * feature the kernel refuses is switched off whole (its programs unpinned,
   * so the attachments leave it out) and the others load on.
   */
  private async loadCore(objects: string[], fallbacks: Map<string, string>, checked: Set<string>): Promise<Part[]> {
    const groups = new Map<CorePartId, { objects: string[]; reasons: [string, string][]; notes: string[] }>();
    this.kernelReadRefused = undefined;
    // tc first, and a feature before the one that needs it
    const order = ['tc', 'sockmap', 'socket-lb', 'sidecar'];
    const rank = (o: string) => order.indexOf(coreOf(o) ?? 'tc');
    for (const obj of [...objects].sort((a, b) => rank(a) - rank(b))) {
      const feature = coreOf(obj);
      const base = path.basename(obj);
      if (feature === 'tc' || feature === undefined) {
        try {
          if (feature === 'tc' && testRefused('tc')) throw new Error(TEST_REFUSAL);
          await this.loadObject(obj, checked);
        } catch (e) {
          throw new FeatureMissingError(
            feature === 'tc' ? 'tc program' : base,
            `the kernel refused ${base} (${kernelReason(e)}): podwarp cannot run without it`,
          );
        }
        continue;
      }
      const g = groups.get(feature) ?? { objects: [], reasons: [], notes: [] };
      groups.set(feature, g);
      g.objects.push(base);
      if (g.reasons.length) continue; // the feature is off already
      const need = NEEDS[feature];
      try {
        if (testRefused(feature)) throw new Error(TEST_REFUSAL);
        if (need && groups.get(need)?.reasons.length) throw new Error(`needs ${need}, which is off`);
        try {
          if (base === `${MSG_PROG}.o` && testRefused('kernel-read')) throw new Error(TEST_REFUSAL);
          await this.loadObject(obj, checked);
        } catch (e) {
          // a fallback built without what the kernel refused (bpf/fallback/): the feature stays on
          const fb = fallbacks.get(base);
          if (!fb) throw e;
          await this.loadObject(fb, checked);
          g.notes.push(`fallback/${base} loaded: the kernel refused ${base} (${kernelReason(e)})`);
          if (base === `${MSG_PROG}.o`) this.kernelReadRefused = kernelReason(e);
        }
      } catch (e) {
        g.reasons.push([base, kernelReason(e)]);
      }
    }
    const parts: Part[] = [];
    for (const [feature, g] of groups) {
      if (!g.reasons.length) {
        parts.push(activePart(feature, g.objects, g.notes.join('; ') || undefined));
        continue;
      }
      for (const o of g.objects) fs.rmSync(this.pins.prog(path.basename(o, '.o')), { force: true });
      parts.push(refusedPart(feature, g.objects, joinReasons(g.reasons)));
    }
    return parts;
  }

  /**
   * The iterators (map-dump and drain parts): each pinned as a bpf_iter link
   * on its map. One the kernel refuses is recorded with its reason, and a pin
   * of an earlier load is removed, so that the pins say what this load has.
   */
  private async loadIterators(iterators: string[]): Promise<Part[]> {
    fs.mkdirSync(this.pins.iterDir, { recursive: true });
    const byPart = new Map<PartId, { objects: string[]; reasons: [string, string][] }>();
    for (const it of iterators) {
      const part = partOf(it)!;
      const base = path.basename(it, '.o');
      const e = byPart.get(part) ?? { objects: [], reasons: [] };
      byPart.set(part, e);
      e.objects.push(path.basename(it));
      // the counting iterator is pinned on every LRU map (iter/<map>_count), a dump iterator on its own map
      const pins: [string, string][] =
        base === COUNT_ITER ? COUNTED_MAPS.map((m) => [countIterName(m), m]) : [[base.replace(/_iter$/, ''), base.replace(/_iter$/, '')]];
      for (const [name, map] of pins) {
        const tmp = this.pins.iter(`${name}_new`);
        fs.rmSync(tmp, { force: true });
        try {
          if (testRefused(part)) throw new Error(TEST_REFUSAL);
          await bpftool.iterPin(it, tmp, this.pins.map(map));
          fs.renameSync(tmp, this.pins.iter(name));
        } catch (err) {
          fs.rmSync(this.pins.iter(name), { force: true });
          e.reasons.push([path.basename(it), kernelReason(err)]);
          break;
        }
      }
    }
    return [...byPart].map(([part, e]) =>
      e.reasons.length ? refusedPart(part, e.objects, joinReasons(e.reasons)) : activePart(part, e.objects),
    );
  }

  /** One object: its programs pinned (replacing older pins), the schema's maps shared. */
  private async loadObject(obj: string, checked: Set<string>): Promise<void> {
    const stage = path.join(this.pins.root, `stage_${process.pid}_${Date.now()}`);
    fs.mkdirSync(stage);
    try {
      const reuse = MAPS.filter((m) => this.pins.hasMap(m.name)).map((m) => ({ name: m.name, pin: this.pins.map(m.name) }));
      await this.checkCompatible(reuse.filter((r) => !checked.has(r.name)).map((r) => mapDef(r.name)));
      for (const r of reuse) checked.add(r.name);
      await bpftool.progLoadAll(obj, path.join(stage, 'progs'), reuse, path.join(stage, 'maps'));
      for (const m of fs.readdirSync(path.join(stage, 'maps'))) {
        // only the schema's maps are shared; an object's own .rodata/.bss stays with its programs
        if (MAPS.some((x) => x.name === m) && !this.pins.hasMap(m)) {
          fs.renameSync(path.join(stage, 'maps', m), this.pins.map(m));
          checked.add(m);
        }
      }
      for (const p of fs.readdirSync(path.join(stage, 'progs'))) fs.renameSync(path.join(stage, 'progs', p), this.pins.prog(p));
    } finally {
      fs.rmSync(stage, { recursive: true, force: true });
    }
  }

  /** A pinned map whose layout or size differs from this build's cannot be reused: say so clearly. */
  private async checkCompatible(defs: MapDef[]): Promise<void> {
    const sizes = mapSizes(process.env.PODWARP_MAP_SIZES);
    for (const m of defs) {
      const argv = ['bpftool', 'map', 'show', 'pinned', this.pins.map(m.name)];
      const info = await bpftool.mapShow(this.pins.map(m.name));
      const want = { key: layoutOf(m.key).size, value: layoutOf(m.value).size };
      const entries = sizes[m.name] ?? m.maxEntries;
      // a conntrack-sized map keeps the size it was created with (createSized), unless one is given
      const autoSized = (CONNTRACK_SIZED as readonly string[]).includes(m.name) && sizes[m.name] === undefined;
      if (info.max_entries !== entries && !autoSized) {
        throw new ToolError(
          `pinned map ${m.name} holds ${info.max_entries} entries, this build ${entries} (PODWARP_MAP_SIZES); a map cannot be resized in place: run \`podwarp uninstall\` first`,
          argv,
          0,
          '',
        );
      }
      if (info.bytes_key !== want.key || info.bytes_value !== want.value) {
        throw new ToolError(
          `pinned map ${m.name} has key/value ${info.bytes_key}/${info.bytes_value} bytes, schema says ${want.key}/${want.value}; run \`podwarp uninstall\` to drop the old datapath`,
          argv,
          0,
          '',
        );
      }
    }
  }

  /**
   * Removes everything this datapath created: cgroup attachments, sockets
   * (drained), filters, the qdiscs it made, every pin. Idempotent. Also
   * sweeps devices for filters at our prio/handle that run one of our
   * programs but are missing from the ledger.
   */
  async uninstall(opts: { force?: boolean; drainTimeoutMs?: number } = {}): Promise<UninstallResult> {
    const ourProgIds = new Set<number>();
    for (const p of this.pins.progs()) ourProgIds.add(await this.maps.progId(p));
    // sockets first: no new ones (detach sock_ops & co), then out of the hash without losing a byte
    const cgroupsDetached = await this.cgroups.detachAll();
    let socketsRemoved = 0;
    if (this.pins.hasMap('pw_sock')) {
      // without the drain iterator nothing tells an empty queue: wait for the sockets to close
      const d = await this.sockets.drain(() => true, opts.drainTimeoutMs ?? 10_000, { waitClose: true });
      socketsRemoved = d.removed;
      if (d.stuck.length && !opts.force) {
        const some = `${d.stuck.slice(0, 4).join(', ')}${d.stuck.length > 4 ? ', …' : ''}`;
        throw new Error(
          d.blind
            ? `uninstall stopped: ${d.stuck.length} accelerated sockets are still open (${some}), and the kernel refused the drain iterator, so podwarp cannot see whether they hold data their applications have not read; removing them now could lose it. They are on TCP now: run uninstall again once they have closed (or with a longer --drain-timeout), or with --force to drop what they may hold`
            : `uninstall stopped: ${d.stuck.length} accelerated sockets still hold data their applications have not read (${some}); removing them now would lose it. Run uninstall again later, or with --force to drop it`,
        );
      }
      if (this.pins.hasProg(MSG_PROG))
        await bpftool.msgVerdictDetach(this.pins.prog(MSG_PROG), this.pins.map('pw_sock')).catch(() => undefined);
    }
    const detached: string[] = [];
    for (const r of await this.tc.list()) {
      await this.tc.detach(r);
      detached.push(r.name);
    }
    const sweptFilters = await this.tc.sweep(ourProgIds);
    // the lock (taken on the pin root) may have made an empty root: that is no pin
    const removedPins = fs.existsSync(this.pins.root) && fs.readdirSync(this.pins.root).length > 0;
    fs.rmSync(this.pins.root, { recursive: true, force: true });
    return { detached, sweptFilters, removedPins, cgroupsDetached, socketsRemoved };
  }
}

/**
 * bpf/*.c: programs (loadall); bpf/iter/*.c: pinned as bpf_iter links;
 * bpf/trace/<fn>.c: one of them loaded, attached by a pinned link;
 * bpf/fallback/<prog>.c: loaded only where the kernel refuses bpf/<prog>.c.
 */
function kindOf(obj: string): 'program' | 'iter' | 'trace' | 'fallback' {
  const dir = path.basename(path.dirname(obj));
  return dir === 'iter' || dir === 'trace' || dir === 'fallback' ? dir : 'program';
}
