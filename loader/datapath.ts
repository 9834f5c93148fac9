// The datapath podwarp owns on a node, as one object: its pins (pins.ts),
// map I/O (maps.ts), the tc ledger (tcattach.ts), the cgroup ledger
// (cgroupattach.ts) and the socket drain (sockdrain.ts). This file only
// loads the objects and uninstalls everything; each concept lives in its
// own module.
import fs from 'node:fs';
import path from 'node:path';
import { MAPS, layoutOf, mapDef, type MapDef } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import { mapSizes } from './build.js';
import { CgroupAttachments } from './cgroupattach.js';
import { ToolError } from './errors.js';
import { PinLock, lockState, type LockHolder, type LockOptions } from './lock.js';
import { log } from './log.js';
import { Maps } from './maps.js';
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
   * The node lock of this datapath (loader/lock.ts): every command that
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
    const objects = objs.filter((o) => !isIterator(o));
    const iterators = objs.filter(isIterator);
    fs.mkdirSync(this.pins.mapsDir, { recursive: true });
    fs.mkdirSync(this.pins.progsDir, { recursive: true });
    for (const obj of objects) {
      const stage = path.join(this.pins.root, `stage_${process.pid}_${Date.now()}`);
      fs.mkdirSync(stage);
      try {
        const reuse = MAPS.filter((m) => this.pins.hasMap(m.name)).map((m) => ({ name: m.name, pin: this.pins.map(m.name) }));
        await this.checkCompatible(reuse.map((r) => mapDef(r.name)));
        await bpftool.progLoadAll(obj, path.join(stage, 'progs'), reuse, path.join(stage, 'maps'));
        for (const m of fs.readdirSync(path.join(stage, 'maps'))) {
          // only the schema's maps are shared; an object's own .rodata/.bss stays with its programs
          if (MAPS.some((x) => x.name === m) && !this.pins.hasMap(m)) fs.renameSync(path.join(stage, 'maps', m), this.pins.map(m));
        }
        for (const p of fs.readdirSync(path.join(stage, 'progs'))) fs.renameSync(path.join(stage, 'progs', p), this.pins.prog(p));
      } finally {
        fs.rmSync(stage, { recursive: true, force: true });
      }
    }
    await this.tc.reattach();
    if (this.pins.hasProg(MSG_PROG)) await bpftool.msgVerdictAttach(this.pins.prog(MSG_PROG), this.pins.map('pw_sock'));
    await this.cgroups.reattach();
    fs.mkdirSync(this.pins.iterDir, { recursive: true });
    for (const it of iterators) {
      const name = path.basename(it, '.o').replace(/_iter$/, '');
      const tmp = this.pins.iter(`${name}_new`);
      fs.rmSync(tmp, { force: true });
      await bpftool.iterPin(it, tmp, this.pins.map(name));
      fs.renameSync(tmp, this.pins.iter(name));
    }
    log.info({ pinRoot: this.pins.root, objects: objs.map((o) => path.basename(o)) }, 'datapath loaded');
  }

  /** A pinned map whose layout or size differs from this build's cannot be reused: say so clearly. */
  private async checkCompatible(defs: MapDef[]): Promise<void> {
    const sizes = mapSizes(process.env.PODWARP_MAP_SIZES);
    for (const m of defs) {
      const argv = ['bpftool', 'map', 'show', 'pinned', this.pins.map(m.name)];
      const info = await bpftool.mapShow(this.pins.map(m.name));
      const want = { key: layoutOf(m.key).size, value: layoutOf(m.value).size };
      const entries = sizes[m.name] ?? m.maxEntries;
      if (info.max_entries !== entries) {
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
      const d = await this.sockets.drain(() => true, opts.drainTimeoutMs ?? 10_000);
      socketsRemoved = d.removed;
      if (d.stuck.length && !opts.force) {
        throw new Error(
          `uninstall stopped: ${d.stuck.length} accelerated sockets still hold data their applications have not read (${d.stuck.slice(0, 4).join(', ')}${d.stuck.length > 4 ? ', …' : ''}); removing them now would lose it. Run uninstall again later, or with --force to drop it`,
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

/** Iterator objects (bpf/iter/*.c) are pinned as bpf_iter links, not loaded as programs. */
function isIterator(obj: string): boolean {
  return path.basename(path.dirname(obj)) === 'iter';
}
