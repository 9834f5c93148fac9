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

export const feKey = (f: Frontend): string => `${f.ip}:${f.port}/${f.proto}`;
export const beKey = (b: BackendAddr): string => `${b.ip}:${b.port}/${b.proto}`;

const ipNum = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const cmpAddr = (a: BackendAddr, b: BackendAddr) => ipNum(a.ip) - ipNum(b.ip) || a.port - b.port || a.proto - b.proto;

/**
 * Ready, non-terminating endpoints of every service port. A port is resolved
 * through the endpoint's (EndpointSlice's) port of the same name; without
 * one, a numeric targetPort (or the service port) is used; a named targetPort
 * the endpoint does not list cannot be resolved and that endpoint is left
 * out (reported in `unresolved`).
 */
export function desiredServices(snap: Snapshot): { services: Map<string, DesiredService>; unresolved: string[] } {
  const services = new Map<string, DesiredService>();
  const unresolved: string[] = [];
  for (const svc of snap.services) {
    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const fe: Frontend = { ip: svc.clusterIP, port: sp.port, proto };
      const seen = new Set<string>();
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
export function assignBackendIds(needed: Iterable<BackendAddr>, existing: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
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
 * Diff of desired services against the maps. `capacity` bounds both maps:
 * services that would not fit are left out whole (never half-written), in
 * a stable order, and named in `dropped`.
 */
export function planServices(
  want: Map<string, DesiredService>,
  have: ActualServices,
  capacity: { svc: number; backends: number },
): SvcPlan {
  const p: SvcPlan = { backendsUpsert: [], slotsUpsert: [], mastersUpsert: [], mastersDelete: [], slotsDelete: [], backendsDelete: [], dropped: [] };
  const existingIds = new Map([...have.backends].map(([id, b]) => [beKey(b), id]));
  // what fits: entries already there stay counted until pruned, so count the union
  let svcEntries = [...have.slots.values()].reduce((a, s) => a + s.size, 0) + have.masters.size;
  const backendKeys = new Set(existingIds.keys());
  const kept = new Map<string, DesiredService>();
  for (const key of [...want.keys()].sort()) {
    const s = want.get(key)!;
    const extraSvc = (have.masters.has(key) ? 0 : 1) + Math.max(0, s.backends.length - (have.slots.get(key)?.size ?? 0));
    const extraBe = s.backends.filter((b) => !backendKeys.has(beKey(b))).length;
    if (svcEntries + extraSvc > capacity.svc || backendKeys.size + extraBe > capacity.backends) {
      p.dropped.push(s.name);
      continue;
    }
    svcEntries += extraSvc;
    for (const b of s.backends) backendKeys.add(beKey(b));
    kept.set(key, s);
  }
  const ids = assignBackendIds([...kept.values()].flatMap((s) => s.backends), existingIds);
  for (const [k, id] of ids) {
    const cur = have.backends.get(id);
    if (!cur || beKey(cur) !== k) {
      const [addr = '', proto] = k.split('/');
      const i = addr.lastIndexOf(':');
      p.backendsUpsert.push({ id, b: { ip: addr.slice(0, i), port: Number(addr.slice(i + 1)), proto: Number(proto) as Proto } });
    }
  }
  for (const [key, s] of kept) {
    const cur = have.slots.get(key) ?? new Map<number, number>();
    s.backends.forEach((b, i) => {
      const id = ids.get(beKey(b))!;
      if (cur.get(i + 1) !== id) p.slotsUpsert.push({ fe: s.fe, slot: i + 1, id });
    });
    if (have.masters.get(key)?.count !== s.backends.length) p.mastersUpsert.push({ fe: s.fe, count: s.backends.length });
    for (const slot of cur.keys()) if (slot > s.backends.length) p.slotsDelete.push({ fe: s.fe, slot });
  }
  for (const [key, m] of have.masters) {
    if (kept.has(key)) continue;
    p.mastersDelete.push(m.fe);
    for (const slot of have.slots.get(key)?.keys() ?? []) p.slotsDelete.push({ fe: m.fe, slot });
  }
  // slots without a master (a crash between steps) are pruned too
  for (const [key, slots] of have.slots) {
    if (have.masters.has(key) || kept.has(key)) continue;
    const [addr = '', proto] = key.split('/');
    const i = addr.lastIndexOf(':');
    const fe = { ip: addr.slice(0, i), port: Number(addr.slice(i + 1)), proto: Number(proto) as Proto };
    for (const slot of slots.keys()) p.slotsDelete.push({ fe, slot });
  }
  const referenced = new Set(ids.values());
  for (const id of have.backends.keys()) if (!referenced.has(id)) p.backendsDelete.push(id);
  return p;
}
