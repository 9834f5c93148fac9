// One pass of the control loop: snapshot → facts → desired → read actual →
// plan → apply. I/O only at the two ends (facts/actual in, apply out).
import type { Datapath } from '../loader/datapath.js';
import { DEFAULT_OPTIONS, desired, withApplyOutcome, withServiceOutcome, type DesiredOptions, type DesiredState } from './pods/desired.js';
import { gatherFacts } from './facts/gather.js';
import { log } from '../host/log.js';
import type { Snapshot } from './model.js';
import { EP_FLAGS } from '../abi/schema.js';
import { errorMessage } from '../host/errors.js';
import { applyPlan, PodBackoff, readActual, type ApplyResult, type PodFailure } from './pods/apply.js';
import { plan, planSize, type Plan } from './pods/plan.js';
import { BpfServiceMaps } from './services/maps.js';
import { ServiceSync, svcOpsTotal, type SvcSyncResult } from './services/sync.js';
import { UNMATCHED_PORT } from './services/desired.js';

export interface ReconcileResult extends PodsResult {
  svc: SvcSyncResult;
}

/**
 * Logs each skipped object (pod, service, unresolvable endpoint…) once per
 * reason, not on every pass. Bounded: objects no longer around are forgotten
 * (forgetExcept), and past `cap` entries the oldest are.
 */
export class SkipLog {
  private seen = new Map<string, Set<string>>();
  constructor(private readonly cap = 50_000) {}
  /** True the first time this object is seen with this reason. */
  note(object: string, reason: string): boolean {
    let reasons = this.seen.get(object);
    if (reasons?.has(reason)) return false;
    if (!reasons) {
      if (this.seen.size >= this.cap) this.seen.delete(this.seen.keys().next().value!);
      this.seen.set(object, (reasons = new Set()));
    }
    reasons.add(reason);
    log.warn({ object, reason }, 'skipped');
    return true;
  }
  forgetExcept(objects: Set<string>): void {
    for (const k of this.seen.keys()) if (!objects.has(k)) this.seen.delete(k);
  }
}

export interface PodsResult {
  plan: Plan;
  /** What desired() made of the snapshot, with the pods the apply step left off (fail closed) moved to `disabled`. */
  desired: DesiredState;
  /** Pods desired() enables that this pass left on the normal path, and why (src/pods/apply.ts). */
  failed: Map<string, PodFailure>;
  /** Steps that failed (retried next pass); every other step of the pass was still applied. */
  errors: ApplyResult['errors'];
  /** Pods whose node facts are not there yet: the caller should retry soon. */
  missing: Map<string, string>;
  ms: number;
}

/**
 * The node-local part: endpoints, tc attachments, pod cgroup hooks and
 * pw_config (which depends on how many services were left out).
 */
export async function reconcilePods(
  dp: Datapath,
  snap: Snapshot,
  skips: SkipLog,
  opts: DesiredOptions,
  svcDropped: number,
  backoff = new PodBackoff(),
): Promise<PodsResult> {
  const t0 = performance.now();
  const facts = await gatherFacts(snap);
  const fromSnapshot = desired(snap, facts, opts);
  const want: DesiredState = { ...fromSnapshot, config: withServiceOutcome(fromSnapshot.config, opts, svcDropped) };
  const have = await readActual(dp);
  const p = plan(want, have);
  const applied = await applyPlan(dp, p, backoff);
  backoff.keepOnly(new Set([...want.endpoints.values()].filter((e) => e.flags & EP_FLAGS.ENABLED).map((e) => e.pod)));
  // what the pass really left: a pod that could not be enabled is disabled, and says why
  const left = withApplyOutcome(want, applied.failed);
  // connections the fast path could not take whole (one direction on TCP) leave pw_sock: see loader/sockdrain.ts
  try {
    await dp.sockets.drainPassthrough();
  } catch (e) {
    applied.errors.push({ step: 'drain passthrough sockets', err: errorMessage(e) });
  }
  for (const [pod, why] of facts.missing) skips.note(`pod ${pod}`, why);
  for (const [pod, why] of want.skipped) if (why !== 'facts-missing') skips.note(`pod ${pod}`, why);
  const ms = Math.round(performance.now() - t0);
  if (planSize(p) > 0) {
    log.info(
      {
        attach: p.attach.length,
        upsert: p.upsert.length,
        delete: p.delete.length,
        detach: p.detach.length,
        cgroups: p.cgroups.length,
        drained: p.drainIps.length,
        ...(applied.failed.size ? { failedPods: applied.failed.size } : {}),
        ...(applied.errors.length ? { failedSteps: applied.errors.length } : {}),
        ms,
      },
      'reconciled pods',
    );
  }
  return { plan: p, desired: left, failed: applied.failed, errors: applied.errors, missing: facts.missing, ms };
}

/** A full pass (the local source runs one per change): every service, then the node-local part. */
export async function reconcile(
  dp: Datapath,
  snap: Snapshot,
  skips = new SkipLog(),
  opts: DesiredOptions = DEFAULT_OPTIONS,
  sync = new ServiceSync(new BpfServiceMaps(dp)),
  backoff = new PodBackoff(),
): Promise<ReconcileResult> {
  const t0 = performance.now();
  sync.node = { name: snap.node, zone: snap.zone, masqueradeAll: snap.masqueradeAll };
  const svc = await sync.full(snap.services);
  if (svc.droppedNames.length)
    log.error({ services: svc.droppedNames }, 'service maps full: these services are left to kube-proxy (not written at all)');
  for (const u of svc.unresolved) skips.note(`endpoint ${u}`, UNMATCHED_PORT);
  const pods = await reconcilePods(dp, snap, skips, opts, svc.dropped, backoff);
  skips.forgetExcept(
    new Set(
      [...pods.missing.keys(), ...pods.desired.skipped.keys()].map((k) => `pod ${k}`).concat(svc.unresolved.map((u) => `endpoint ${u}`)),
    ),
  );
  const ms = Math.round(performance.now() - t0);
  if (svcOpsTotal(svc.ops) > 0) log.info({ svcOps: svcOpsTotal(svc.ops), ms }, 'reconciled services');
  if (planSize(pods.plan) + svcOpsTotal(svc.ops) > 0) log.info({ ms }, 'reconciled');
  return { ...pods, svc, ms };
}
