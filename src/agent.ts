// The agent: load the datapath, then keep it equal to the source's state.
// Local source: a state file, reloaded on change (debounced) and re-checked
// periodically (pods whose node facts are missing are retried sooner).
// Stopping the agent leaves the datapath in place (traffic keeps flowing);
// `podwarp uninstall` removes it.
import fs from 'node:fs';
import path from 'node:path';
import { Datapath } from '../loader/datapath.js';
import { InputError, errorMessage } from '../loader/errors.js';
import { AgentMetrics } from './metrics.js';
import { requireDatapathFeatures } from '../loader/features.js';
import { build } from './build.js';
import { log } from './log.js';
import type { Snapshot } from './model.js';
import { SkipLog, reconcile } from './reconciler.js';
import { DEFAULT_OPTIONS, sockConfig, type DesiredOptions } from './desired.js';
import { loadStateFile } from './state/load.js';

export interface AgentOptions {
  stateFile: string;
  resyncMs?: number;
  retryMs?: number;
  debounceMs?: number;
  once?: boolean;
  /** Socket acceleration (sockops/sk_msg) and sidecar settings. */
  sockets?: DesiredOptions;
  /** How often passthrough sockets are swept out of pw_sock. */
  sweepMs?: number;
  /** host:port for /metrics, /healthz, /readyz ('' = off). */
  metricsAddr?: string;
}

export async function runAgent(opts: AgentOptions): Promise<void> {
  // reject bad input before touching anything
  let snapshot: Snapshot = loadStateFile(opts.stateFile).snapshot;
  sockConfig(opts.sockets ?? DEFAULT_OPTIONS);
  await requireDatapathFeatures();
  const dp = await Datapath.open();
  const reused = dp.isLoaded();
  const objs = await build();
  await dp.load(objs);
  log.info({ pinRoot: dp.pinRoot, reusedMaps: reused }, 'datapath ready');
  const skips = new SkipLog();
  const metrics = new AgentMetrics(dp);
  const http = opts.metricsAddr ? metrics.listen(opts.metricsAddr) : undefined;
  let missing = 0;
  const pass = async () => {
    try {
      const r = await reconcile(dp, snapshot, skips, opts.sockets ?? DEFAULT_OPTIONS);
      missing = r.missing.size;
      metrics.pass(r);
    } catch (e) {
      metrics.failed('reconcile', errorMessage(e));
      throw e;
    }
  };
  await pass();
  log.info({ state: opts.stateFile, pods: snapshot.pods.length }, 'ready');
  if (opts.once) return;

  let timer: NodeJS.Timeout | undefined;
  let running = Promise.resolve();
  const schedule = (ms: number, reload: boolean) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      running = running.then(async () => {
        try {
          if (reload) {
            snapshot = loadStateFile(opts.stateFile).snapshot;
            log.info({ pods: snapshot.pods.length }, 'state file reloaded');
          }
          await pass();
        } catch (e) {
          // an invalid file keeps the last good state; the maps are untouched
          if (e instanceof InputError) metrics.errors.inc({ reason: 'state_rejected' });
          log.error({ err: errorMessage(e) }, e instanceof InputError ? 'state file rejected; keeping previous state' : 'reconcile failed');
        }
        schedule(missing > 0 ? (opts.retryMs ?? 2000) : (opts.resyncMs ?? 10000), true);
      });
    }, ms);
  };
  // sockets left with a direction on TCP (their peer never joined pw_sock) leave it soon, drained
  const sweep = setInterval(() => {
    running = running.then(async () => {
      try {
        const n = await dp.drainPassthrough();
        if (n) log.info({ sockets: n }, 'passthrough sockets moved out of pw_sock');
      } catch (e) {
        metrics.errors.inc({ reason: 'sweep' });
        log.error({ err: errorMessage(e) }, 'socket sweep failed');
      }
    });
  }, opts.sweepMs ?? 2000);
  const dir = path.dirname(path.resolve(opts.stateFile));
  const base = path.basename(opts.stateFile);
  const watcher = fs.watch(dir, (_ev, name) => {
    if (name === base) schedule(opts.debounceMs ?? 100, true);
  });
  schedule(missing > 0 ? (opts.retryMs ?? 2000) : (opts.resyncMs ?? 10000), true);

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'agent stopping; datapath stays in place');
      watcher.close();
      clearInterval(sweep);
      http?.close();
      if (timer) clearTimeout(timer);
      void running.then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
