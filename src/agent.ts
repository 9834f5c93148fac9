// The agent: load the datapath, then keep it equal to the source's state.
//
// Local source (--state FILE): the file is reloaded on change (debounced) and
// re-checked periodically; every pass is a full pass (a few pods).
//
// Kubernetes source (--source kubernetes): informers feed a change set (which
// Services, whether the node-local part changed). Events are coalesced for
// --debounce ms, then one pass applies them: the changed Services against the
// service-map mirror (src/services/sync.ts), the node-local part (endpoints,
// tc, cgroup hooks) against what the maps and attachments hold. A full
// service pass (read everything back) runs at start and every --full-resync.
//
// Pods whose node facts are missing are retried sooner. Stopping the agent
// leaves the datapath in place (traffic keeps flowing); `podwarp uninstall`
// removes it.
//
// One writer per node: before its first write the agent takes the node lock
// of its pin root (host/lock.ts). If another agent (a rolling update's new
// pod, one started by hand) or an uninstall holds it, this one says so once,
// is not ready (/readyz, podwarp_lock_waiting), and writes nothing, not even
// a socket sweep, until the holder exits; then it loads over the pinned maps
// (reused, as on any restart) and reconciles. The Kubernetes source fills
// its caches while it waits, so the take-over is one pass.
import fs from 'node:fs';
import path from 'node:path';
import { Datapath } from '../loader/datapath.js';
import { FeatureMissingError, InputError, errorMessage } from '../host/errors.js';
import { describeHolder, type PinLock } from '../host/lock.js';
import { requireDatapathFeatures } from './doctor/probe.js';
import { build } from '../loader/build.js';
import { DEFAULT_OPTIONS, sockConfig, type DesiredOptions } from './pods/desired.js';
import { log } from '../host/log.js';
import { AgentMetrics } from './metrics.js';
import type { Snapshot } from './model.js';
import { SkipLog, reconcile, reconcilePods, type PodsResult } from './reconciler.js';
import { namespaceCounts, notAccelerated, writeAgentReport } from './agent-report.js';
import { ServiceSync, svcOpsTotal } from './services/sync.js';
import { PodBackoff } from './pods/apply.js';
import { loadStateFile } from './state/load.js';
import { BpfServiceMaps } from './services/maps.js';
import { DEFAULT_CONFIGZ, kubeProxyView, type KubeProxyView, type MasqueradeAllSetting } from './sources/kube-proxy-config.js';
import { UNMATCHED_PORT } from './services/desired.js';

/** How often the agent sweeps passthrough sockets out of pw_sock, unless AgentOptions.sweepMs says otherwise. */
export const DEFAULT_SWEEP_MS = 2000;

export interface AgentOptions {
  source?: 'local' | 'kubernetes';
  /** Local source. */
  stateFile?: string;
  /** Kubernetes source: kubeconfig file (default in-cluster / $KUBECONFIG) and this node's name. */
  kubeconfig?: string;
  node?: string;
  /** Node-local re-check period. */
  resyncMs?: number;
  /** Re-check period while some pod's node facts are missing. */
  retryMs?: number;
  /** Events are coalesced this long before a pass. */
  debounceMs?: number;
  /** Longest wait between two attempts to attach a failing pod's hooks (src/pods/apply.ts PodBackoff). */
  attachBackoffMs?: number;
  /** Kubernetes source: the initial lists must complete within this (the datapath is not touched before). */
  syncTimeoutMs?: number;
  /** Kubernetes source: full service pass (read both maps back) this often. */
  fullResyncMs?: number;
  once?: boolean;
  /** Socket acceleration (sockops/sk_msg), service LB and sidecar settings. */
  sockets?: DesiredOptions;
  /** How often passthrough sockets are swept out of pw_sock (default DEFAULT_SWEEP_MS). */
  sweepMs?: number;
  /** host:port for /metrics, /healthz, /readyz ('' = off). */
  metricsAddr?: string;
  /**
   * kube-proxy's masqueradeAll (every Service left to kube-proxy when on):
   * 'auto' (default) reads kube-proxy's /configz with the kubernetes source
   * and the state file's `kubeProxy.masqueradeAll` with the local one.
   */
  masqueradeAll?: MasqueradeAllSetting;
  /** Where kube-proxy serves /configz (default DEFAULT_CONFIGZ). */
  kubeProxyConfigz?: string;
}

interface Ctx {
  dp: Datapath;
  metrics: AgentMetrics;
  skips: SkipLog;
  /** Pods whose hooks cannot be attached: retried with backoff, on the normal path meanwhile (src/pods/apply.ts). */
  backoff: PodBackoff;
  opts: AgentOptions;
  sockets: DesiredOptions;
  /** Serialises every pass and sweep. */
  queue: (f: () => Promise<void>) => Promise<void>;
  /** Loads (or reuses) the pinned datapath; the source calls it once its input is known to be good. */
  loadDatapath: () => Promise<void>;
  /** This node's kube-proxy as the agent follows it (the kubernetes source: read at start and at every full pass). */
  kubeProxy?: KubeProxyView;
}

export async function runAgent(opts: AgentOptions): Promise<void> {
  const source = opts.source ?? 'local';
  const sockets = opts.sockets ?? DEFAULT_OPTIONS;
  // reject bad input before touching anything
  if (source === 'local' && !opts.stateFile) throw new InputError('the local source needs --state FILE');
  if (source === 'local') loadStateFile(opts.stateFile!);
  if (source === 'kubernetes' && !opts.node) throw new InputError('the kubernetes source needs the node name: --node NAME or NODE_NAME');
  // the Kubernetes client is loaded only for that source (a large module graph)
  if (source === 'kubernetes') (await import('./sources/kubernetes.js')).loadKubeConfig(opts.kubeconfig);
  sockConfig(sockets);
  // opening the pins mounts bpffs if the node has none; then every prerequisite, one line naming what fails
  const dp = await Datapath.open();
  await requireDatapathFeatures();
  const objs = await build();
  const metrics = new AgentMetrics(dp);
  const http = opts.metricsAddr ? metrics.listen(opts.metricsAddr) : undefined;
  // the node lock, and whether this agent writes yet (after its load): nothing is written before
  let lock: PinLock | undefined;
  let writing = false;
  const takeLock = async () => {
    const t0 = Date.now();
    lock = await dp.lock({
      wait: true,
      onWait: (h) => {
        metrics.lockWaiting(`waiting for the node lock: ${dp.pinRoot} is written by ${describeHolder(h)}`);
        log.warn(
          { pinRoot: dp.pinRoot, holderPid: h?.pid, holder: h?.command },
          'another podwarp process writes this datapath: waiting for it to exit, then taking over (nothing is written meanwhile)',
        );
      },
      onLost: () => {
        // someone killed the lock's helper: another agent may be writing already
        metrics.lockHeld(false);
        log.error({ pinRoot: dp.pinRoot }, 'the node lock was lost: stopping so that two writers never overlap');
        process.exit(1);
      },
    });
    metrics.lockHeld(true);
    log.info(
      { pinRoot: dp.pinRoot, waitedMs: lock.waited ? Date.now() - t0 : 0 },
      lock.waited ? 'node lock acquired: taking over' : 'node lock acquired',
    );
  };
  const releaseLock = async () => {
    writing = false;
    await lock?.release();
    metrics.lockHeld(false);
  };
  const loadDatapath = async () => {
    await takeLock();
    const reused = dp.isLoaded();
    for (;;) {
      try {
        await dp.load(objs);
        break;
      } catch (e) {
        // a refused core tc program: nothing can be accelerated, but the agent stays up, not ready, saying why
        if (!(e instanceof FeatureMissingError) || opts.once) throw e;
        const retryMs = Number(process.env.PODWARP_LOAD_RETRY_MS) || 30_000;
        metrics.failed('datapath_load', e.message);
        log.error({ err: e.message, retryInMs: retryMs }, 'cannot run on this node: the datapath does not load; not ready, trying again');
        await releaseLock();
        await new Promise((r) => setTimeout(r, retryMs));
        await takeLock();
      }
    }
    metrics.setParts(dp.parts);
    writing = true;
    log.info({ pinRoot: dp.pinRoot, reusedMaps: reused }, 'datapath ready');
  };
  let running = Promise.resolve();
  const queue = (f: () => Promise<void>) => (running = running.then(f));
  const ctx: Ctx = {
    dp,
    metrics,
    skips: new SkipLog(),
    backoff: new PodBackoff(1000, opts.attachBackoffMs ?? 30_000),
    opts,
    sockets,
    queue,
    loadDatapath,
  };

  // sockets left with a direction on TCP (their peer never joined pw_sock) leave it soon, drained
  const sweep = setInterval(() => {
    if (!writing || !dp.isLoaded()) return;
    void queue(async () => {
      try {
        const n = await dp.sockets.drainPassthrough();
        if (n) log.info({ sockets: n }, 'passthrough sockets moved out of pw_sock');
      } catch (e) {
        metrics.errors.inc({ reason: 'sweep' });
        log.error({ err: errorMessage(e) }, 'socket sweep failed');
      }
    });
  }, opts.sweepMs ?? DEFAULT_SWEEP_MS);

  let stopSource: () => Promise<void>;
  try {
    stopSource = source === 'kubernetes' ? await runKubernetes(ctx) : await runLocal(ctx);
  } catch (e) {
    clearInterval(sweep);
    http?.close();
    await running.catch(() => undefined);
    await releaseLock();
    throw e;
  }
  if (opts.once) {
    clearInterval(sweep);
    http?.close();
    await stopSource();
    await running;
    await releaseLock();
    return;
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'agent stopping; datapath stays in place');
      clearInterval(sweep);
      http?.close();
      void stopSource()
        .then(() => running)
        .then(releaseLock)
        .then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

/** Left-to-kube-proxy frontends named in the report (the counts cover all). */
const LEFT_LIST_MAX = 200;
const NAMED_LIST_MAX = 2000;

/** Counts what a pass could not do (it still applied everything else) and says when to look again. */
function passFailures(ctx: Ctx, pods: PodsResult): number | undefined {
  for (const f of pods.failed.values()) if (!f.backingOff) ctx.metrics.errors.inc({ reason: 'pod_attach' });
  for (const e of pods.errors) ctx.metrics.failed('apply', `${e.step}: ${e.err}`);
  if (pods.errors.length) return ctx.opts.retryMs ?? 2000;
  const next = ctx.backoff.nextRetryMs();
  return next === undefined ? undefined : Math.min(Math.max(next, 50), ctx.opts.retryMs ?? 2000);
}

function report(ctx: Ctx, source: string, pods: PodsResult, snap: Snapshot, sync: ServiceSync): void {
  try {
    writeAgentReport({
      source,
      node: ctx.opts.node,
      pid: process.pid,
      updated: new Date().toISOString(),
      namespaces: namespaceCounts(pods, snap.namespaces),
      services: {
        frontends: sync.frontends,
        dropped: sync.droppedCount,
        left: sync.leftServices().slice(0, LEFT_LIST_MAX),
        leftCounts: sync.leftCounts(),
        kinds: sync.kindCounts(),
        named: sync.namedFrontends(NAMED_LIST_MAX),
      },
      notAccelerated: notAccelerated(pods, snap),
      policyGaps: snap.policyGaps ?? [],
      parts: ctx.dp.parts,
      mapSizing: ctx.dp.sizing,
      ...(ctx.kubeProxy ? { kubeProxy: ctx.kubeProxy } : {}),
    });
  } catch (e) {
    log.warn({ err: errorMessage(e) }, 'cannot write the agent report (podwarp status shows less)');
  }
}

async function runLocal(ctx: Ctx): Promise<() => Promise<void>> {
  const { dp, metrics, opts } = ctx;
  const file = opts.stateFile!;
  // --masquerade-all true|false overrides the file's kubeProxy.masqueradeAll
  const withFlags = (snap: Snapshot): Snapshot => {
    const setting = opts.masqueradeAll ?? 'auto';
    const s = setting === 'auto' ? snap : { ...snap, masqueradeAll: setting };
    ctx.kubeProxy = { masqueradeAll: s.masqueradeAll ?? false, from: setting === 'auto' ? 'state' : 'flag' };
    return s;
  };
  let snapshot: Snapshot = withFlags(loadStateFile(file).snapshot);
  await ctx.loadDatapath();
  const sync = new ServiceSync(new BpfServiceMaps(dp));
  let missing = 0;
  let retry: number | undefined;
  const pass = async () => {
    try {
      const r = await reconcile(dp, snapshot, ctx.skips, ctx.sockets, sync, ctx.backoff);
      missing = r.missing.size;
      metrics.pass(r.ms, r, r.svc);
      retry = passFailures(ctx, r);
      report(ctx, 'local', r, snapshot, sync);
    } catch (e) {
      metrics.failed('reconcile', errorMessage(e));
      throw e;
    }
  };
  await pass();
  log.info({ state: file, pods: snapshot.pods.length }, 'ready');
  if (opts.once) return async () => {};

  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (ms: number) => {
    if (timer) clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(() => {
      void ctx.queue(async () => {
        try {
          snapshot = withFlags(loadStateFile(file).snapshot);
          await pass();
        } catch (e) {
          // an invalid file keeps the last good state; the maps are untouched
          if (e instanceof InputError) metrics.errors.inc({ reason: 'state_rejected' });
          log.error({ err: errorMessage(e) }, e instanceof InputError ? 'state file rejected; keeping previous state' : 'reconcile failed');
        }
        schedule(next());
      });
    }, ms);
  };
  const next = () => Math.min(retry ?? Infinity, missing > 0 ? (opts.retryMs ?? 2000) : (opts.resyncMs ?? 10000));
  const base = path.basename(file);
  const watcher = fs.watch(path.dirname(path.resolve(file)), (_ev, name) => {
    if (name === base) schedule(opts.debounceMs ?? 100);
  });
  schedule(next());
  return async () => {
    stopped = true;
    watcher.close();
    if (timer) clearTimeout(timer);
  };
}

const memory = () => {
  const m = process.memoryUsage();
  return { rssMiB: Math.round(m.rss / 2 ** 20), heapMiB: Math.round(m.heapUsed / 2 ** 20) };
};

/** Short, bounded label for a skip reason (the log line has the whole text). */
const reasonLabel = (why: string) => why.split(/[(:]/)[0]!.trim().slice(0, 48);

async function runKubernetes(ctx: Ctx): Promise<() => Promise<void>> {
  const { dp, metrics, opts } = ctx;
  const { KubeSource } = await import('./sources/kubernetes.js');
  const sync = new ServiceSync(new BpfServiceMaps(dp));
  // two lanes: service maps (pw_svc/pw_backends) and the node-local part
  // (endpoints, tc, cgroups, pw_config, socket sweep). They touch disjoint
  // maps, so a Service change never waits behind a node pass or a sweep.
  let svcLane = Promise.resolve();
  const svcQueue = (f: () => Promise<void>) => (svcLane = svcLane.then(f));
  const pending = { pods: false, podsSince: 0, services: new Set<string>(), svcSince: 0 };
  let svcTimer: NodeJS.Timeout | undefined;
  let podTimer: NodeJS.Timeout | undefined;
  let started = false;
  let missing = 0;
  let retry: number | undefined;
  let lastDropped = 0;
  let stopped = false;
  const debounce = opts.debounceMs ?? 10;
  const kickSvc = () => {
    if (!started || svcTimer || stopped) return;
    svcTimer = setTimeout(() => {
      svcTimer = undefined;
      void svcQueue(() => svcPass('change').catch(() => {}));
    }, debounce);
  };
  const kickPods = (ms = debounce) => {
    if (!started || stopped) return;
    if (podTimer) clearTimeout(podTimer);
    podTimer = setTimeout(() => {
      podTimer = undefined;
      void ctx
        .queue(() => podsPass('change').catch(() => {}))
        .then(() => {
          // periodic re-check (sooner while some pod's node facts are missing)
          if (!stopped && !podTimer) kickPods(Math.min(retry ?? Infinity, missing > 0 ? (opts.retryMs ?? 2000) : (opts.resyncMs ?? 10000)));
        });
    }, ms);
  };
  const src = new KubeSource(
    { kubeconfig: opts.kubeconfig, node: opts.node! },
    {
      onChange(c) {
        if (c.pods) {
          pending.pods = true;
          pending.podsSince ||= Date.now();
          kickPods();
        }
        if (c.services.size || c.zone) {
          // a zone change: the next service pass sees src.zone differ from sync.node's and plans every Service
          for (const k of c.services) pending.services.add(k);
          pending.svcSince ||= Date.now();
          kickSvc();
        }
      },
      onSkip(kind, name, reason) {
        if (ctx.skips.note(`${kind} ${name}`, reason)) metrics.skippedObjects.inc({ kind, reason: reasonLabel(reason) });
      },
      onEvent: (kind, type) => metrics.events.inc({ kind, type }),
      onList: (kind) => metrics.lists.inc({ kind }),
      onError: (kind) => metrics.errors.inc({ reason: `watch_${kind}` }),
      onPolicyError: (api) => metrics.errors.inc({ reason: api === 'discovery' ? 'discovery' : 'watch_policy' }),
    },
  );
  metrics.objects.reset();
  const t0 = Date.now();
  try {
    await src.start(opts.syncTimeoutMs ?? 60_000);
  } catch (e) {
    await src.stop();
    throw e;
  }
  log.info({ server: src.server, node: opts.node, objects: src.counts(), ms: Date.now() - t0, ...memory() }, 'caches synced');
  // kube-proxy's masqueradeAll: every Service is left to it when on (re-read at every full pass)
  const followKubeProxy = async () => {
    const v = await kubeProxyView(opts.masqueradeAll ?? 'auto', opts.kubeProxyConfigz ?? DEFAULT_CONFIGZ);
    const was = ctx.kubeProxy;
    ctx.kubeProxy = v;
    sync.node = { ...sync.node, masqueradeAll: v.masqueradeAll };
    if (was?.masqueradeAll === v.masqueradeAll && was.from === v.from) return;
    if (v.from === 'unknown')
      log.warn(
        { err: v.error },
        "cannot read kube-proxy's configuration: masqueradeAll is taken as off (set --masquerade-all true|false to say it)",
      );
    else if (v.masqueradeAll)
      log.warn({ from: v.from }, 'kube-proxy masquerades all Service traffic (masqueradeAll): every Service is left to kube-proxy');
    else log.info({ from: v.from, mode: v.mode }, 'kube-proxy: masqueradeAll off');
  };
  sync.node = { name: opts.node, zone: src.zone };
  await followKubeProxy();
  if (src.zoneError)
    log.warn(
      { node: opts.node, err: src.zoneError },
      'cannot read this Node: its zone is unknown until the watch lists it, so Services with topology hints use all their endpoints meanwhile (kube-proxy narrows them)',
    );
  await ctx.loadDatapath();

  const svcPass = async (why: 'change' | 'full') => {
    const t = performance.now();
    const since = pending.svcSince;
    const keys = pending.services;
    pending.services = new Set();
    pending.svcSince = 0;
    try {
      // this node's zone label changed (the Node watch): topology hints choose anew for every Service, as kube-proxy re-syncs
      const zone = src.zone;
      const rezoned = zone !== sync.node.zone;
      if (rezoned) {
        log.info({ node: opts.node, zone: zone ?? null, was: sync.node.zone ?? null }, "planning every Service for this node's new zone");
        sync.node = { ...sync.node, name: opts.node, zone };
      }
      const svc =
        why === 'full' || !sync.ready || rezoned
          ? await sync.full(src.serviceKeys().flatMap((k) => src.service(k) ?? []))
          : await sync.changed(new Map([...keys].map((k) => [k, src.service(k)])));
      for (const u of svc.unresolved) ctx.skips.note(`endpoint ${u}`, UNMATCHED_PORT);
      if (svc.droppedNames.length)
        log.error({ services: svc.droppedNames }, 'service maps full: these services are left to kube-proxy (not written at all)');
      const ms = performance.now() - t;
      const lagMs = since ? Date.now() - since : undefined;
      if (lagMs !== undefined) metrics.changeLatency.observe(lagMs / 1000);
      metrics.pass(Math.round(ms), undefined, svc);
      if (svcOpsTotal(svc.ops) > 0)
        log.info(
          { lane: 'services', why, services: keys.size, full: svc.full, ops: svcOpsTotal(svc.ops), ms: Math.round(ms), lagMs },
          'reconciled',
        );
      // pw_config says whether every service is resolved at connect(): the node lane writes it
      if (sync.droppedCount !== lastDropped) kickPods();
    } catch (e) {
      // nothing is lost: the keys go back, and a failed write dropped the mirror (the next pass reads back)
      for (const k of keys) pending.services.add(k);
      pending.svcSince ||= since || Date.now();
      metrics.failed('reconcile', errorMessage(e));
      log.error({ err: errorMessage(e), lane: 'services', why }, 'reconcile failed; retrying');
      if (!stopped) setTimeout(kickSvc, opts.retryMs ?? 2000).unref();
      throw e;
    }
  };

  const podsPass = async (why: 'change' | 'start') => {
    const t = performance.now();
    const since = pending.podsSince;
    pending.pods = false;
    pending.podsSince = 0;
    try {
      const snap = src.snapshot();
      const dropped = sync.droppedCount;
      const pods = await reconcilePods(dp, snap, ctx.skips, ctx.sockets, dropped, ctx.backoff);
      lastDropped = dropped;
      missing = pods.missing.size;
      report(ctx, 'kubernetes', pods, snap, sync);
      const ms = performance.now() - t;
      const lagMs = since ? Date.now() - since : undefined;
      if (lagMs !== undefined) metrics.changeLatency.observe(lagMs / 1000);
      metrics.pass(Math.round(ms), pods);
      retry = passFailures(ctx, pods);
      for (const [k, n] of Object.entries(src.counts())) metrics.objects.set({ kind: k }, n);
      metrics.setPolicyGaps(snap.policyGaps ?? []);
      for (const a of src.policyApis()) metrics.objects.set({ kind: a.api }, a.objects);
      const p = pods.plan;
      const ops = p.upsert.length + p.delete.length + p.attach.length + p.detach.length + p.cgroups.length + (p.config ? 1 : 0);
      if (ops > 0) log.info({ lane: 'node', why, ops, ms: Math.round(ms), lagMs }, 'reconciled');
    } catch (e) {
      pending.pods = true;
      pending.podsSince ||= since || Date.now();
      retry = opts.retryMs ?? 2000;
      metrics.failed('reconcile', errorMessage(e));
      log.error({ err: errorMessage(e), lane: 'node', why }, 'reconcile failed; retrying');
      throw e;
    }
  };

  // events that arrived while the caches filled are covered by the first passes
  pending.pods = false;
  pending.services = new Set();
  pending.svcSince = pending.podsSince = 0;
  await svcQueue(() => svcPass('full'));
  await ctx.queue(() => podsPass('start'));
  started = true;
  log.info({ node: opts.node, frontends: sync.frontends, ms: Date.now() - t0, ...memory() }, 'ready');
  if (pending.services.size) kickSvc();
  if (!opts.once) kickPods(pending.pods ? debounce : (opts.resyncMs ?? 10000));
  const full = opts.once
    ? undefined
    : setInterval(
        () =>
          void svcQueue(() =>
            followKubeProxy()
              .then(() => svcPass('full'))
              .catch(() => {}),
          ),
        opts.fullResyncMs ?? 300_000,
      );
  return async () => {
    stopped = true;
    if (svcTimer) clearTimeout(svcTimer);
    if (podTimer) clearTimeout(podTimer);
    if (full) clearInterval(full);
    await src.stop();
    await svcLane;
  };
}
