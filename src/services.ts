// Services → pw_svc / pw_backends. Pure functions (desired, id assignment,
// plan); the reconciler reads the maps back and applies the plan in the
// order a concurrent connect() can live with:
//   1. new backends   2. slots   3. master entries (counts)   4. prune
// (removed masters first, then their slots and stale slots, then backends no
// slot points to any more). A reader that saw a master count always finds
// the slots below it and the backends they name.
import { PROTO } from './layout/schema.js';
import type { Service, Snapshot } from './model.js';

export type Proto = (typeof PROTO)[keyof typeof PROTO];

export interface Frontend {
  ip: string;
  port: number;
  proto: Proto;
}

export interface BackendAddr {
  ip: string;
  port: number;
  proto: Proto;
}

export interface DesiredService {
  fe: Frontend;
  /** "namespace/name:port-name" for humans */
  name: string;
  backends: BackendAddr[];
}

const ipNum = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);

export const feKey = (f: Frontend): string => `${f.ip}:${f.port}/${f.proto}`;
/**
 * A backend address as one number (IPv4 · port · TCP/UDP, 49 bits): map keys
 * for 100,000 backends cost a fraction of what string keys do.
 */
export const beKey = (b: BackendAddr): number => ipNum(b.ip) * 131072 + b.port * 2 + (b.proto === PROTO.UDP ? 1 : 0);

const cmpAddr = (a: BackendAddr, b: BackendAddr) => ipNum(a.ip) - ipNum(b.ip) || a.port - b.port || a.proto - b.proto;

/**
 * Ready, non-terminating endpoints of every service port. A port is resolved
 * through the endpoint's (EndpointSlice's) port of the same name; without
 * one, a numeric targetPort (or the service port) is used; a named targetPort
 * the endpoint does not list cannot be resolved and that endpoint is left
 * out (reported in `unresolved`).
 */
export function desiredServices(snap: Pick<Snapshot, 'services'>): { services: Map<string, DesiredService>; unresolved: string[] } {
  const services = new Map<string, DesiredService>();
  const unresolved: string[] = [];
  for (const svc of snap.services) {
    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const fe: Frontend = { ip: svc.clusterIP, port: sp.port, proto };
      const seen = new Set<number>();
      const backends: BackendAddr[] = [];
      for (const e of svc.endpoints) {
        if (!e.ready || e.terminating) continue; // never chosen for new connections
        const port = resolvePort(svc, sp, e);
        if (port === undefined) {
          unresolved.push(`${svc.namespace}/${svc.name}:${sp.name ?? sp.port} → ${e.ip}`);
          continue;
        }
        const b = { ip: e.ip, port, proto };
        if (!seen.has(beKey(b))) backends.push(b);
        seen.add(beKey(b));
      }
      backends.sort(cmpAddr);
      services.set(feKey(fe), { fe, name: `${svc.namespace}/${svc.name}:${sp.name ?? sp.port}`, backends });
    }
  }
  return { services, unresolved };
}

function resolvePort(svc: Service, sp: Service['ports'][number], e: Service['endpoints'][number]): number | undefined {
  const named = e.ports.find((p) => (p.name ?? '') === (sp.name ?? '') && p.protocol === sp.protocol);
  if (named) return named.port;
  if (typeof sp.targetPort === 'number') return sp.targetPort;
  if (sp.targetPort === undefined) return sp.port;
  return undefined;
}

/** Keeps the ids backends already have; new ones get the smallest free ids (1..). */
export function assignBackendIds(needed: Iterable<BackendAddr>, existing: Map<number, number>): Map<number, number> {
  const out = new Map<number, number>();
  const used = new Set(existing.values());
  let next = 1;
  const fresh: BackendAddr[] = [];
  for (const b of needed) {
    const k = beKey(b);
    if (out.has(k)) continue;
    const id = existing.get(k);
    if (id !== undefined) out.set(k, id);
    else fresh.push(b);
  }
  for (const b of fresh) {
    const k = beKey(b);
    if (out.has(k)) continue;
    while (used.has(next)) next++;
    out.set(k, next);
    used.add(next);
  }
  return out;
}

export interface ActualServices {
  /** feKey → count */
  masters: Map<string, { fe: Frontend; count: number }>;
  /** feKey → slot → backend id */
  slots: Map<string, Map<number, number>>;
  /** id → address */
  backends: Map<number, BackendAddr>;
}

export interface SvcPlan {
  backendsUpsert: { id: number; b: BackendAddr }[];
  slotsUpsert: { fe: Frontend; slot: number; id: number }[];
  mastersUpsert: { fe: Frontend; count: number }[];
  mastersDelete: Frontend[];
  slotsDelete: { fe: Frontend; slot: number }[];
  backendsDelete: number[];
  /** services left out whole because the maps would not hold them */
  dropped: string[];
}

export function svcPlanSize(p: SvcPlan): number {
  return p.backendsUpsert.length + p.slotsUpsert.length + p.mastersUpsert.length + p.mastersDelete.length + p.slotsDelete.length + p.backendsDelete.length;
}

/**
 * Derived from ActualServices, kept next to it so a scoped pass costs
 * O(changed) instead of O(maps): address → backend id, slots per backend id,
 * and the number of pw_svc entries (masters + slots).
 */
export interface ServiceIndex {
  idByAddr: Map<number, number>;
  refs: Map<number, number>;
  entries: number;
}

export function indexServices(have: ActualServices): ServiceIndex {
  const idByAddr = new Map([...have.backends].map(([id, b]) => [beKey(b), id]));
  const refs = new Map<number, number>();
  let entries = have.masters.size;
  for (const slots of have.slots.values()) {
    entries += slots.size;
    for (const id of slots.values()) refs.set(id, (refs.get(id) ?? 0) + 1);
  }
  return { idByAddr, refs, entries };
}

const parseAddr = (k: string): BackendAddr => {
  const [addr = '', proto] = k.split('/');
  const i = addr.lastIndexOf(':');
  return { ip: addr.slice(0, i), port: Number(addr.slice(i + 1)), proto: Number(proto) as Proto };
};

/**
 * Diff of desired services against the maps. `capacity` bounds both maps:
 * services that would not fit are left out whole (never half-written), in
 * a stable order, and named in `dropped`.
 *
 * `scope` limits the pass to some frontends (a change to a few Services):
 * `want` then only needs those keys (a key in scope but not in `want` is
 * deleted), every other frontend is left as it is, and a backend is pruned
 * only when no slot anywhere points to it any more. Without `scope` every
 * frontend of `want` and of the maps is planned (a full pass).
 */
export function planServices(
  want: Map<string, DesiredService>,
  have: ActualServices,
  capacity: { svc: number; backends: number },
  scope?: Set<string>,
  index: ServiceIndex = indexServices(have),
): SvcPlan {
  const p: SvcPlan = { backendsUpsert: [], slotsUpsert: [], mastersUpsert: [], mastersDelete: [], slotsDelete: [], backendsDelete: [], dropped: [] };
  const keys = scope ?? new Set([...want.keys(), ...have.masters.keys(), ...have.slots.keys()]);
  // what fits: entries already there stay counted until pruned, so count the union
  let svcEntries = index.entries;
  const addedBackends = new Set<number>();
  const kept = new Map<string, DesiredService>();
  for (const key of [...keys].sort()) {
    const s = want.get(key);
    if (!s) continue;
    const extraSvc = (have.masters.has(key) ? 0 : 1) + Math.max(0, s.backends.length - (have.slots.get(key)?.size ?? 0));
    const fresh = s.backends.map(beKey).filter((k) => !index.idByAddr.has(k) && !addedBackends.has(k));
    if (svcEntries + extraSvc > capacity.svc || index.idByAddr.size + addedBackends.size + fresh.length > capacity.backends) {
      p.dropped.push(s.name);
      continue;
    }
    svcEntries += extraSvc;
    for (const k of fresh) addedBackends.add(k);
    kept.set(key, s);
  }
  // ids: existing ones are kept, new addresses get the smallest free ids (1..)
  const ids = new Map<number, number>();
  const taken = new Set<number>();
  let next = 1;
  for (const s of kept.values()) {
    for (const b of s.backends) {
      const k = beKey(b);
      if (ids.has(k)) continue;
      let id = index.idByAddr.get(k);
      if (id === undefined) {
        while (have.backends.has(next) || taken.has(next)) next++;
        id = next;
        p.backendsUpsert.push({ id, b });
      }
      ids.set(k, id);
      taken.add(id);
    }
  }
  // slot references after the plan, for the backends this pass touches
  const delta = new Map<number, number>();
  const bump = (id: number, d: number) => delta.set(id, (delta.get(id) ?? 0) + d);
  for (const key of keys) for (const id of have.slots.get(key)?.values() ?? []) bump(id, -1);
  for (const [key, s] of kept) {
    const cur = have.slots.get(key) ?? new Map<number, number>();
    s.backends.forEach((b, i) => {
      const id = ids.get(beKey(b))!;
      bump(id, 1);
      if (cur.get(i + 1) !== id) p.slotsUpsert.push({ fe: s.fe, slot: i + 1, id });
    });
    if (have.masters.get(key)?.count !== s.backends.length) p.mastersUpsert.push({ fe: s.fe, count: s.backends.length });
    for (const slot of cur.keys()) if (slot > s.backends.length) p.slotsDelete.push({ fe: s.fe, slot });
  }
  for (const key of keys) {
    if (kept.has(key)) continue;
    const m = have.masters.get(key);
    if (m) p.mastersDelete.push(m.fe);
    // slots without a master (a crash between steps) are pruned too
    const slots = have.slots.get(key);
    if (slots) {
      const fe = m?.fe ?? parseAddr(key);
      for (const slot of slots.keys()) p.slotsDelete.push({ fe, slot });
    }
  }
  const unreferenced = (id: number) => (index.refs.get(id) ?? 0) + (delta.get(id) ?? 0) <= 0 && !taken.has(id);
  const candidates = scope ? delta.keys() : have.backends.keys();
  for (const id of candidates) if (have.backends.has(id) && unreferenced(id)) p.backendsDelete.push(id);
  return p;
}

/** The maps after `p` was applied to them (mutates `have` and `index`): the agent's mirror between full read-backs. */
export function applyToMirror(have: ActualServices, index: ServiceIndex, p: SvcPlan): void {
  for (const { id, b } of p.backendsUpsert) {
    const old = have.backends.get(id);
    if (old) index.idByAddr.delete(beKey(old));
    have.backends.set(id, b);
    index.idByAddr.set(beKey(b), id);
  }
  const ref = (id: number, d: number) => {
    const n = (index.refs.get(id) ?? 0) + d;
    if (n > 0) index.refs.set(id, n);
    else index.refs.delete(id);
  };
  for (const { fe, slot, id } of p.slotsUpsert) {
    const k = feKey(fe);
    let slots = have.slots.get(k);
    if (!slots) have.slots.set(k, (slots = new Map()));
    const old = slots.get(slot);
    if (old === undefined) index.entries++;
    else ref(old, -1);
    slots.set(slot, id);
    ref(id, 1);
  }
  for (const { fe, count } of p.mastersUpsert) {
    const k = feKey(fe);
    if (!have.masters.has(k)) index.entries++;
    have.masters.set(k, { fe, count });
  }
  for (const fe of p.mastersDelete) if (have.masters.delete(feKey(fe))) index.entries--;
  for (const { fe, slot } of p.slotsDelete) {
    const k = feKey(fe);
    const slots = have.slots.get(k);
    const old = slots?.get(slot);
    if (old === undefined) continue;
    slots!.delete(slot);
    if (slots!.size === 0) have.slots.delete(k);
    index.entries--;
    ref(old, -1);
  }
  for (const id of p.backendsDelete) {
    const old = have.backends.get(id);
    if (old && index.idByAddr.get(beKey(old)) === id) index.idByAddr.delete(beKey(old));
    have.backends.delete(id);
  }
}
