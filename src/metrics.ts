// The agent's HTTP endpoint: /metrics (Prometheus, prom-client), /healthz,
// /readyz. Listens on a local address only (default 127.0.0.1:9464).
import http from 'node:http';
import client from 'prom-client';
import type { Datapath } from '../loader/datapath.js';
import { STAT_GROUPS } from './layout/schema.js';
import { log } from './log.js';
import type { ReconcileResult } from './reconciler.js';

export class AgentMetrics {
  readonly registry = new client.Registry();
  private ready = false;
  private lastError: string | undefined;
  private lastPass = 0;

  readonly duration = new client.Histogram({
    name: 'podwarp_sync_duration_seconds',
    help: 'Duration of one reconcile pass (read back, plan, apply).',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly errors = new client.Counter({
    name: 'podwarp_errors_total',
    help: 'Errors by reason (reconcile, state_rejected, sweep).',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly endpoints = new client.Gauge({
    name: 'podwarp_endpoints',
    help: 'Local pod endpoints in pw_endpoints, by state.',
    labelNames: ['state'],
    registers: [this.registry],
  });
  private readonly skipped = new client.Gauge({
    name: 'podwarp_pods_skipped',
    help: 'Local pods that are not endpoints, by reason.',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly services = new client.Gauge({
    name: 'podwarp_services_dropped',
    help: 'Services left to kube-proxy because pw_svc/pw_backends would not hold them.',
    registers: [this.registry],
  });

  constructor(private readonly dp: Datapath) {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'podwarp_process_' });
    const dpRef = this.dp;
    new client.Gauge({
      name: 'podwarp_datapath_events',
      help: 'Datapath counters from pw_stats (monotonic), by program and reason: packets for tc, messages for sk_msg, events for socket hooks.',
      labelNames: ['program', 'reason'],
      registers: [this.registry],
      async collect() {
        const c = await dpRef.counters('pw_stats').catch(() => new Map<number, { packets: bigint }>());
        for (const g of STAT_GROUPS) g.reasons.forEach((r, i) => this.set({ program: g.prog, reason: r }, Number(c.get(g.base + i)?.packets ?? 0n)));
      },
    });
  }

  pass(r: ReconcileResult): void {
    this.duration.observe(r.ms / 1000);
    const enabled = [...r.desired.endpoints.values()].filter((e) => e.flags & 1).length;
    this.endpoints.set({ state: 'enabled' }, enabled);
    this.endpoints.set({ state: 'disabled' }, r.desired.endpoints.size - enabled);
    this.skipped.reset();
    for (const why of r.desired.skipped.values()) this.skipped.inc({ reason: why });
    this.services.set(r.services.dropped.length);
    this.ready = true;
    this.lastError = undefined;
    this.lastPass = Date.now();
  }

  failed(reason: string, err: string): void {
    this.errors.inc({ reason });
    this.lastError = err;
  }

  /** Serves until closed. */
  listen(addr: string): http.Server {
    const [host = '127.0.0.1', port = '9464'] = addr.includes(':') ? addr.split(':') : ['127.0.0.1', addr];
    const server = http.createServer((req, res) => {
      void (async () => {
        if (req.url === '/metrics') {
          res.setHeader('Content-Type', this.registry.contentType);
          res.end(await this.registry.metrics());
        } else if (req.url === '/healthz') {
          res.end('ok\n');
        } else if (req.url === '/readyz') {
          // ready once a pass succeeded and the last one did too
          const ok = this.ready && !this.lastError;
          res.statusCode = ok ? 200 : 503;
          res.end(ok ? `ready (last pass ${Math.round((Date.now() - this.lastPass) / 1000)} s ago)\n` : `not ready${this.lastError ? `: ${this.lastError}` : ''}\n`);
        } else {
          res.statusCode = 404;
          res.end('not found\n');
        }
      })().catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    });
    server.on('error', (e) => log.error({ addr: `${host}:${port}`, err: e.message }, 'metrics endpoint unavailable; the agent runs on without it'));
    server.listen(Number(port), host, () => {
      const a = server.address();
      log.info({ addr: typeof a === 'object' && a ? `${a.address}:${a.port}` : `${host}:${port}` }, 'metrics and health endpoints listening');
    });
    return server;
  }
}
