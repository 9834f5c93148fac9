// An independent model of the service maps (pw_svc, pw_backends, pw_aff_match, pw_udp_serve) for
// tests of ServiceSync: the ServiceMaps interface of src/services/maps.ts without a kernel.
import type { ServiceMaps } from '../../src/services/maps.js';
import type { BackendAddr, Frontend } from '../../src/services/desired.js';
import type { ActualServices, SvcPlan } from '../../src/services/plan.js';

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
  /** pw_udp_serve: "ip:port/proto#endpointIp" */
  readonly serving = new Map<string, { fe: Frontend; ip: string }>();
  writes = 0;
  /** Make the next apply() throw before writing anything. */
  failNext = false;
  /** A reader-visible inconsistency seen after some write, if any. */
  violation?: string;

  private readonly cap: { svc: number; backends: number; match: number; serving: number };

  constructor(cap: { svc: number; backends: number; match?: number; serving?: number } = { svc: 1 << 20, backends: 1 << 20 }) {
    this.cap = { match: 1 << 20, serving: 1 << 20, ...cap };
  }

  private static key(fe: Frontend, slot: number): SvcEntryKey {
    return `${fe.ip}:${fe.port}/${fe.proto}#${slot}`;
  }

  async read(): Promise<ActualServices> {
    const have: ActualServices = { masters: new Map(), slots: new Map(), backends: new Map(), matches: new Map(), serving: new Map() };
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
    for (const { fe, ip } of this.serving.values()) {
      const k = `${fe.ip}:${fe.port}/${fe.proto}`;
      let m = have.serving.get(k);
      if (!m) have.serving.set(k, (m = new Set()));
      m.add(ip);
    }
    return have;
  }

  async capacity(): Promise<{ svc: number; backends: number; match: number; serving: number }> {
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
    for (const x of p.servingUpsert)
      this.put(this.serving, `${x.fe.ip}:${x.fe.port}/${x.fe.proto}#${x.ip}`, { fe: { ...x.fe }, ip: x.ip }, this.cap.serving);
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
    for (const x of p.servingDelete) this.del(this.serving, `${x.fe.ip}:${x.fe.port}/${x.fe.proto}#${x.ip}`);
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
