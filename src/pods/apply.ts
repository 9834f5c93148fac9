// The node-local half of the control loop's two ends: read the actual state
// back from the pinned maps and live attachments, and apply a plan to them.
import { CGROUP_HOOKS, EP_FLAGS } from '../../abi/schema.js';
import { cgroupId } from '../../host/cgroup.js';
import type { Datapath } from '../../loader/datapath.js';
import { errorMessage } from '../../host/errors.js';
import { log } from '../../host/log.js';
import type { ApplyFailure, DesiredEndpoint, SockConfig } from './desired.js';
import type { ActualState, PodEnable, Plan } from './plan.js';

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

const endpointEntry = (e: DesiredEndpoint, flags = e.flags) => ({
  key: { ip: e.ip },
  value: { ifindex: e.ifindex, flags, mac: e.mac, gw_mac: e.gwMac },
});

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
  const out: ApplyResult = { failed: new Map(), errors: [] };
  const step = async (name: string, f: () => Promise<unknown>): Promise<boolean> => {
    try {
      await f();
      return true;
    } catch (e) {
      out.errors.push({ step: name, err: errorMessage(e) });
      log.error({ step: name, err: errorMessage(e) }, 'apply step failed; the rest of the pass goes on');
      return false;
    }
  };
  /**
   * pw_endpoints changes in one batch; if the batch fails, one by one (one bad
   * entry never holds back the others). Returns the IPs whose change failed.
   */
  const writeBatch = async <T>(
    what: string,
    items: T[],
    ipOf: (x: T) => string,
    label: (x: T) => string,
    write: (xs: T[]) => Promise<unknown>,
  ): Promise<Set<string>> => {
    const failed = new Set<string>();
    if (items.length === 0) return failed;
    try {
      await write(items);
    } catch {
      for (const x of items) if (!(await step(`${what} ${label(x)}`, () => write([x])))) failed.add(ipOf(x));
    }
    return failed;
  };
  const writeEntries = (what: string, upserts: DesiredEndpoint[], flags?: number): Promise<Set<string>> =>
    writeBatch(
      what,
      upserts,
      (e) => e.ip,
      (e) => `${e.ip} (${e.pod})`,
      (es) =>
        dp.maps.write(
          'pw_endpoints',
          es.map((e) => endpointEntry(e, flags ?? e.flags)),
          [],
        ),
    );
  const drain = (ips: string[]) =>
    ips.length === 0
      ? Promise.resolve(true)
      : step(`drain sockets of ${ips.join(',')}`, () => {
          const set = new Set(ips);
          return dp.sockets.drain((k) => set.has(String(k.sip)) || set.has(String(k.dip)));
        });

  // 1. removals
  await writeEntries(
    'disable endpoint',
    p.upsert.filter((e) => !(e.flags & EP_FLAGS.ENABLED)),
  );
  for (const c of p.cgroups.filter((x) => x.hooks === 0)) await step(`detach cgroup hooks of ${c.path}`, () => dp.cgroups.set(c.path, 0));
  await drain(p.drainIps);
  await writeBatch(
    'delete endpoint',
    p.delete,
    (ip) => ip,
    (ip) => ip,
    (ips) =>
      dp.maps.write(
        'pw_endpoints',
        [],
        ips.map((ip) => ({ ip })),
      ),
  );
  for (const i of p.detach) await step(`detach tc from ${i.name}`, () => dp.tc.detach(i));

  // 2. node-wide settings
  if (p.config) await step('write pw_config', () => writeConfig(dp, p.config!));

  // 3. additions, pod by pod
  const enabling = new Set(p.enable.map((x) => `${x.endpoint.iface}#${x.endpoint.ifindex}`));
  // interfaces of pods that stay off still get the tc program (it counts and passes their traffic)
  for (const a of p.attach.filter((x) => !enabling.has(`${x.name}#${x.ifindex}`)))
    await step(`attach tc to ${a.name}`, () => dp.tc.attach(a.name));
  // before any capture hook is attached: each captured pod's own IP (pw_pod_cgroup)
  const podCgroupsOk = await step('write pw_pod_cgroup', () => syncPodCgroups(dp, p.podCgroups));
  const ready: DesiredEndpoint[] = [];
  const demote: PodEnable[] = [];
  /** Pods whose cgroup hooks this pass tried to attach. */
  const tried = new Set<PodEnable>();
  for (const x of p.enable) {
    const pod = x.endpoint.pod;
    const waiting = backoff.waiting(pod);
    if (waiting) {
      out.failed.set(pod, waiting);
      demote.push(x);
      continue;
    }
    let failure: [ApplyFailure, unknown] | undefined;
    if (x.attach) await dp.tc.attach(x.attach.name).catch((e: unknown) => (failure = ['attach-failed', e]));
    if (!failure && x.cgroup && x.cgroup.hooks & CGROUP_HOOKS.CONNECT4 && !podCgroupsOk)
      failure = ['cgroup-attach-failed', new Error('its pw_pod_cgroup entry could not be written (its own-IP connects would be captured)')];
    if (!failure && x.cgroup) {
      const cg = x.cgroup;
      tried.add(x);
      await dp.cgroups.set(cg.path, cg.hooks).catch((e: unknown) => (failure = ['cgroup-attach-failed', e]));
    }
    if (failure) {
      const f = backoff.failed(pod, failure[0], errorMessage(failure[1]));
      out.failed.set(pod, f);
      log.warn(
        { pod, reason: f.reason, err: f.err, attempts: f.attempts, retryInMs: f.retryInMs },
        'pod left on the normal path: its hooks cannot be attached (fail closed; retried with backoff)',
      );
      demote.push(x);
      continue;
    }
    ready.push(x.endpoint);
  }
  for (const ip of await writeEntries(
    'enable endpoint',
    ready.filter((e) => p.upsert.includes(e)),
  )) {
    const e = ready.find((r) => r.ip === ip)!;
    const x = p.enable.find((y) => y.endpoint === e)!;
    out.failed.set(e.pod, backoff.failed(e.pod, 'endpoint-write-failed', 'cannot write its pw_endpoints entry'));
    demote.push(x);
  }
  for (const e of ready) if (!out.failed.has(e.pod)) backoff.ok(e.pod);
  // fail closed: the pods that could not be enabled are written disabled, their hooks off, their sockets drained
  // (a pod still backing off costs nothing: its entry is already disabled and its cgroup out of the ledger)
  await writeEntries(
    'keep endpoint disabled',
    demote.filter((x) => !x.heldDisabled).map((x) => x.endpoint),
    0,
  );
  for (const x of demote)
    if (x.endpoint.cgroup && (tried.has(x) || x.cgroupHooked || x.wasEnabled)) {
      const path = x.endpoint.cgroup;
      await step(`detach cgroup hooks of ${path}`, () => dp.cgroups.set(path, 0));
    }
  await drain(demote.filter((x) => x.wasEnabled).map((x) => x.endpoint.ip));
  return out;
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
