// The agent's HTTP endpoint: /metrics (Prometheus, prom-client), /healthz,
// /readyz. Listens on a local address only (default 127.0.0.1:9464).
import http from 'node:http';
import client from 'prom-client';
import type { Datapath } from '../loader/datapath.js';
import type { Part } from '../loader/parts.js';
import { EP_FLAGS, STAT_GROUPS } from '../abi/schema.js';
import { log } from '../host/log.js';
import type { PodsResult } from './reconciler.js';
import type { SvcSyncResult } from './services/sync.js';
import { COUNTED_MAPS, type Maps } from '../loader/maps.js';

/** Without the counting iterator (map-dump part refused) a count is a `bpftool map dump`: at most once per this. */
export const MAP_FILL_FALLBACK_MS = 60_000;

export interface MapFillRow {
  map: string;
  entries: number;
  maxEntries: number;
}

/**
 * The fill of the LRU maps (COUNTED_MAPS), for podwarp_map_entries and
 * podwarp_map_max_entries. Each count is one read of the map's counting
 * iterator (the kernel walks the map, one byte per entry: a millisecond or
 * so for 262,144 entries), so every scrape reads afresh; without the
 * iterator the count falls back to `bpftool map dump`, which prints every
 * entry as JSON, and is then kept for MAP_FILL_FALLBACK_MS.
 */
export class MapFill {
  private fallback = new Map<string, { at: number; entries: number }>();

  constructor(
    private readonly maps: Pick<Maps, 'countByIter' | 'count' | 'show' | 'pins'>,
    private readonly now: () => number = Date.now,
  ) {}

  async read(): Promise<MapFillRow[]> {
    const out: MapFillRow[] = [];
    for (const map of COUNTED_MAPS) {
      if (!this.maps.pins.hasMap(map)) continue;
      const maxEntries = (await this.maps.show(map)).max_entries;
      let entries = this.maps.countByIter(map);
      if (entries === undefined) {
        const c = this.fallback.get(map);
        if (c && this.now() - c.at < MAP_FILL_FALLBACK_MS) entries = c.entries;
        else {
          entries = (await this.maps.count(map)) ?? 0;
          this.fallback.set(map, { at: this.now(), entries });
        }
      }
      out.push({ map, entries, maxEntries });
    }
    return out;
  }
}

export class AgentMetrics {
  readonly registry = new client.Registry();
  private ready = false;
  private lastError: string | undefined;
  private lastPass = 0;
  /** Set while this agent waits for the node lock: what /readyz says. */
  private waitingFor: string | undefined;

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
  private readonly notAccelerated = new client.Gauge({
    name: 'podwarp_pods_not_accelerated',
    help: 'Local pod endpoints on the normal path, by reason (namespace-off, opted-out, policy-selected, policy-api-unavailable, bandwidth-shaped, ambient-mesh; attach-failed, cgroup-attach-failed, endpoint-write-failed: its hooks could not be attached, fail closed, retried with backoff); accelerated pod↔pod but partly: mesh-sidecar (socket LB off in a sidecar pod), istio-annotations (neither podwarp sidecar capture nor socket LB).',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly policyGaps = new client.Gauge({
    name: 'podwarp_policy_api_unavailable',
    help: 'Served policy APIs (and API discovery) podwarp cannot read right now; while any is 1 no pod is accelerated.',
    labelNames: ['api'],
    registers: [this.registry],
  });
  private readonly services = new client.Gauge({
    name: 'podwarp_services_dropped',
    help: 'Service frontends left to kube-proxy because pw_svc/pw_backends would not hold them.',
    registers: [this.registry],
  });
  private readonly left = new client.Gauge({
    name: 'podwarp_services_left',
    help: 'Service frontends written without a backend, left to kube-proxy (its REJECT, DROP, masquerade or firewall) or to the load balancer (ipMode Proxy), by reason.',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly frontends = new client.Gauge({
    name: 'podwarp_service_frontends',
    help: 'Service frontends (ClusterIP, port, protocol) in pw_svc.',
    registers: [this.registry],
  });
  readonly objects = new client.Gauge({
    name: 'podwarp_objects',
    help: 'Objects in the source cache, by kind (Kubernetes source).',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly skippedObjects = new client.Counter({
    name: 'podwarp_objects_skipped_total',
    help: 'Objects (or parts of one) not used, by kind and reason; each object is counted once per reason.',
    labelNames: ['kind', 'reason'],
    registers: [this.registry],
  });
  readonly events = new client.Counter({
    name: 'podwarp_watch_events_total',
    help: 'Informer events, by kind and type (add, update, delete).',
    labelNames: ['kind', 'type'],
    registers: [this.registry],
  });
  readonly lists = new client.Counter({
    name: 'podwarp_lists_total',
    help: 'Full lists by kind (start, and relists after 410 Gone or errors).',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly changeLatency = new client.Histogram({
    name: 'podwarp_change_to_maps_seconds',
    help: 'From the first event of a batch to the maps holding its result.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  private readonly lockWaitingGauge = new client.Gauge({
    name: 'podwarp_lock_waiting',
    help: 'Is 1 while this agent waits for the node lock (another podwarp process writes this datapath); it writes nothing meanwhile.',
    registers: [this.registry],
  });
  private readonly lockHeldGauge = new client.Gauge({
    name: 'podwarp_lock_held',
    help: "Is 1 while this agent holds the node lock, that is, while it is the node's one writer of the pinned datapath.",
    registers: [this.registry],
  });

  private readonly partsGauge = new client.Gauge({
    name: 'podwarp_optional_part',
    help: 'Optional datapath parts (loader/parts.ts): 1 for the state each is in (active, refused: the kernel refused it and podwarp runs without it, not-needed: the kernel does it itself), with the kernel reason when refused.',
    labelNames: ['part', 'state', 'reason'],
    registers: [this.registry],
  });

  constructor(private readonly dp: Datapath) {
    // the process and runtime metrics under podwarp_ (podwarp_process_cpu_seconds_total, podwarp_nodejs_heap_size_used_bytes, …)
    client.collectDefaultMetrics({ register: this.registry, prefix: 'podwarp_' });
    // one pw_stats dump per scrape, shared by the two gauges below (their
    // collect() calls start together; the next scrape reads the map again)
    let dump: Promise<Map<number, { packets: bigint; bytes: bigint }>> | undefined;
    const counters = () =>
      (dump ??= this.dp.maps
        .counters('pw_stats')
        .catch(() => new Map<number, { packets: bigint; bytes: bigint }>())
        .finally(() => setImmediate(() => (dump = undefined))));
    // counters the kernel keeps: each scrape reports pw_stats as it is (a
    // reloaded datapath starts again from 0, which rate() reads as a reset)
    const fromStats = (name: string, help: string, field: 'packets' | 'bytes') =>
      new client.Counter({
        name,
        help,
        labelNames: ['program', 'reason'],
        registers: [this.registry],
        async collect() {
          const c = await counters();
          this.reset();
          for (const g of STAT_GROUPS)
            g.reasons.forEach((r, i) => this.inc({ program: g.prog, reason: r }, Number(c.get(g.base + i)?.[field] ?? 0n)));
        },
      });
    fromStats(
      'podwarp_datapath_events_total',
      'Datapath counters from pw_stats, by program and reason: packets for tc, messages for sk_msg, events for socket hooks.',
      'packets',
    );
    // the LRU maps' fill, one read per scrape shared by the two gauges
    const fill = new MapFill(this.dp.maps);
    let fillRead: Promise<MapFillRow[]> | undefined;
    const fillRows = () =>
      (fillRead ??= fill
        .read()
        .catch(() => [])
        .finally(() => setImmediate(() => (fillRead = undefined))));
    const fromFill = (name: string, help: string, field: 'entries' | 'maxEntries') =>
      new client.Gauge({
        name,
        help,
        labelNames: ['map'],
        registers: [this.registry],
        async collect() {
          const rows = await fillRows();
          this.reset();
          for (const r of rows) this.set({ map: r.map }, r[field]);
        },
      });
    fromFill(
      'podwarp_map_entries',
      'Entries an LRU map holds now (pw_revnat, pw_udp_flow, pw_ct, …): near podwarp_map_max_entries the kernel evicts the least recently used (pw_revnat: a live flow may then show the backend address; podwarp_datapath_events_total{reason="revnat_evicted"}).',
      'entries',
    );
    fromFill('podwarp_map_max_entries', 'The size of each LRU map of podwarp_map_entries (max_entries of its pin).', 'maxEntries');
    fromStats(
      'podwarp_datapath_bytes_total',
      'Bytes counted with podwarp_datapath_events_total, by program and reason: frame bytes for tc, message bytes for sk_msg, 0 for socket hooks.',
      'bytes',
    );
  }

  /** The optional parts of the last load (Datapath.parts). */
  setParts(parts: Part[]): void {
    this.partsGauge.reset();
    for (const p of parts) this.partsGauge.set({ part: p.part, state: p.state, reason: p.reason ?? '' }, 1);
  }

  /** Policy APIs (and `discovery`) that cannot be read now (Snapshot.policyGaps). */
  setPolicyGaps(gaps: string[]): void {
    this.policyGaps.reset();
    for (const g of gaps) this.policyGaps.set({ api: g }, 1);
  }

  /** A successful pass: the node-local part and/or the services. */
  pass(ms: number, pods?: PodsResult, svc?: SvcSyncResult): void {
    this.duration.observe(ms / 1000);
    if (pods) {
      const enabled = [...pods.desired.endpoints.values()].filter((e) => e.flags & EP_FLAGS.ENABLED).length;
      this.endpoints.set({ state: 'enabled' }, enabled);
      this.endpoints.set({ state: 'disabled' }, pods.desired.endpoints.size - enabled);
      this.skipped.reset();
      for (const why of pods.desired.skipped.values()) this.skipped.inc({ reason: why });
      this.notAccelerated.reset();
      for (const why of [...pods.desired.disabled.values(), ...pods.desired.partial.values()]) this.notAccelerated.inc({ reason: why });
    }
    if (svc) {
      this.services.set(svc.dropped);
      for (const [reason, n] of Object.entries(svc.left)) this.left.set({ reason }, n);
      this.frontends.set(svc.frontends);
    }
    this.ready = true;
    this.lastError = undefined;
    this.lastPass = Date.now();
  }

  /** Waiting for the node lock: not ready, and why. */
  lockWaiting(why: string): void {
    this.waitingFor = why;
    this.lockWaitingGauge.set(1);
    this.lockHeldGauge.set(0);
  }

  /** The node lock is ours (held = false: released or lost). */
  lockHeld(held: boolean): void {
    this.waitingFor = undefined;
    this.lockWaitingGauge.set(0);
    this.lockHeldGauge.set(held ? 1 : 0);
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
          // ready once a pass succeeded and the last one did too; never while waiting for the node lock
          const ok = this.ready && !this.lastError && !this.waitingFor;
          res.statusCode = ok ? 200 : 503;
          res.end(
            ok
              ? `ready (last pass ${Math.round((Date.now() - this.lastPass) / 1000)} s ago)\n`
              : `not ready${this.waitingFor ? `: ${this.waitingFor}` : this.lastError ? `: ${this.lastError}` : ''}\n`,
          );
        } else {
          res.statusCode = 404;
          res.end('not found\n');
        }
      })().catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    });
    server.on('error', (e) =>
      log.error({ addr: `${host}:${port}`, err: e.message }, 'metrics endpoint unavailable; the agent runs on without it'),
    );
    server.listen(Number(port), host, () => {
      const a = server.address();
      log.info(
        { addr: typeof a === 'object' && a ? `${a.address}:${a.port}` : `${host}:${port}` },
        'metrics and health endpoints listening',
      );
    });
    return server;
  }
}
