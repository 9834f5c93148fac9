// Services → pw_svc / pw_backends (and pw_aff_match, pw_udp_serve), full or one changed Service at a time.
//
// full():    read both maps back from the kernel, plan every frontend, apply.
//            Used at start (a restarted agent rewrites nothing unchanged), on
//            every --full-resync, and after any failed write.
// changed(): plan only the frontends of the changed Services against the
//            mirror: the last read-back plus exactly what was written since
//            (mirror.ts applyToMirror). O(changed), not O(maps), which
//            is what keeps one change well under 100 ms at 10,000 Services.
import type { Service } from '../model.js';
import {
  desiredServices,
  frontendKeys,
  FRONTEND_KINDS,
  LEFT_REASONS,
  type DesiredService,
  type FrontendKind,
  type LeftReason,
  type NodeTopology,
} from './desired.js';
import type { ServiceMaps } from './maps.js';
import { applyToMirror } from './mirror.js';
import { indexServices, planServices, type ActualServices, type ServiceIndex, type SvcPlan } from './plan.js';

export interface SvcOps {
  backendsUpsert: number;
  slotsUpsert: number;
  mastersUpsert: number;
  /** pw_aff_match entries added (ClientIP affinity) */
  matchesUpsert: number;
  /** pw_udp_serve entries added (serving endpoints of UDP frontends) */
  servingUpsert: number;
  /** masters, slots, affinity matches, serving endpoints and backends removed */
  deletes: number;
}

export interface SvcSyncResult {
  ops: SvcOps;
  /** Services (namespace/name:port) this pass left out for want of map space. */
  droppedNames: string[];
  /** Frontends left out, in total (not only this pass). */
  dropped: number;
  /** Frontends written without a backend, left to kube-proxy, by reason (in total). */
  left: Record<LeftReason, number>;
  /** Endpoints whose named target port could not be resolved (this pass). */
  unresolved: string[];
  full: boolean;
  frontends: number;
}

export const svcOpsTotal = (o: SvcOps): number =>
  o.backendsUpsert + o.slotsUpsert + o.mastersUpsert + o.matchesUpsert + o.servingUpsert + o.deletes;
const noOps = (): SvcOps => ({ backendsUpsert: 0, slotsUpsert: 0, mastersUpsert: 0, matchesUpsert: 0, servingUpsert: 0, deletes: 0 });
const addOps = (o: SvcOps, p: SvcPlan) => {
  o.backendsUpsert += p.backendsUpsert.length;
  o.slotsUpsert += p.slotsUpsert.length;
  o.mastersUpsert += p.mastersUpsert.length;
  o.matchesUpsert += p.matchesUpsert.length;
  o.servingUpsert += p.servingUpsert.length;
  o.deletes += p.mastersDelete.length + p.slotsDelete.length + p.matchesDelete.length + p.servingDelete.length + p.backendsDelete.length;
};
const emptyPlan = (): SvcPlan => ({
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
});

const svcKey = (s: Service) => `${s.namespace}/${s.name}`;

export class ServiceSync {
  private have?: ActualServices;
  private index?: ServiceIndex;
  /** Service → the frontends it produced last time. */
  private feBySvc = new Map<string, string[]>();
  /** Frontend → the Service that wrote it last (a ClusterIP can move from a deleted Service to a new one). */
  private owner = new Map<string, string>();
  /** Frontend → name, for the frontends left out. */
  private dropped = new Map<string, string>();
  /** Frontend → name and reason, for the frontends left to kube-proxy (no usable backend here). */
  private leftFe = new Map<string, { name: string; reason: LeftReason }>();
  /** Frontend → its Service (namespace/name:port) and kind, for every frontend written (not the dropped ones). */
  private info = new Map<string, { name: string; kind: FrontendKind }>();

  /**
   * @param node this node's name and zone: the endpoints a Service resolves to
   * depend on them (internalTrafficPolicy Local, topology hints). A change of
   * either needs a full pass.
   */
  constructor(
    private readonly maps: ServiceMaps,
    public node: NodeTopology = {},
  ) {}

  /** The frontends left to kube-proxy now, with the reason, sorted by name. */
  leftServices(): { frontend: string; name: string; reason: LeftReason; kind: FrontendKind }[] {
    return [...this.leftFe]
      .map(([frontend, v]) => ({ frontend, ...v, kind: this.info.get(frontend)?.kind ?? 'cluster' }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  leftCounts(): Record<LeftReason, number> {
    const c = Object.fromEntries(LEFT_REASONS.map((r) => [r, 0])) as Record<LeftReason, number>;
    for (const v of this.leftFe.values()) c[v.reason]++;
    return c;
  }

  /** Frontends written, by kind (the left ones included). */
  kindCounts(): Record<FrontendKind, number> {
    const c = Object.fromEntries(FRONTEND_KINDS.map((k) => [k, 0])) as Record<FrontendKind, number>;
    for (const v of this.info.values()) c[v.kind]++;
    return c;
  }

  /** The first `max` frontends written with their Service and kind: every external and LoadBalancer one first, then ClusterIPs, by name. */
  namedFrontends(max: number): { frontend: string; name: string; kind: FrontendKind }[] {
    const rank = (k: FrontendKind) => (k === 'cluster' ? 1 : 0);
    return [...this.info]
      .map(([frontend, v]) => ({ frontend, ...v }))
      .sort((a, b) => rank(a.kind) - rank(b.kind) || a.name.localeCompare(b.name) || a.frontend.localeCompare(b.frontend))
      .slice(0, max);
  }

  private noteLeft(scope: Iterable<string>, want: Map<string, DesiredService>): void {
    for (const fe of scope) {
      this.leftFe.delete(fe);
      this.info.delete(fe);
    }
    for (const [k, d] of want) {
      if (this.dropped.has(k)) continue;
      this.info.set(k, { name: d.name, kind: d.kind });
      if (d.left) this.leftFe.set(k, { name: d.name, reason: d.left });
    }
  }

  /** A mirror exists (a full pass succeeded and no write failed since). */
  get ready(): boolean {
    return this.have !== undefined;
  }

  get droppedCount(): number {
    return this.dropped.size;
  }

  get frontends(): number {
    return this.have?.masters.size ?? 0;
  }

  private static desired(
    services: Service[],
    node: NodeTopology,
  ): { want: Map<string, DesiredService>; bySvc: Map<string, string[]>; unresolved: string[] } {
    const want = new Map<string, DesiredService>();
    const bySvc = new Map<string, string[]>();
    const unresolved: string[] = [];
    for (const s of services) {
      const d = desiredServices({ services: [s], node: node.name, zone: node.zone, masqueradeAll: node.masqueradeAll });
      unresolved.push(...d.unresolved);
      bySvc.set(svcKey(s), [...d.services.keys()]);
      for (const [k, v] of d.services) want.set(k, v);
    }
    return { want, bySvc, unresolved };
  }

  private async apply(p: SvcPlan): Promise<void> {
    try {
      await this.maps.apply(p);
    } catch (e) {
      // what the kernel holds is unknown now: the next pass reads it back
      this.have = undefined;
      this.index = undefined;
      throw e;
    }
    applyToMirror(this.have!, this.index!, p);
  }

  /**
   * Read both maps back, then converge every Service. Done in chunks (each a
   * scoped pass against the fresh read-back) so 10,000 Services never sit in
   * memory as one desired state and one plan; frontends nobody wants any more
   * go first (they free room), backends no slot points to go last.
   */
  async full(services: Service[], chunk = 1000): Promise<SvcSyncResult> {
    this.have = undefined;
    const have = await this.maps.read();
    const index = indexServices(have);
    this.have = have;
    this.index = index;
    this.feBySvc = new Map();
    this.owner = new Map();
    this.dropped = new Map();
    this.leftFe = new Map();
    this.info = new Map();
    const cap = await this.maps.capacity();
    const ops = noOps();
    const droppedNames: string[] = [];
    const unresolved: string[] = [];
    const wanted = new Set<string>();
    for (const s of services) for (const k of frontendKeys(s)) wanted.add(k);
    const stale = new Set(
      [...have.masters.keys(), ...have.slots.keys(), ...have.matches.keys(), ...have.serving.keys()].filter((k) => !wanted.has(k)),
    );
    if (stale.size) {
      const p = planServices(new Map(), have, cap, stale, index);
      await this.apply(p);
      addOps(ops, p);
    }
    for (let i = 0; i < services.length; i += chunk) {
      const part = services.slice(i, i + chunk);
      const { want, bySvc, unresolved: u } = ServiceSync.desired(part, this.node);
      unresolved.push(...u);
      const p = planServices(want, have, cap, new Set(want.keys()), index);
      await this.apply(p);
      addOps(ops, p);
      droppedNames.push(...p.dropped);
      for (const [svc, fes] of bySvc) {
        this.feBySvc.set(svc, fes);
        for (const fe of fes) this.owner.set(fe, svc);
      }
      const names = new Set(p.dropped);
      for (const [k, d] of want) if (names.has(d.name)) this.dropped.set(k, d.name);
      this.noteLeft([], want);
    }
    // backends no slot points to (left by a crash between steps)
    const orphans = [...have.backends.keys()].filter((id) => !index.refs.get(id));
    if (orphans.length) {
      const p = { ...emptyPlan(), backendsDelete: orphans };
      await this.apply(p);
      addOps(ops, p);
    }
    return { ops, droppedNames, dropped: this.dropped.size, left: this.leftCounts(), unresolved, full: true, frontends: this.frontends };
  }

  /** Only the given Services (namespace/name → current object, or undefined when deleted or not load-balanced). */
  async changed(changes: Map<string, Service | undefined>): Promise<SvcSyncResult> {
    if (!this.have || !this.index) throw new Error('ServiceSync.changed() before a full pass');
    const { want, bySvc, unresolved } = ServiceSync.desired(
      [...changes.values()].filter((s): s is Service => s !== undefined),
      this.node,
    );
    const scope = new Set<string>(want.keys());
    for (const key of changes.keys()) {
      for (const fe of this.feBySvc.get(key) ?? []) {
        // a frontend another Service has taken over since is not this one's to delete
        if (this.owner.get(fe) === key) scope.add(fe);
      }
    }
    const p = planServices(want, this.have, await this.maps.capacity(), scope, this.index);
    await this.apply(p);
    for (const key of changes.keys()) {
      for (const fe of this.feBySvc.get(key) ?? []) if (this.owner.get(fe) === key) this.owner.delete(fe);
      const fes = bySvc.get(key);
      if (fes) this.feBySvc.set(key, fes);
      else this.feBySvc.delete(key);
      for (const fe of fes ?? []) this.owner.set(fe, key);
    }
    for (const fe of scope) this.dropped.delete(fe);
    const names = new Set(p.dropped);
    for (const [k, d] of want) if (names.has(d.name)) this.dropped.set(k, d.name);
    this.noteLeft(scope, want);
    const ops = noOps();
    addOps(ops, p);
    return {
      ops,
      droppedNames: p.dropped,
      dropped: this.dropped.size,
      left: this.leftCounts(),
      unresolved,
      full: false,
      frontends: this.frontends,
    };
  }
}
