/**
 * A Kubernetes API server double for tests.
 *
 * Speaks enough of the real list/watch/patch protocol (plain node:http, JSON only)
 * for @kubernetes/client-node 1.x (ListWatch/Watch and the typed CoreV1Api,
 * DiscoveryV1Api, NetworkingV1Api) to work against it unmodified:
 *
 *  - one global resourceVersion counter for all resources (like etcd);
 *  - list with fieldSelector / labelSelector / limit + continue;
 *  - watch (chunked, one JSON event per line, flushed per event) with replay from a
 *    resourceVersion, 410 "Expired" ERROR events for compacted history, bookmarks,
 *    timeoutSeconds, selector transitions (ADDED/DELETED when an object starts/stops
 *    matching a watcher's selectors);
 *  - GET/PUT/PATCH/DELETE of single objects and POST to collections;
 *  - fault injection: compact(), dropWatches(), restart(), failResource(), failDiscovery().
 *
 * Objects are stored as plain JSON and deep-copied on the way in and out.
 *
 * This file assembles the parts, one job each: resources.ts (what is served
 * where), store.ts (objects, resourceVersions, history), selectors.ts, patch.ts,
 * router.ts (path → resource), handlers.ts (the requests), watch.ts (streams and
 * fan-out), faults.ts (injected failures), listener.ts (the socket), http.ts
 * (JSON and `Status` on the wire), json.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Faults } from './faults.js';
import { handle, type Api, type RequestStats } from './handlers.js';
import { clone } from './json.js';
import { Listener } from './listener.js';
import { RESOURCES, RESOURCE_NAMES, type ApiObject, type Resource } from './resources.js';
import { Store, type StoredEvent } from './store.js';
import { Watches } from './watch.js';

export type { ApiObject, Resource } from './resources.js';

export interface ApiServerOptions {
  /** 0 = any free port (default) */
  port?: number;
  /** events kept for watch resume, default 10000 */
  historyLimit?: number;
  /** default 1000; bookmarks only go to watches that asked allowWatchBookmarks=true */
  bookmarkMs?: number;
  /** the server ends each watch cleanly after this; default 0 = never */
  watchTimeoutMs?: number;
  /** serve HTTPS with this key and certificate (PEM), as a real API server does (in-cluster clients insist on it) */
  tls?: { key: string; cert: string };
}

export class FakeApiServer {
  readonly stats: RequestStats;
  /** called (synchronously) right after an event was written to at least one watcher socket */
  onEventWritten?: (res: Resource, type: string, obj: ApiObject, atMs: number) => void;

  private readonly store: Store;
  private readonly watches: Watches;
  private readonly faults: Faults;
  private readonly served = new Set<Resource>();
  private readonly api: Api;
  private readonly tls: ApiServerOptions['tls'];
  private listener: Listener | undefined;
  /** the port listened on, kept across restarts */
  private port = 0;
  private stopped = false;

  private constructor(opts: ApiServerOptions) {
    this.tls = opts.tls;
    this.store = new Store(opts.historyLimit ?? 10000, (e) => this.published(e));
    this.watches = new Watches(this.store, { bookmarkMs: opts.bookmarkMs ?? 1000, watchTimeoutMs: opts.watchTimeoutMs ?? 0 });
    this.faults = new Faults(this.watches);
    const zero = () => Object.fromEntries(RESOURCE_NAMES.map((r) => [r, 0])) as Record<Resource, number>;
    this.stats = { list: zero(), watch: zero(), patch: zero() };
    this.api = { store: this.store, watches: this.watches, faults: this.faults, served: this.served, stats: this.stats };
  }

  static async start(opts: ApiServerOptions = {}): Promise<FakeApiServer> {
    const api = new FakeApiServer(opts);
    await api.listen(opts.port ?? 0);
    return api;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  get resourceVersion(): number {
    return this.store.resourceVersion;
  }

  /** writes a kubeconfig (cluster server = url, user token, current-context) into dir, returns its path */
  kubeconfig(dir: string): string {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'kubeconfig');
    const cfg = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        // client-node refuses plain http unless insecure-skip-tls-verify is set
        { name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } },
      ],
      users: [{ name: 'fake', user: { token: 'fake-token' } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace: 'default' } }],
      'current-context': 'fake',
      preferences: {},
    };
    fs.writeFileSync(file, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
    return file;
  }

  // ---- programmatic API ---------------------------------------------------

  create(res: Resource, obj: ApiObject): ApiObject {
    return clone(this.store.create(res, clone(obj)));
  }

  update(res: Resource, obj: ApiObject): ApiObject {
    const o = this.store.normalize(res, clone(obj));
    const key = this.store.key(res, o);
    const existing = this.store.objects(res).get(key);
    if (!existing) throw new Error(`${res} "${key}" not found`);
    return clone(this.store.replace(res, key, existing, o));
  }

  apply(res: Resource, obj: ApiObject): ApiObject {
    const o = this.store.normalize(res, clone(obj));
    const key = this.store.key(res, o);
    const existing = this.store.objects(res).get(key);
    return clone(existing ? this.store.replace(res, key, existing, o) : this.store.create(res, o));
  }

  delete(res: Resource, namespace: string | undefined, name: string): void {
    this.store.delete(res, namespace, name);
  }

  get(res: Resource, namespace: string | undefined, name: string): ApiObject | undefined {
    const o = this.store.objects(res).get(this.store.keyOf(res, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(res: Resource): ApiObject[] {
    return [...this.store.objects(res).values()].map((o) => clone(o));
  }

  /** bulk-create many objects quickly; events are recorded like create() */
  load(res: Resource, objs: ApiObject[]): void {
    for (const o of objs) this.store.create(res, clone(o));
  }

  /** serve (or stop serving) an optional policy API: it appears in discovery (/apis) and answers by path */
  serve(res: Resource, on = true): void {
    if (!RESOURCES[res].optional) throw new Error(`${res} is always served`);
    if (on) this.served.add(res);
    else this.served.delete(res);
  }

  watchCount(res?: Resource): number {
    return this.watches.count(res);
  }

  // ---- fault injection ----------------------------------------------------

  /** make every request for res (list, watch, get…) fail with this HTTP status, and end its open watches; undefined: answer again */
  failResource(res: Resource, code: number | undefined): void {
    this.faults.failResource(res, code);
  }

  /** make API discovery (/apis and each group version) fail with this HTTP status; undefined: answer again */
  failDiscovery(code: number | undefined): void {
    this.faults.failDiscovery(code);
  }

  /** forget all history: a watch resuming from any older resourceVersion gets 410 Gone */
  compact(): void {
    this.store.compact();
  }

  /** destroy every open watch connection abruptly; returns how many */
  dropWatches(): number {
    return this.watches.dropAll();
  }

  /** close the listener and every connection, stay down for downMs (connects refused), listen again on the same port */
  async restart(downMs = 200): Promise<void> {
    if (this.stopped) throw new Error('FakeApiServer: restart() after stop()');
    this.compact();
    await this.shutdown();
    await new Promise((r) => setTimeout(r, downMs));
    if (this.stopped) return;
    this.compact();
    await this.listen(this.port);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.shutdown();
  }

  // ---- assembly -----------------------------------------------------------

  private async listen(port: number): Promise<void> {
    this.listener = await Listener.open(port, this.tls, (req, res) => handle(this.api, req, res));
    this.port = this.listener.port;
  }

  /** every change: to the watches it concerns, then to onEventWritten when one got it */
  private published(e: StoredEvent): void {
    if (this.watches.publish(e) && this.onEventWritten) {
      this.onEventWritten(e.res, e.type, clone(e.obj), performance.now() + performance.timeOrigin);
    }
  }

  private async shutdown(): Promise<void> {
    const listener = this.listener;
    this.listener = undefined;
    this.watches.closeAll();
    await listener?.close();
  }
}
