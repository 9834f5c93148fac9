// One pass of the control loop: snapshot → facts → desired → read actual →
// plan → apply. I/O only at the two ends (facts/actual in, apply out).
import type { Datapath } from '../loader/datapath.js';
import { DEFAULT_OPTIONS, desired, withServiceOutcome, type DesiredOptions, type DesiredState } from './desired.js';
import { gatherFacts } from './facts.js';
import { log } from './log.js';
import type { Snapshot } from './model.js';
import { plan, planSize, type ActualState, type Plan } from './plan.js';
import { desiredServices, planServices, svcPlanSize, type SvcPlan } from './services.js';

export interface ReconcileResult {
  plan: Plan;
  services: SvcPlan;
  desired: DesiredState;
  /** Pods whose node facts are not there yet: the caller should retry soon. */
  missing: Map<string, string>;
  ms: number;
}

export async function readActual(dp: Datapath): Promise<ActualState> {
  const endpoints = new Map(
    (await dp.dump('pw_endpoints')).map((e) => {
      const ip = String(e.key.ip);
      return [
        ip,
        { ip, ifindex: Number(e.value.ifindex), flags: Number(e.value.flags), mac: String(e.value.mac), gwMac: String(e.value.gw_mac) },
      ];
    }),
  );
  const cgroups = (await dp.cgroupAttachments()).map((c) => ({
    path: c.path,
    // what is really attached (a hook someone removed gets re-attached)
    hooks: c.present ? c.liveHooks : -1,
  }));
  return { endpoints, ifaces: await dp.attachments(), cgroups, config: await dp.readConfig() };
}

/**
 * Order matters: a pod is only an endpoint of the socket fast path once its
 * map entry says so, and stops being one (its sockets drained out of pw_sock
 * with no byte lost) before its entry goes away.
 */
export async function applyPlan(dp: Datapath, p: Plan, svc?: SvcPlan): Promise<void> {
  const stale = p.detach.filter((i) => !i.present);
  for (const i of stale) await dp.detach(i);
  for (const a of p.attach) await dp.attach(a.name);
  if (p.config) await dp.writeConfig(p.config);
  await dp.writeMap(
    'pw_endpoints',
    p.upsert.map((e) => ({ key: { ip: e.ip }, value: { ifindex: e.ifindex, flags: e.flags, mac: e.mac, gw_mac: e.gwMac } })),
    [],
  );
  if (svc) await dp.applyServices(svc);
  for (const c of p.cgroups.filter((x) => x.hooks !== 0)) await dp.setCgroupHooks(c.path, c.hooks);
  for (const c of p.cgroups.filter((x) => x.hooks === 0)) await dp.setCgroupHooks(c.path, 0);
  if (p.drainIps.length) {
    const ips = new Set(p.drainIps);
    await dp.drainSockets((k) => ips.has(String(k.sip)) || ips.has(String(k.dip)));
  }
  await dp.writeMap('pw_endpoints', [], p.delete.map((ip) => ({ ip })));
  for (const i of p.detach.filter((x) => x.present)) await dp.detach(i);
}

/** Logs each skipped pod (or unresolvable endpoint) once per reason change, not on every pass. */
export class SkipLog {
  private seen = new Map<string, string>();
  note(pod: string, reason: string): void {
    if (this.seen.get(pod) === reason) return;
    this.seen.set(pod, reason);
    log.warn({ pod, reason }, 'pod not accelerated');
  }
  forgetExcept(pods: Set<string>): void {
    for (const k of this.seen.keys()) if (!pods.has(k)) this.seen.delete(k);
  }
}

export async function reconcile(dp: Datapath, snap: Snapshot, skips = new SkipLog(), opts: DesiredOptions = DEFAULT_OPTIONS): Promise<ReconcileResult> {
  const t0 = performance.now();
  const facts = await gatherFacts(snap);
  const want = desired(snap, facts, opts);
  const have = await readActual(dp);
  const svcWant = desiredServices(snap);
  const svc = planServices(svcWant.services, await dp.readServices(), await dp.serviceCapacity());
  want.config = withServiceOutcome(want.config, opts, svc.dropped.length);
  const p = plan(want, have);
  if (svc.dropped.length) log.error({ services: svc.dropped }, 'service maps full: these services are left to kube-proxy (not written at all)');
  for (const u of svcWant.unresolved) skips.note(`endpoint ${u}`, 'named target port not found in the endpoint ports');
  await applyPlan(dp, p, svc);
  // connections the fast path could not take whole (one direction on TCP) leave pw_sock: see loader drainSockets
  await dp.drainPassthrough();
  for (const [pod, why] of facts.missing) skips.note(pod, why);
  for (const [pod, why] of want.skipped) if (why !== 'facts-missing') skips.note(pod, why);
  skips.forgetExcept(new Set([...facts.missing.keys(), ...want.skipped.keys(), ...svcWant.unresolved.map((u) => `endpoint ${u}`)]));
  const ms = Math.round(performance.now() - t0);
  if (planSize(p) + svcPlanSize(svc) > 0) {
    log.info(
      { attach: p.attach.length, upsert: p.upsert.length, delete: p.delete.length, detach: p.detach.length, cgroups: p.cgroups.length, drained: p.drainIps.length, svcOps: svcPlanSize(svc), ms },
      'reconciled',
    );
  }
  return { plan: p, services: svc, desired: want, missing: facts.missing, ms };
}
