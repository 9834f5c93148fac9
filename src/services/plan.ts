// The plan from desired services to pw_svc / pw_backends (and pw_aff_match
// for ClientIP affinity, pw_udp_serve for UDP frontends' serving endpoints):
// pure (backend ids, capacity, the diff). ServiceSync (sync.ts) writes it
// through a ServiceMaps (maps.ts) in the order a concurrent connect() can
// live with:
//   1. new backends   2. slots, then affinity matches and serving endpoints
//   3. master entries (counts, affinity timeout)   4. prune
// (removed masters first, then their slots and stale slots, then matches of
// backends that left a frontend and endpoints that stopped serving, then
// backends no slot points to any more). A flow stays on an endpoint that
// stopped serving until the prune: after the slots no longer name it.
// A reader that saw a master count always finds the slots below it and the
// backends they name; a match always names a backend that exists.
import { beKey, type BackendAddr, type DesiredService, type Frontend, type Proto } from './desired.js';

export interface ActualServices {
  /** feKey → count and ClientIP affinity timeout (s; absent: none) */
  masters: Map<string, { fe: Frontend; count: number; affinity?: number }>;
  /** feKey → slot → backend id */
  slots: Map<string, Map<number, number>>;
  /** id → address */
  backends: Map<number, BackendAddr>;
  /** feKey → backend ids in pw_aff_match (frontends with affinity) */
  matches: Map<string, Set<number>>;
  /** feKey → serving endpoint IPs in pw_udp_serve (UDP frontends) */
  serving: Map<string, Set<string>>;
}

export interface SvcPlan {
  backendsUpsert: { id: number; b: BackendAddr }[];
  slotsUpsert: { fe: Frontend; slot: number; id: number }[];
  /** `affinity` only when the frontend has ClientIP affinity */
  mastersUpsert: { fe: Frontend; count: number; affinity?: number }[];
  mastersDelete: Frontend[];
  slotsDelete: { fe: Frontend; slot: number }[];
  backendsDelete: number[];
  /** pw_aff_match entries to add (step 2, after the slots) and remove (prune, before backends) */
  matchesUpsert: { fe: Frontend; id: number }[];
  matchesDelete: { fe: Frontend; id: number }[];
  /** pw_udp_serve entries to add (step 2) and remove (prune) */
  servingUpsert: { fe: Frontend; ip: string }[];
  servingDelete: { fe: Frontend; ip: string }[];
  /** services left out whole because the maps would not hold them */
  dropped: string[];
}

export function svcPlanSize(p: SvcPlan): number {
  return (
    p.backendsUpsert.length +
    p.slotsUpsert.length +
    p.mastersUpsert.length +
    p.mastersDelete.length +
    p.slotsDelete.length +
    p.backendsDelete.length +
    p.matchesUpsert.length +
    p.matchesDelete.length +
    p.servingUpsert.length +
    p.servingDelete.length
  );
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
  /** pw_aff_match entries */
  matchEntries: number;
  /** pw_udp_serve entries */
  servingEntries: number;
}

export function indexServices(have: ActualServices): ServiceIndex {
  const idByAddr = new Map([...have.backends].map(([id, b]) => [beKey(b), id]));
  const refs = new Map<number, number>();
  let entries = have.masters.size;
  for (const slots of have.slots.values()) {
    entries += slots.size;
    for (const id of slots.values()) refs.set(id, (refs.get(id) ?? 0) + 1);
  }
  let matchEntries = 0;
  for (const m of have.matches.values()) matchEntries += m.size;
  let servingEntries = 0;
  for (const m of have.serving.values()) servingEntries += m.size;
  return { idByAddr, refs, entries, matchEntries, servingEntries };
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
  capacity: {
    svc: number;
    backends: number;
    /** pw_aff_match; absent: unbounded */ match?: number;
    /** pw_udp_serve; absent: unbounded */ serving?: number;
  },
  scope?: Set<string>,
  index: ServiceIndex = indexServices(have),
): SvcPlan {
  const p: SvcPlan = {
    backendsUpsert: [],
    slotsUpsert: [],
    mastersUpsert: [],
    mastersDelete: [],
    slotsDelete: [],
    backendsDelete: [],
    matchesUpsert: [],
    matchesDelete: [],
    servingUpsert: [],
    servingDelete: [],
    dropped: [],
  };
  const keys =
    scope ?? new Set([...want.keys(), ...have.masters.keys(), ...have.slots.keys(), ...have.matches.keys(), ...have.serving.keys()]);
  // what fits: entries already there stay counted until pruned, so count the union
  let svcEntries = index.entries;
  let matchEntries = index.matchEntries;
  let servingEntries = index.servingEntries;
  const addedBackends = new Set<number>();
  const kept = new Map<string, DesiredService>();
  for (const key of [...keys].sort()) {
    const s = want.get(key);
    if (!s) continue;
    const extraSvc = (have.masters.has(key) ? 0 : 1) + Math.max(0, s.backends.length - (have.slots.get(key)?.size ?? 0));
    const fresh = s.backends.map(beKey).filter((k) => !index.idByAddr.has(k) && !addedBackends.has(k));
    const extraMatch = s.affinity ? Math.max(0, s.backends.length - (have.matches.get(key)?.size ?? 0)) : 0;
    const extraServing = Math.max(0, (s.serving?.length ?? 0) - (have.serving.get(key)?.size ?? 0));
    if (
      svcEntries + extraSvc > capacity.svc ||
      index.idByAddr.size + addedBackends.size + fresh.length > capacity.backends ||
      matchEntries + extraMatch > (capacity.match ?? Infinity) ||
      servingEntries + extraServing > (capacity.serving ?? Infinity)
    ) {
      p.dropped.push(s.name);
      continue;
    }
    svcEntries += extraSvc;
    matchEntries += extraMatch;
    servingEntries += extraServing;
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
    const m = have.masters.get(key);
    if (m?.count !== s.backends.length || (m.affinity ?? 0) !== (s.affinity ?? 0))
      p.mastersUpsert.push(
        s.affinity ? { fe: s.fe, count: s.backends.length, affinity: s.affinity } : { fe: s.fe, count: s.backends.length },
      );
    for (const slot of cur.keys()) if (slot > s.backends.length) p.slotsDelete.push({ fe: s.fe, slot });
    // affinity matches: exactly the frontend's backend ids while it has affinity
    const wantMatch = new Set(s.affinity ? s.backends.map((b) => ids.get(beKey(b))!) : []);
    const haveMatch = have.matches.get(key) ?? new Set<number>();
    for (const id of wantMatch) if (!haveMatch.has(id)) p.matchesUpsert.push({ fe: s.fe, id });
    for (const id of haveMatch) if (!wantMatch.has(id)) p.matchesDelete.push({ fe: s.fe, id });
    // serving endpoints: exactly the frontend's (UDP frontends)
    const wantServing = new Set(s.serving ?? []);
    const haveServing = have.serving.get(key) ?? new Set<string>();
    for (const ip of wantServing) if (!haveServing.has(ip)) p.servingUpsert.push({ fe: s.fe, ip });
    for (const ip of haveServing) if (!wantServing.has(ip)) p.servingDelete.push({ fe: s.fe, ip });
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
    const matches = have.matches.get(key);
    if (matches) {
      const fe = m?.fe ?? parseAddr(key);
      for (const id of matches) p.matchesDelete.push({ fe, id });
    }
    const serving = have.serving.get(key);
    if (serving) {
      const fe = m?.fe ?? parseAddr(key);
      for (const ip of serving) p.servingDelete.push({ fe, ip });
    }
  }
  const unreferenced = (id: number) => (index.refs.get(id) ?? 0) + (delta.get(id) ?? 0) <= 0 && !taken.has(id);
  const candidates = scope ? delta.keys() : have.backends.keys();
  for (const id of candidates) if (have.backends.has(id) && unreferenced(id)) p.backendsDelete.push(id);
  return p;
}
