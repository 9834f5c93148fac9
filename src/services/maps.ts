// The service maps (pw_svc, pw_backends, pw_aff_match, pw_udp_serve) behind one interface: what
// ServiceSync reads back and writes. BpfServiceMaps is the kernel's pinned
// maps, through the datapath's map facade (loader/maps.ts); the tests'
// independent model of them is test/doubles/memory-service-maps.ts.
import type { Datapath } from '../../loader/datapath.js';
import type { MapOp } from '../../loader/maps.js';
import { feKey, type BackendAddr, type Frontend, type Proto } from './desired.js';
import type { ActualServices, SvcPlan } from './plan.js';

export interface ServiceMaps {
  /** Both maps as they are now. */
  read(): Promise<ActualServices>;
  /** Writes a plan in its order: backends → slots, matches → masters → prune. */
  apply(p: SvcPlan): Promise<void>;
  /** max_entries of pw_svc, pw_backends, pw_aff_match and pw_udp_serve. */
  capacity(): Promise<{ svc: number; backends: number; match: number; serving: number }>;
}

/** The pinned maps of a datapath. */
export class BpfServiceMaps implements ServiceMaps {
  constructor(private readonly dp: Datapath) {}

  /** Read through the map-dump iterators (one read() per map) when pinned, else `bpftool map dump`. */
  async read(): Promise<ActualServices> {
    const have: ActualServices = { masters: new Map(), slots: new Map(), backends: new Map(), matches: new Map(), serving: new Map() };
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
    await this.readSets('pw_aff_match', have.matches, (key) => Number(key.backend_id));
    await this.readSets('pw_udp_serve', have.serving, (key) => String(key.ep_ip));
    return have;
  }

  /** A membership map keyed by frontend and one member (pw_aff_match, pw_udp_serve) into frontend → members; nothing if not pinned. */
  private async readSets<T>(name: string, into: Map<string, Set<T>>, member: (key: Record<string, unknown>) => T): Promise<void> {
    if (!this.dp.pins.hasMap(name)) return;
    for (const e of await this.dp.maps.readAll(name)) {
      const k = feKey({ ip: String(e.key.ip), port: Number(e.key.port), proto: Number(e.key.proto) as Proto });
      let m = into.get(k);
      if (!m) into.set(k, (m = new Set()));
      m.add(member(e.key));
    }
  }

  /** One batch of the datapath's maps, its writes generated in the plan's order. */
  async apply(p: SvcPlan): Promise<void> {
    const am = (x: { fe: Frontend; id: number }) => ({ ip: x.fe.ip, port: x.fe.port, proto: x.fe.proto, backend_id: x.id });
    const us = (x: { fe: Frontend; ip: string }) => ({ ip: x.fe.ip, port: x.fe.port, proto: x.fe.proto, ep_ip: x.ip });
    const sk = (fe: Frontend, slot: number) => ({ ip: fe.ip, port: fe.port, proto: fe.proto, slot });
    const be = (b: BackendAddr) => ({ ip: b.ip, port: b.port, proto: b.proto });
    await this.dp.maps.batch(
      (function* (): Generator<MapOp> {
        for (const x of p.backendsUpsert) yield { map: 'pw_backends', key: { id: x.id }, value: be(x.b) };
        for (const x of p.slotsUpsert) yield { map: 'pw_svc', key: sk(x.fe, x.slot), value: { backend_id: x.id, count: 0 } };
        for (const x of p.matchesUpsert) yield { map: 'pw_aff_match', key: am(x), value: { present: 1 } };
        for (const x of p.servingUpsert) yield { map: 'pw_udp_serve', key: us(x), value: { present: 1 } };
        for (const x of p.mastersUpsert) yield { map: 'pw_svc', key: sk(x.fe, 0), value: { backend_id: x.affinity ?? 0, count: x.count } };
        for (const fe of p.mastersDelete) yield { map: 'pw_svc', key: sk(fe, 0) };
        for (const x of p.slotsDelete) yield { map: 'pw_svc', key: sk(x.fe, x.slot) };
        for (const x of p.matchesDelete) yield { map: 'pw_aff_match', key: am(x) };
        for (const x of p.servingDelete) yield { map: 'pw_udp_serve', key: us(x) };
        for (const id of p.backendsDelete) yield { map: 'pw_backends', key: { id } };
      })(),
    );
  }

  async capacity(): Promise<{ svc: number; backends: number; match: number; serving: number }> {
    return {
      svc: (await this.dp.maps.show('pw_svc')).max_entries,
      backends: (await this.dp.maps.show('pw_backends')).max_entries,
      match: (await this.dp.maps.show('pw_aff_match')).max_entries,
      serving: (await this.dp.maps.show('pw_udp_serve')).max_entries,
    };
  }
}
