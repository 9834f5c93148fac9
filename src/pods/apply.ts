// The node-local half of the control loop's two ends: read the actual state
// back from the pinned maps and live attachments, and apply a plan to them.
import { CGROUP_HOOKS, EP_FLAGS } from '../../abi/schema.js';
import { cgroupId } from '../../host/cgroup.js';
import type { Datapath } from '../../loader/datapath.js';
import { errorMessage } from '../../host/errors.js';
import { log } from '../../host/log.js';
import type { ApplyFailure, DesiredEndpoint, SockConfig } from './desired.js';
import type { ActualState, PodEnable, Plan } from './plan.js';
import { forgetClients, handBackToKubeProxy, seedFromKubeProxy } from '../services/affinity-handover.js';

/** Slots of pw_config.excluded_ports (abi/schema.ts). */
const EXCLUDED_PORT_SLOTS = 8;

export async function readActual(dp: Datapath): Promise<ActualState> {
  const endpoints = new Map(
    (await dp.maps.dump('pw_endpoints')).map((e) => {
      const ip = String(e.key.ip);
      return [
        ip,
        { ip, ifindex: Number(e.value.ifindex), flags: Number(e.value.flags), mac: String(e.value.mac), gwMac: String(e.value.gw_mac) },
      ];
    }),
  );
  const cgroups = (await dp.cgroups.status()).map((c) => ({
    path: c.path,
    present: c.present,
    // what is really attached (a hook someone removed gets re-attached)
    hooks: c.liveHooks,
  }));
  return { endpoints, ifaces: await dp.tc.status(), cgroups, config: await readConfig(dp) };
}

/** A pod the apply step left on the normal path although desired() enables it. */
export interface PodFailure {
  reason: ApplyFailure;
  /** The error of its last attempt. */
  err: string;
  /** Consecutive failed attempts. */
  attempts: number;
  /** ms until the next attempt (0: the next pass tries). */
  retryInMs: number;
  /** This pass did not try (still backing off): the last attempt's reason and error. */
  backingOff: boolean;
}

/**
 * Retry with backoff, per pod: a pod whose hooks cannot be attached is tried
 * again on the first pass after 1 s, 2 s, 4 s … at most 30 s, and left on the
 * normal path meanwhile. Kept by the agent across passes; forgets pods that are
 * no longer wanted on.
 */
export class PodBackoff {
  private readonly state = new Map<string, { reason: ApplyFailure; err: string; attempts: number; next: number }>();
  constructor(
    private readonly baseMs = 1000,
    private readonly maxMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}
  /** The failure this pod is still backing off from, if its next attempt is not due. */
  waiting(pod: string): PodFailure | undefined {
    const s = this.state.get(pod);
    if (!s || this.now() >= s.next) return undefined;
    return { reason: s.reason, err: s.err, attempts: s.attempts, retryInMs: s.next - this.now(), backingOff: true };
  }
  failed(pod: string, reason: ApplyFailure, err: string): PodFailure {
    const attempts = (this.state.get(pod)?.attempts ?? 0) + 1;
    const delay = Math.min(this.maxMs, this.baseMs * 2 ** (attempts - 1));
    this.state.set(pod, { reason, err, attempts, next: this.now() + delay });
    return { reason, err, attempts, retryInMs: delay, backingOff: false };
  }
  ok(pod: string): void {
    this.state.delete(pod);
  }
  /** Forgets every pod not in `pods` (gone, or no longer wanted on). */
  keepOnly(pods: Set<string>): void {
    for (const k of this.state.keys()) if (!pods.has(k)) this.state.delete(k);
  }
  /** ms until the earliest pending retry (undefined: none). */
  nextRetryMs(): number | undefined {
    let min: number | undefined;
    for (const s of this.state.values()) min = Math.min(min ?? Infinity, Math.max(0, s.next - this.now()));
    return min;
  }
}

export interface ApplyResult {
  /** Pods desired() enables that this pass left on the normal path (fail closed), by pod key. */
  failed: Map<string, PodFailure>;
  /** Steps that failed outside any one pod's enabling (a removal, a detach, pw_config): retried next pass. */
  errors: { step: string; err: string }[];
}

/**
 * Applies a plan so that a failure never holds back a change that removes
 * acceleration, and never leaves a pod half-enabled.
 *
 * 1. Removals first, each step on its own (a failing one is recorded, the
 *    rest still run): entries losing ENABLED are written disabled (the tc
 *    program stops redirecting to and from them), their cgroup hooks
 *    detached, their sockets drained out of pw_sock (always attempted, even if
 *    a detach failed), entries of gone pods deleted, tc filters of gone
 *    interfaces detached.
 * 2. pw_config.
 * 3. Additions, pod by pod: its tc filter, then its cgroup hooks; only when
 *    both are in place is its entry written ENABLED (one batch for all such
 *    pods). A pod whose step fails (or that is still backing off) is written
 *    disabled instead; if it was enabled before, its hooks are detached and
 *    its sockets drained as in 1.
 *
 * Invariant (fail closed): after every pass, an entry of pw_endpoints is
 * ENABLED only if that pod's tc filter is on its host veth and every cgroup
 * hook desired for it is attached — read back as live at the start of the
 * pass, or attached by this pass before the entry was written.
 */
export async function applyPlan(dp: Datapath, p: Plan, backoff = new PodBackoff()): Promise<ApplyResult> {
  const pass = new ApplyPass(dp, backoff);
  // the pods losing the socket LB: their sessionAffinity memory goes to kube-proxy before their hooks go
  const leaving = await lbClientsLeaving(pass, p);
  await handBack(pass, leaving);
  await removeAcceleration(pass, p);
  await writeNodeConfig(pass, p);
  await addAcceleration(pass, p);
  await pass.step('forget the clients that left the socket LB', () => forgetClientsLeft(pass, p, leaving));
  return pass.out;
}

/** One apply pass: the datapath, the pods' backoff, and what failed so far. */
class ApplyPass {
  readonly out: ApplyResult = { failed: new Map(), errors: [] };
  constructor(
    readonly dp: Datapath,
    readonly backoff: PodBackoff,
  ) {}

  /** Runs one step; a failure is recorded and logged, and the pass goes on. False when it failed. */
  async step(name: string, f: () => Promise<unknown>): Promise<boolean> {
    try {
      await f();
      return true;
    } catch (e) {
      this.out.errors.push({ step: name, err: errorMessage(e) });
      log.error({ step: name, err: errorMessage(e) }, 'apply step failed; the rest of the pass goes on');
      return false;
    }
  }
}

// ---- 1. removals ----

async function removeAcceleration(pass: ApplyPass, p: Plan): Promise<void> {
  await writeEndpoints(
    pass,
    'disable endpoint',
    p.upsert.filter((e) => !(e.flags & EP_FLAGS.ENABLED)),
  );
  for (const c of p.cgroups.filter((x) => x.hooks === 0)) await detachHooks(pass, c.path);
  await drainSockets(pass, p.drainIps);
  await deleteEndpoints(pass, p.delete);
  for (const i of p.detach) await pass.step(`detach tc from ${i.name}`, () => pass.dp.tc.detach(i));
}

// ---- 2. node-wide settings ----

async function writeNodeConfig(pass: ApplyPass, p: Plan): Promise<void> {
  if (p.config) await pass.step('write pw_config', () => writeConfig(pass.dp, p.config!));
}

// ---- 3. additions, pod by pod ----

async function addAcceleration(pass: ApplyPass, p: Plan): Promise<void> {
  await attachTcToPodsLeftOff(pass, p);
  // before any capture hook is attached: each captured pod's own IP (pw_pod_cgroup)
  const podCgroupsOk = await pass.step('write pw_pod_cgroup', () => syncPodCgroups(pass.dp, p.podCgroups));
  // before any socket LB hook is attached: each pod's client address (pw_lb_client), and the
  // sessionAffinity memory kube-proxy holds for the pods coming from its path
  await pass.step('write pw_lb_client', () => syncCgroupClients(pass.dp, p.lbClients));
  await pass.step('take sessionAffinity over from kube-proxy', () => seedFromKubeProxy(pass.dp, lbEntering(p)));
  const hooked = await attachPodHooks(pass, p, podCgroupsOk);
  const demote = [...hooked.demote, ...(await enableEndpoints(pass, p, hooked.ready))];
  await keepDisabled(pass, demote, hooked.tried);
}

/** Interfaces of pods that stay off still get the tc program (it counts and passes their traffic). */
async function attachTcToPodsLeftOff(pass: ApplyPass, p: Plan): Promise<void> {
  const enabling = new Set(p.enable.map((x) => `${x.endpoint.iface}#${x.endpoint.ifindex}`));
  for (const a of p.attach.filter((x) => !enabling.has(`${x.name}#${x.ifindex}`)))
    await pass.step(`attach tc to ${a.name}`, () => pass.dp.tc.attach(a.name));
}

/**
 * Each pod to enable, in turn: its tc filter, then its cgroup hooks. `ready`:
 * pods with every hook in place; `demote`: pods still backing off or whose
 * step failed (recorded in the backoff and the result); `tried`: pods whose
 * cgroup hooks this pass tried to attach.
 */
async function attachPodHooks(
  pass: ApplyPass,
  p: Plan,
  podCgroupsOk: boolean,
): Promise<{ ready: DesiredEndpoint[]; demote: PodEnable[]; tried: Set<PodEnable> }> {
  const ready: DesiredEndpoint[] = [];
  const demote: PodEnable[] = [];
  const tried = new Set<PodEnable>();
  for (const x of p.enable) {
    const pod = x.endpoint.pod;
    const waiting = pass.backoff.waiting(pod);
    if (waiting) {
      pass.out.failed.set(pod, waiting);
      demote.push(x);
      continue;
    }
    const failure = await attachHooksOf(pass.dp, x, podCgroupsOk, tried);
    if (failure) {
      const f = pass.backoff.failed(pod, failure[0], errorMessage(failure[1]));
      pass.out.failed.set(pod, f);
      log.warn(
        { pod, reason: f.reason, err: f.err, attempts: f.attempts, retryInMs: f.retryInMs },
        'pod left on the normal path: its hooks cannot be attached (fail closed; retried with backoff)',
      );
      demote.push(x);
      continue;
    }
    ready.push(x.endpoint);
  }
  return { ready, demote, tried };
}

/** One pod's tc filter, then its cgroup hooks (added to `tried` when attempted); the first failure, if any. */
async function attachHooksOf(
  dp: Datapath,
  x: PodEnable,
  podCgroupsOk: boolean,
  tried: Set<PodEnable>,
): Promise<[ApplyFailure, unknown] | undefined> {
  if (x.attach) {
    try {
      await dp.tc.attach(x.attach.name);
    } catch (e) {
      return ['attach-failed', e];
    }
  }
  if (!x.cgroup) return undefined;
  if (x.cgroup.hooks & CGROUP_HOOKS.CONNECT4 && !podCgroupsOk)
    return ['cgroup-attach-failed', new Error('its pw_pod_cgroup entry could not be written (its own-IP connects would be captured)')];
  tried.add(x);
  try {
    await dp.cgroups.set(x.cgroup.path, x.cgroup.hooks);
  } catch (e) {
    return ['cgroup-attach-failed', e];
  }
  return undefined;
}

/**
 * The pw_endpoints write that enables: the ready pods whose entry differs,
 * ENABLED, in one batch. A pod whose entry cannot be written is recorded as
 * failed and returned, to be kept disabled; every other ready pod's backoff
 * is cleared.
 */
async function enableEndpoints(pass: ApplyPass, p: Plan, ready: DesiredEndpoint[]): Promise<PodEnable[]> {
  const demote: PodEnable[] = [];
  const failedIps = await writeEndpoints(
    pass,
    'enable endpoint',
    ready.filter((e) => p.upsert.includes(e)),
  );
  for (const ip of failedIps) {
    const e = ready.find((r) => r.ip === ip)!;
    pass.out.failed.set(e.pod, pass.backoff.failed(e.pod, 'endpoint-write-failed', 'cannot write its pw_endpoints entry'));
    demote.push(p.enable.find((y) => y.endpoint === e)!);
  }
  for (const e of ready) if (!pass.out.failed.has(e.pod)) pass.backoff.ok(e.pod);
  return demote;
}

/**
 * Fail closed: the pods that could not be enabled are written disabled, their
 * hooks off, their sockets drained (a pod still backing off costs nothing: its
 * entry is already disabled and its cgroup out of the ledger).
 */
async function keepDisabled(pass: ApplyPass, demote: PodEnable[], tried: Set<PodEnable>): Promise<void> {
  await handBack(
    pass,
    demote.filter((x) => x.wasEnabled && (x.cgroup?.hooks ?? 0) & CGROUP_HOOKS.LB).map((x) => x.endpoint.ip),
  );
  await writeEndpoints(
    pass,
    'keep endpoint disabled',
    demote.filter((x) => !x.heldDisabled).map((x) => x.endpoint),
    0,
  );
  for (const x of demote)
    if (x.endpoint.cgroup && (tried.has(x) || x.cgroupHooked || x.wasEnabled)) await detachHooks(pass, x.endpoint.cgroup);
  await drainSockets(
    pass,
    demote.filter((x) => x.wasEnabled).map((x) => x.endpoint.ip),
  );
}

// ---- the steps' kernel writes ----

/** pw_endpoints: these entries written (with `flags`, or each entry's own); the IPs whose write failed. */
function writeEndpoints(pass: ApplyPass, what: string, entries: DesiredEndpoint[], flags?: number): Promise<Set<string>> {
  return batchOrEach(
    pass,
    what,
    entries,
    (e) => e.ip,
    (e) => `${e.ip} (${e.pod})`,
    (es) =>
      pass.dp.maps.write(
        'pw_endpoints',
        es.map((e) => ({ key: { ip: e.ip }, value: { ifindex: e.ifindex, flags: flags ?? e.flags, mac: e.mac, gw_mac: e.gwMac } })),
        [],
      ),
  );
}

/** pw_endpoints: the entries of these IPs deleted; the IPs whose delete failed. */
function deleteEndpoints(pass: ApplyPass, ips: string[]): Promise<Set<string>> {
  return batchOrEach(
    pass,
    'delete endpoint',
    ips,
    (ip) => ip,
    (ip) => ip,
    (xs) =>
      pass.dp.maps.write(
        'pw_endpoints',
        [],
        xs.map((ip) => ({ ip })),
      ),
  );
}

/**
 * pw_endpoints changes in one batch; if the batch fails, one by one (one bad
 * entry never holds back the others). Returns the IPs whose change failed.
 */
async function batchOrEach<T>(
  pass: ApplyPass,
  what: string,
  items: T[],
  ipOf: (x: T) => string,
  label: (x: T) => string,
  write: (xs: T[]) => Promise<unknown>,
): Promise<Set<string>> {
  const failed = new Set<string>();
  if (items.length === 0) return failed;
  try {
    await write(items);
  } catch {
    for (const x of items) if (!(await pass.step(`${what} ${label(x)}`, () => write([x])))) failed.add(ipOf(x));
  }
  return failed;
}

function detachHooks(pass: ApplyPass, path: string): Promise<boolean> {
  return pass.step(`detach cgroup hooks of ${path}`, () => pass.dp.cgroups.set(path, 0));
}

/** Accelerated sockets of these pod IPs (either end) out of pw_sock, drained. */
function drainSockets(pass: ApplyPass, ips: string[]): Promise<boolean> {
  if (ips.length === 0) return Promise.resolve(true);
  const set = new Set(ips);
  return pass.step(`drain sockets of ${ips.join(',')}`, () =>
    pass.dp.sockets.drain((k) => set.has(String(k.sip)) || set.has(String(k.dip))),
  );
}

/**
 * Makes pw_pod_cgroup hold exactly `want` (pod IP → pod cgroup, by id): the
 * sidecar capture leaves a pod's connects to its own IP alone. Writes only
 * what differs. A cgroup that is gone is skipped (its hooks step fails).
 */
export async function syncPodCgroups(dp: Datapath, want: Map<string, string>): Promise<void> {
  const have = new Map((await dp.maps.dump('pw_pod_cgroup')).map((e) => [String(e.key.ip), BigInt(e.value.id as bigint)]));
  const upserts: { key: { ip: string }; value: { id: bigint } }[] = [];
  for (const [ip, rel] of want) {
    let id: bigint;
    try {
      id = cgroupId(rel);
    } catch {
      continue;
    }
    if (have.get(ip) !== id) upserts.push({ key: { ip }, value: { id } });
  }
  const deletes = [...have.keys()].filter((ip) => !want.has(ip)).map((ip) => ({ ip }));
  if (upserts.length || deletes.length) await dp.maps.write('pw_pod_cgroup', upserts, deletes);
}

// ---- sessionAffinity across the switch (src/services/affinity-handover.ts) ----

/** Pods with a pw_lb_client entry that this plan takes the socket LB from (gone pods aside: nobody to hand back to). */
async function lbClientsLeaving(pass: ApplyPass, p: Plan): Promise<string[]> {
  if (!pass.dp.pins.hasMap('pw_lb_client')) return [];
  let have: string[] = [];
  await pass.step('read pw_lb_client', async () => {
    have = (await pass.dp.maps.dump('pw_lb_client')).map((e) => String(e.value.ip));
  });
  const gone = new Set(p.delete);
  return have.filter((ip) => !p.lbClients.has(ip) && !gone.has(ip));
}

/** Pods this plan gives the socket LB that did not run with it: enabled now, or enabled before without it. */
function lbEntering(p: Plan): string[] {
  return p.enable.filter((x) => (x.cgroup?.hooks ?? 0) & CGROUP_HOOKS.LB && !x.wasEnabled).map((x) => x.endpoint.ip);
}

async function handBack(pass: ApplyPass, ips: string[]): Promise<void> {
  if (ips.length) await pass.step('hand sessionAffinity back to kube-proxy', () => handBackToKubeProxy(pass.dp, ips));
}

/** After the pass: pw_affinity forgets the clients whose hooks are off (pw_lb_client lost the pods that left in the additions' sync). */
async function forgetClientsLeft(pass: ApplyPass, p: Plan, leaving: string[]): Promise<void> {
  const off = [
    ...leaving,
    ...[...pass.out.failed.keys()].flatMap((pod) => p.enable.filter((x) => x.endpoint.pod === pod).map((x) => x.endpoint.ip)),
  ];
  await forgetClients(pass.dp, [...p.delete, ...off]);
}

/**
 * Makes pw_lb_client hold exactly `want` (pod cgroup id → pod IP) for
 * the pods with the socket LB: with sessionAffinity, pw_lb finds the
 * connecting pod's address there. Writes only what differs. A cgroup that is
 * gone is skipped (its hooks step fails).
 */
export async function syncCgroupClients(dp: Datapath, want: Map<string, string>): Promise<void> {
  if (!dp.pins.hasMap('pw_lb_client')) return;
  const have = new Map((await dp.maps.dump('pw_lb_client')).map((e) => [BigInt(e.key.id as bigint), String(e.value.ip)]));
  const wantById = new Map<bigint, string>();
  for (const [ip, rel] of want) {
    try {
      wantById.set(cgroupId(rel), ip);
    } catch {
      continue;
    }
  }
  const upserts = [...wantById].filter(([id, ip]) => have.get(id) !== ip).map(([id, ip]) => ({ key: { id }, value: { ip } }));
  const deletes = [...have.keys()].filter((id) => !wantById.has(id)).map((id) => ({ id }));
  if (upserts.length || deletes.length) await dp.maps.write('pw_lb_client', upserts, deletes);
}

/** pw_config as the agent last wrote it; undefined before the first write. */
export async function readConfig(dp: Datapath): Promise<SockConfig | undefined> {
  if (!dp.pins.hasMap('pw_config')) return undefined;
  const e = (await dp.maps.dump('pw_config'))[0];
  if (!e) return undefined;
  const v = e.value;
  return {
    flags: Number(v.flags),
    proxyUid: Number(v.proxy_uid),
    proxyGid: Number(v.proxy_gid),
    proxyPort: Number(v.proxy_port),
    bulkBytes: Number(v.bulk_bytes),
    excludedPorts: (v.excluded_ports as number[]).filter((x) => x !== 0),
    svcDropped: Number(v.svc_dropped),
  };
}

export async function writeConfig(dp: Datapath, c: SockConfig): Promise<void> {
  if (c.excludedPorts.length > EXCLUDED_PORT_SLOTS) throw new Error(`at most ${EXCLUDED_PORT_SLOTS} excluded ports`);
  const ports = [...c.excludedPorts, ...new Array<number>(EXCLUDED_PORT_SLOTS - c.excludedPorts.length).fill(0)];
  const value = {
    flags: c.flags,
    proxy_uid: c.proxyUid,
    proxy_gid: c.proxyGid,
    proxy_port: c.proxyPort,
    bulk_bytes: c.bulkBytes,
    excluded_ports: ports,
    svc_dropped: c.svcDropped,
  };
  await dp.maps.write('pw_config', [{ key: { index: 0 }, value }], []);
}
