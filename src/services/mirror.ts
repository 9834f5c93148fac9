// The agent's mirror of pw_svc/pw_backends between full read-backs: the
// last read-back plus exactly what the agent wrote since.
import { beKey, feKey } from './desired.js';
import type { ActualServices, ServiceIndex, SvcPlan } from './plan.js';

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
  for (const { fe, count, affinity } of p.mastersUpsert) {
    const k = feKey(fe);
    if (!have.masters.has(k)) index.entries++;
    have.masters.set(k, affinity ? { fe, count, affinity } : { fe, count });
  }
  for (const { fe, id } of p.matchesUpsert) if (setAdd(have.matches, feKey(fe), id)) index.matchEntries++;
  for (const { fe, id } of p.matchesDelete) if (setDelete(have.matches, feKey(fe), id)) index.matchEntries--;
  for (const { fe, ip } of p.servingUpsert) if (setAdd(have.serving, feKey(fe), ip)) index.servingEntries++;
  for (const { fe, ip } of p.servingDelete) if (setDelete(have.serving, feKey(fe), ip)) index.servingEntries--;
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

/** Adds v to the set of k; whether it is new. */
function setAdd<T>(m: Map<string, Set<T>>, k: string, v: T): boolean {
  let set = m.get(k);
  if (!set) m.set(k, (set = new Set()));
  if (set.has(v)) return false;
  set.add(v);
  return true;
}

/** Removes v from the set of k (an empty set goes); whether it was there. */
function setDelete<T>(m: Map<string, Set<T>>, k: string, v: T): boolean {
  const set = m.get(k);
  if (!set?.delete(v)) return false;
  if (set.size === 0) m.delete(k);
  return true;
}
