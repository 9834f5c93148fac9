// The service maps (pw_svc, pw_backends, pw_aff_match) behind one interface: what
// ServiceSync reads back and writes. BpfServiceMaps is the kernel's pinned
// maps; MemoryServiceMaps is an independent model of them for tests.
import { encode } from '../../abi/codec.js';
import { mapDef } from '../../abi/schema.js';
import * as bpftool from '../../loader/bpftool.js';
import type { Datapath } from '../../loader/datapath.js';
import { feKey, type BackendAddr, type Frontend, type Proto } from './desired.js';
import type { ActualServices, SvcPlan } from './plan.js';

export interface ServiceMaps {
  /** Both maps as they are now. */
  read(): Promise<ActualServices>;
  /** Writes a plan in its order: backends → slots, matches → masters → prune. */
  apply(p: SvcPlan): Promise<void>;
  /** max_entries of pw_svc, pw_backends and pw_aff_match. */
  capacity(): Promise<{ svc: number; backends: number; match: number }>;
}

/** The pinned maps of a datapath. */
export class BpfServiceMaps implements ServiceMaps {
  constructor(private readonly dp: Datapath) {}

  /** Read through the map-dump iterators (one read() per map) when pinned, else `bpftool map dump`. */
  async read(): Promise<ActualServices> {
    const have: ActualServices = { masters: new Map(), slots: new Map(), backends: new Map(), matches: new Map() };
    if (!this.dp.pins.hasMap('pw_svc')) return have;
    for (const e of await this.dp.maps.readAll('pw_svc')) {
      const fe = { ip: String(e.key.ip), port: Number(e.key.port), proto: Number(e.key.proto) as Proto };
      const slot = Number(e.key.slot);
      const k = feKey(fe);
      // the master entry's backend_id holds the ClientIP affinity timeout
      const affinity = Number(e.value.backend_id);
      if (slot === 0) have.masters.set(k, affinity ? { fe, count: Number(e.value.count), affinity } : { fe, count: Number(e.value.count) });
      else {
        if (!have.slots.has(k)) have.slots.set(k, new Map());
        have.slots.get(k)!.set(slot, Number(e.value.backend_id));
      }
    }
    for (const e of await this.dp.maps.readAll('pw_backends')) {
      have.backends.set(Number(e.key.id), { ip: String(e.value.ip), port: Number(e.value.port), proto: Number(e.value.proto) as Proto });
    }
    if (this.dp.pins.hasMap('pw_aff_match')) {
      for (const e of await this.dp.maps.readAll('pw_aff_match')) {
        const k = feKey({ ip: String(e.key.ip), port: Number(e.key.port), proto: Number(e.key.proto) as Proto });
        let m = have.matches.get(k);
        if (!m) have.matches.set(k, (m = new Set()));
        m.add(Number(e.key.backend_id));
      }
    }
    return have;
  }

  /** One bpftool batch, its lines generated in the plan's order. */
  async apply(p: SvcPlan): Promise<void> {
    const svc = mapDef('pw_svc');
    const be = mapDef('pw_backends');
    const am = mapDef('pw_aff_match');
    const svcPin = this.dp.pins.map('pw_svc');
    const bePin = this.dp.pins.map('pw_backends');
    const amPin = this.dp.pins.map('pw_aff_match');
    const amKey = (x: { fe: Frontend; id: number }) =>
      encode(am.key, { ip: x.fe.ip, port: x.fe.port, proto: x.fe.proto, backend_id: x.id });
    const svcKeyOf = (fe: Frontend, slot: number) => encode(svc.key, { ip: fe.ip, port: fe.port, proto: fe.proto, slot });
    const beVal = (b: BackendAddr) => encode(be.value, { ip: b.ip, port: b.port, proto: b.proto });
    await bpftool.batch(
      (function* () {
        for (const x of p.backendsUpsert) yield bpftool.updateLine(bePin, encode(be.key, { id: x.id }), beVal(x.b));
        for (const x of p.slotsUpsert)
          yield bpftool.updateLine(svcPin, svcKeyOf(x.fe, x.slot), encode(svc.value, { backend_id: x.id, count: 0 }));
        for (const x of p.matchesUpsert) yield bpftool.updateLine(amPin, amKey(x), encode(am.value, { present: 1 }));
        for (const x of p.mastersUpsert)
          yield bpftool.updateLine(svcPin, svcKeyOf(x.fe, 0), encode(svc.value, { backend_id: x.affinity ?? 0, count: x.count }));
        for (const fe of p.mastersDelete) yield bpftool.deleteLine(svcPin, svcKeyOf(fe, 0));
        for (const x of p.slotsDelete) yield bpftool.deleteLine(svcPin, svcKeyOf(x.fe, x.slot));
        for (const x of p.matchesDelete) yield bpftool.deleteLine(amPin, amKey(x));
        for (const id of p.backendsDelete) yield bpftool.deleteLine(bePin, encode(be.key, { id }));
      })(),
    );
  }

  async capacity(): Promise<{ svc: number; backends: number; match: number }> {
    return {
      svc: (await this.dp.maps.show('pw_svc')).max_entries,
      backends: (await this.dp.maps.show('pw_backends')).max_entries,
      match: (await this.dp.maps.show('pw_aff_match')).max_entries,
    };
  }
}

type SvcEntryKey = string; // "ip:port/proto#slot"

/**
 * The two maps as the kernel holds them: flat entries keyed as in pw_svc and
 * pw_backends, written one entry at a time in the batch's order, with the
 * kernel's rules (a delete of a missing key fails, a full map refuses a new
 * key). After every single write it checks what a concurrent connect() may
 * rely on: a master's slots 1..count exist, and every slot names a backend
 * that exists. It shares no code with the planner or the mirror.
 */
export class MemoryServiceMaps implements ServiceMaps {
  readonly svc = new Map<SvcEntryKey, { fe: Frontend; slot: number; backendId: number; count: number }>();
  readonly backends = new Map<number, BackendAddr>();
  /** pw_aff_match: "ip:port/proto#backendId" */
  readonly matches = new Map<string, { fe: Frontend; id: number }>();
  writes = 0;
  /** Make the next apply() throw before writing anything. */
  failNext = false;
  /** A reader-visible inconsistency seen after some write, if any. */
  violation?: string;

  private readonly cap: { svc: number; backends: number; match: number };

  constructor(cap: { svc: number; backends: number; match?: number } = { svc: 1 << 20, backends: 1 << 20 }) {
    this.cap = { match: 1 << 20, ...cap };
  }

  private static key(fe: Frontend, slot: number): SvcEntryKey {
    return `${fe.ip}:${fe.port}/${fe.proto}#${slot}`;
  }

  async read(): Promise<ActualServices> {
    const have: ActualServices = { masters: new Map(), slots: new Map(), backends: new Map(), matches: new Map() };
    for (const e of this.svc.values()) {
      const k = `${e.fe.ip}:${e.fe.port}/${e.fe.proto}`;
      // the master's backend id field is the affinity timeout, as in the kernel's map
      if (e.slot === 0)
        have.masters.set(k, e.backendId ? { fe: { ...e.fe }, count: e.count, affinity: e.backendId } : { fe: { ...e.fe }, count: e.count });
      else {
        if (!have.slots.has(k)) have.slots.set(k, new Map());
        have.slots.get(k)!.set(e.slot, e.backendId);
      }
    }
    for (const [id, b] of this.backends) have.backends.set(id, { ...b });
    for (const { fe, id } of this.matches.values()) {
      const k = `${fe.ip}:${fe.port}/${fe.proto}`;
      let m = have.matches.get(k);
      if (!m) have.matches.set(k, (m = new Set()));
      m.add(id);
    }
    return have;
  }

  async capacity(): Promise<{ svc: number; backends: number; match: number }> {
    return this.cap;
  }

  async apply(p: SvcPlan): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('bpftool batch failed');
    }
    for (const x of p.backendsUpsert) this.put(this.backends, x.id, { ...x.b }, this.cap.backends);
    for (const x of p.slotsUpsert)
      this.put(this.svc, MemoryServiceMaps.key(x.fe, x.slot), { fe: { ...x.fe }, slot: x.slot, backendId: x.id, count: 0 }, this.cap.svc);
    for (const x of p.matchesUpsert)
      this.put(this.matches, MemoryServiceMaps.key(x.fe, x.id), { fe: { ...x.fe }, id: x.id }, this.cap.match);
    for (const x of p.mastersUpsert)
      this.put(
        this.svc,
        MemoryServiceMaps.key(x.fe, 0),
        { fe: { ...x.fe }, slot: 0, backendId: x.affinity ?? 0, count: x.count },
        this.cap.svc,
      );
    for (const fe of p.mastersDelete) this.del(this.svc, MemoryServiceMaps.key(fe, 0));
    for (const x of p.slotsDelete) this.del(this.svc, MemoryServiceMaps.key(x.fe, x.slot));
    for (const x of p.matchesDelete) this.del(this.matches, MemoryServiceMaps.key(x.fe, x.id));
    for (const id of p.backendsDelete) this.del(this.backends, id);
  }

  private put<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
    if (!m.has(k) && m.size >= max) throw new Error('map full');
    m.set(k, v);
    this.wrote();
  }

  private del<K, V>(m: Map<K, V>, k: K): void {
    if (!m.delete(k)) throw new Error(`delete of a missing key ${String(k)}`);
    this.wrote();
  }

  private wrote(): void {
    this.writes++;
    if (this.violation) return;
    for (const e of this.svc.values()) {
      if (e.slot === 0) {
        for (let s = 1; s <= e.count; s++) {
          if (!this.svc.has(MemoryServiceMaps.key(e.fe, s)))
            this.violation = `master ${MemoryServiceMaps.key(e.fe, 0)} counts ${e.count} but slot ${s} is missing`;
        }
      } else if (this.svc.has(MemoryServiceMaps.key(e.fe, 0)) && !this.backends.has(e.backendId)) {
        this.violation = `slot ${MemoryServiceMaps.key(e.fe, e.slot)} names backend ${e.backendId}, which is missing`;
      }
    }
    // an affinity match the reader may follow names a backend that exists
    for (const [k, m] of this.matches) {
      if (this.svc.get(MemoryServiceMaps.key(m.fe, 0))?.backendId && !this.backends.has(m.id))
        this.violation = `affinity match ${k} names backend ${m.id}, which is missing`;
    }
  }
}
