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
 *  - fault injection: compact(), dropWatches(), restart().
 *
 * Objects are stored as plain JSON and deep-copied on the way in and out.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

export type Resource =
  | 'namespaces'
  | 'pods'
  | 'services'
  | 'endpointslices'
  | 'networkpolicies'
  // policy APIs besides NetworkPolicy: only served (in discovery and by path) after serve()
  | 'adminnetworkpolicies'
  | 'globalnetworkpolicies.crd.projectcalico.org'
  | 'networkpolicies.crd.projectcalico.org'
  | 'ciliumnetworkpolicies';

export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

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

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface ResourceInfo {
  prefix: string;
  apiVersion: string;
  kind: string;
  namespaced: boolean;
  /** the path segment, when it differs from the key */
  plural?: string;
  /** a CRD-like API: served only after serve() */
  optional?: boolean;
}

const RESOURCES: Record<Resource, ResourceInfo> = {
  namespaces: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Namespace', namespaced: false },
  pods: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Pod', namespaced: true },
  services: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Service', namespaced: true },
  endpointslices: {
    prefix: '/apis/discovery.k8s.io/v1',
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    namespaced: true,
  },
  networkpolicies: {
    prefix: '/apis/networking.k8s.io/v1',
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    namespaced: true,
  },
  adminnetworkpolicies: {
    prefix: '/apis/policy.networking.k8s.io/v1alpha1',
    apiVersion: 'policy.networking.k8s.io/v1alpha1',
    kind: 'AdminNetworkPolicy',
    namespaced: false,
    optional: true,
  },
  'globalnetworkpolicies.crd.projectcalico.org': {
    prefix: '/apis/crd.projectcalico.org/v1',
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'GlobalNetworkPolicy',
    namespaced: false,
    plural: 'globalnetworkpolicies',
    optional: true,
  },
  'networkpolicies.crd.projectcalico.org': {
    prefix: '/apis/crd.projectcalico.org/v1',
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'NetworkPolicy',
    namespaced: true,
    plural: 'networkpolicies',
    optional: true,
  },
  ciliumnetworkpolicies: {
    prefix: '/apis/cilium.io/v2',
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    namespaced: true,
    optional: true,
  },
};
const plural = (r: Resource): string => RESOURCES[r].plural ?? r;
const RESOURCE_NAMES = Object.keys(RESOURCES) as Resource[];
const GROUP_PREFIXES = [...new Set(RESOURCE_NAMES.map((r) => RESOURCES[r].prefix))];

interface StoredEvent {
  rv: number;
  res: Resource;
  type: EventType;
  /** the object after the change (for DELETED: the last state with the deletion's resourceVersion) */
  obj: ApiObject;
  /** the object before the change (MODIFIED only) */
  prev?: ApiObject;
  objJson?: string;
  /** prev with resourceVersion = rv, serialized: sent as DELETED to watchers the object stopped matching */
  prevDeletedJson?: string;
}

interface FieldReq {
  field: string;
  op: '=' | '!=';
  value: string;
}
interface LabelReq {
  key: string;
  op: '=' | '!=' | 'exists' | '!exists' | 'in' | 'notin';
  values: string[];
}
interface Selectors {
  ns?: string;
  fields: FieldReq[];
  labels: LabelReq[];
}

interface Watcher {
  res: Resource;
  sel: Selectors;
  /** only events with rv > sinceRv are delivered */
  sinceRv: number;
  bookmarks: boolean;
  http: http.ServerResponse;
  timers: NodeJS.Timeout[];
  closed: boolean;
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isPlainObject(a)) {
    if (!isPlainObject(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function notFound(res: Resource, name: string): HttpError {
  return new HttpError(404, 'NotFound', `${res} "${name}" not found`, { name, kind: res });
}

// ---------------------------------------------------------------------------
// selectors

/** split on commas that are not inside parentheses */
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

function parseLabelSelector(s: string | null): LabelReq[] {
  if (!s) return [];
  return splitTerms(s).map((term) => {
    const bad = () => new HttpError(400, 'BadRequest', `unable to parse requirement: invalid label selector "${s}"`);
    let m = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(term);
    if (m) {
      const values = m[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      if (!LABEL_KEY.test(m[1]!)) throw bad();
      return { key: m[1]!, op: m[2] as 'in' | 'notin', values };
    }
    if (term.startsWith('!')) {
      const key = term.slice(1).trim();
      if (!LABEL_KEY.test(key)) throw bad();
      return { key, op: '!exists', values: [] };
    }
    m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
    if (m) {
      if (!LABEL_KEY.test(m[1]!)) throw bad();
      return { key: m[1]!, op: m[2] === '!=' ? '!=' : '=', values: [m[3]!] };
    }
    if (!LABEL_KEY.test(term)) throw bad();
    return { key: term, op: 'exists', values: [] };
  });
}

function parseFieldSelector(s: string | null): FieldReq[] {
  if (!s) return [];
  return splitTerms(s).map((term) => {
    const m = /^([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector: '${term}'`);
    return { field: m[1]!, op: m[2] === '!=' ? '!=' : '=', value: m[3]!.trim() };
  });
}

function fieldValue(obj: ApiObject, field: string): string {
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (!isPlainObject(cur)) return '';
    cur = cur[part];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'string' ? cur : String(cur);
}

function matches(obj: ApiObject, sel: Selectors): boolean {
  if (sel.ns !== undefined && obj.metadata.namespace !== sel.ns) return false;
  for (const f of sel.fields) {
    const v = fieldValue(obj, f.field);
    if ((v === f.value) !== (f.op === '=')) return false;
  }
  if (sel.labels.length > 0) {
    const labels = obj.metadata.labels ?? {};
    for (const l of sel.labels) {
      const has = Object.prototype.hasOwnProperty.call(labels, l.key);
      const v = labels[l.key];
      switch (l.op) {
        case '=':
          if (v !== l.values[0]) return false;
          break;
        case '!=':
          if (v === l.values[0]) return false;
          break;
        case 'exists':
          if (!has) return false;
          break;
        case '!exists':
          if (has) return false;
          break;
        case 'in':
          if (v === undefined || !l.values.includes(v)) return false;
          break;
        case 'notin':
          if (v !== undefined && l.values.includes(v)) return false;
          break;
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// patches

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return clone(patch);
  const result: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else result[k] = mergePatch(result[k], v);
  }
  return result;
}

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string' || (p !== '' && !p.startsWith('/'))) {
    throw new HttpError(422, 'Invalid', `invalid JSON pointer: ${JSON.stringify(p)}`);
  }
  if (p === '') return [];
  return p
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) {
    throw new HttpError(400, 'BadRequest', 'json patch must be an array of operations');
  }
  let root: unknown = clone(doc);
  const fail = (msg: string) => new HttpError(422, 'Invalid', `json patch: ${msg}`);

  const getAt = (tokens: string[]): unknown => {
    let cur: unknown = root;
    for (const t of tokens) {
      if (Array.isArray(cur)) {
        const i = Number(t);
        if (!/^\d+$/.test(t) || i >= cur.length) throw fail(`path not found: /${tokens.join('/')}`);
        cur = cur[i];
      } else if (isPlainObject(cur)) {
        if (!Object.prototype.hasOwnProperty.call(cur, t)) throw fail(`path not found: /${tokens.join('/')}`);
        cur = cur[t];
      } else throw fail(`path not found: /${tokens.join('/')}`);
    }
    return cur;
  };
  const add = (tokens: string[], value: unknown) => {
    if (tokens.length === 0) {
      root = clone(value);
      return;
    }
    const parent = getAt(tokens.slice(0, -1));
    const last = tokens[tokens.length - 1]!;
    if (Array.isArray(parent)) {
      if (last === '-') parent.push(clone(value));
      else {
        const i = Number(last);
        if (!/^\d+$/.test(last) || i > parent.length) throw fail(`invalid array index: ${last}`);
        parent.splice(i, 0, clone(value));
      }
    } else if (isPlainObject(parent)) parent[last] = clone(value);
    else throw fail(`cannot add to non-container at /${tokens.join('/')}`);
  };
  const remove = (tokens: string[]): unknown => {
    if (tokens.length === 0) throw fail('cannot remove the root');
    const value = getAt(tokens);
    const parent = getAt(tokens.slice(0, -1));
    const last = tokens[tokens.length - 1]!;
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else if (isPlainObject(parent)) delete parent[last];
    return value;
  };

  for (const op of ops) {
    if (!isPlainObject(op) || typeof op.op !== 'string') throw fail('operation must be an object with "op"');
    const p = parsePointer(op.path);
    switch (op.op) {
      case 'add':
        if (!('value' in op)) throw fail('add requires "value"');
        add(p, op.value);
        break;
      case 'remove':
        remove(p);
        break;
      case 'replace':
        if (!('value' in op)) throw fail('replace requires "value"');
        getAt(p);
        if (p.length === 0) root = clone(op.value);
        else {
          remove(p);
          add(p, op.value);
        }
        break;
      case 'test':
        if (!deepEqual(getAt(p), op.value)) throw fail(`test failed at ${String(op.path)}`);
        break;
      case 'move': {
        const v = remove(parsePointer(op.from));
        add(p, v);
        break;
      }
      case 'copy':
        add(p, getAt(parsePointer(op.from)));
        break;
      default:
        throw fail(`unsupported op ${op.op}`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------
// routing

interface Route {
  res: Resource;
  ns?: string;
  name?: string;
  subresource?: string;
  watchPrefix: boolean;
}

function route(pathname: string): Route | null {
  const prefix = GROUP_PREFIXES.find((p) => pathname === p || pathname.startsWith(p + '/'));
  if (!prefix) return null;
  let segs: string[];
  try {
    segs = pathname
      .slice(prefix.length)
      .split('/')
      .filter((s) => s !== '')
      .map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
  let watchPrefix = false;
  if (segs[0] === 'watch') {
    watchPrefix = true;
    segs = segs.slice(1);
  }
  const inGroup = (seg: string): Resource | undefined => RESOURCE_NAMES.find((r) => plural(r) === seg && RESOURCES[r].prefix === prefix);

  const [a, b, c, d, e, ...rest] = segs;
  if (a === undefined || rest.length > 0) return null;
  const rc = c === undefined ? undefined : inGroup(c);
  if (a === 'namespaces' && b !== undefined && rc && RESOURCES[rc].namespaced) {
    // /namespaces/{ns}/{res}[/{name}[/{sub}]]
    if (d === undefined) return { res: rc, ns: b, watchPrefix };
    return { res: rc, ns: b, name: d, subresource: e, watchPrefix };
  }
  const ra = inGroup(a);
  if (!ra || d !== undefined) return null;
  if (ra !== a) return b === undefined ? { res: ra, watchPrefix } : null;
  if (a === 'namespaces') {
    if (b === undefined) return { res: a, watchPrefix };
    if (c !== undefined && !['status', 'finalize'].includes(c)) return null;
    return { res: a, name: b, subresource: c, watchPrefix };
  }
  if (b !== undefined) return null; // /pods/{name} without a namespace does not exist
  return { res: a, watchPrefix };
}

// ---------------------------------------------------------------------------

export class FakeApiServer {
  readonly url: string;
  readonly stats: { list: Record<Resource, number>; watch: Record<Resource, number>; patch: Record<Resource, number> };
  /** called (synchronously) right after an event was written to at least one watcher socket */
  onEventWritten?: (res: Resource, type: string, obj: ApiObject, atMs: number) => void;

  private rv = 1000;
  /** every event with rv > compactedRv is in history */
  private compactedRv = 1000;
  private history: StoredEvent[] = [];
  private historyStart = 0;
  private readonly store = new Map<Resource, Map<string, ApiObject>>();
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private server: http.Server | undefined;
  private readonly tls: ApiServerOptions['tls'];
  private stopped = false;
  private readonly served = new Set<Resource>();
  private readonly failing = new Map<Resource, number>();
  private discoveryFailing: number | undefined;
  private readonly historyLimit: number;
  private readonly bookmarkMs: number;
  private readonly watchTimeoutMs: number;

  private constructor(
    private readonly port: number,
    opts: ApiServerOptions,
  ) {
    this.url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    this.tls = opts.tls;
    this.historyLimit = opts.historyLimit ?? 10000;
    this.bookmarkMs = opts.bookmarkMs ?? 1000;
    this.watchTimeoutMs = opts.watchTimeoutMs ?? 0;
    const zero = () => Object.fromEntries(RESOURCE_NAMES.map((r) => [r, 0])) as Record<Resource, number>;
    this.stats = { list: zero(), watch: zero(), patch: zero() };
    for (const r of RESOURCE_NAMES) this.store.set(r, new Map());
  }

  static async start(opts: ApiServerOptions = {}): Promise<FakeApiServer> {
    const server = FakeApiServer.makeHttpServer(opts.tls);
    const port = await FakeApiServer.listen(server, opts.port ?? 0);
    const api = new FakeApiServer(port, opts);
    api.attach(server);
    return api;
  }

  get resourceVersion(): number {
    return this.rv;
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
    return clone(this.doCreate(res, clone(obj)));
  }

  update(res: Resource, obj: ApiObject): ApiObject {
    const o = this.normalize(res, clone(obj));
    const key = this.key(res, o);
    const existing = this.objects(res).get(key);
    if (!existing) throw new Error(`${res} "${key}" not found`);
    return clone(this.doReplace(res, key, existing, o));
  }

  apply(res: Resource, obj: ApiObject): ApiObject {
    const o = this.normalize(res, clone(obj));
    const key = this.key(res, o);
    const existing = this.objects(res).get(key);
    return clone(existing ? this.doReplace(res, key, existing, o) : this.doCreate(res, o));
  }

  delete(res: Resource, namespace: string | undefined, name: string): void {
    this.doDelete(res, namespace, name);
  }

  get(res: Resource, namespace: string | undefined, name: string): ApiObject | undefined {
    const o = this.objects(res).get(this.keyOf(res, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(res: Resource): ApiObject[] {
    return [...this.objects(res).values()].map((o) => clone(o));
  }

  /** bulk-create many objects quickly; events are recorded like create() */
  load(res: Resource, objs: ApiObject[]): void {
    for (const o of objs) this.doCreate(res, clone(o));
  }

  /** serve (or stop serving) an optional policy API: it appears in discovery (/apis) and answers by path */
  serve(res: Resource, on = true): void {
    if (!RESOURCES[res].optional) throw new Error(`${res} is always served`);
    if (on) this.served.add(res);
    else this.served.delete(res);
  }

  /** make every request for res (list, watch, get…) fail with this HTTP status, and end its open watches; undefined: answer again */
  failResource(res: Resource, code: number | undefined): void {
    if (code === undefined) this.failing.delete(res);
    else {
      this.failing.set(res, code);
      for (const w of [...this.watchers]) if (w.res === res) w.http.destroy();
    }
  }

  /** make API discovery (/apis and each group version) fail with this HTTP status; undefined: answer again */
  failDiscovery(code: number | undefined): void {
    this.discoveryFailing = code;
  }

  private serveDiscovery(pathname: string, res: http.ServerResponse): void {
    if (this.discoveryFailing) throw new HttpError(this.discoveryFailing, 'InternalError', 'discovery is failing (test)');
    const live = RESOURCE_NAMES.filter((r) => !RESOURCES[r].optional || this.served.has(r));
    if (pathname === '/apis') {
      const gvs = [...new Set(live.map((r) => RESOURCES[r].apiVersion).filter((v) => v.includes('/')))];
      const groups = [...new Set(gvs.map((gv) => gv.split('/')[0]!))].map((name) => {
        const versions = gvs.filter((gv) => gv.startsWith(name + '/')).map((gv) => ({ groupVersion: gv, version: gv.split('/')[1]! }));
        return { name, versions, preferredVersion: versions[0] };
      });
      this.sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups });
      return;
    }
    const inGv = live.filter((r) => RESOURCES[r].prefix === pathname);
    if (!inGv.length) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    this.sendJson(res, 200, {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: RESOURCES[inGv[0]!].apiVersion,
      resources: inGv.map((r) => ({
        name: plural(r),
        singularName: '',
        namespaced: RESOURCES[r].namespaced,
        kind: RESOURCES[r].kind,
        verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
      })),
    });
  }

  /** forget all history: a watch resuming from any older resourceVersion gets 410 Gone */
  compact(): void {
    this.history = [];
    this.historyStart = 0;
    this.compactedRv = this.rv;
  }

  /** destroy every open watch connection abruptly; returns how many */
  dropWatches(): number {
    const ws = [...this.watchers];
    for (const w of ws) {
      this.closeWatcher(w);
      w.http.socket?.destroy();
      w.http.destroy();
    }
    return ws.length;
  }

  /** close the listener and every connection, stay down for downMs (connects refused), listen again on the same port */
  async restart(downMs = 200): Promise<void> {
    if (this.stopped) throw new Error('FakeApiServer: restart() after stop()');
    this.compact();
    await this.shutdown();
    await new Promise((r) => setTimeout(r, downMs));
    if (this.stopped) return;
    this.compact();
    const server = FakeApiServer.makeHttpServer(this.tls);
    await FakeApiServer.listen(server, this.port);
    this.attach(server);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.shutdown();
  }

  watchCount(res?: Resource): number {
    if (res === undefined) return this.watchers.size;
    let n = 0;
    for (const w of this.watchers) if (w.res === res) n++;
    return n;
  }

  // ---- storage internals --------------------------------------------------

  private objects(res: Resource): Map<string, ApiObject> {
    const m = this.store.get(res);
    if (!m) throw new Error(`unknown resource ${String(res)}`);
    return m;
  }

  private keyOf(res: Resource, namespace: string | undefined, name: string): string {
    return RESOURCES[res].namespaced ? `${namespace ?? 'default'}/${name}` : name;
  }

  private key(res: Resource, o: ApiObject): string {
    return this.keyOf(res, o.metadata.namespace, o.metadata.name);
  }

  /** a copy of o with apiVersion/kind first and the namespace set; validates the name */
  private normalize(res: Resource, o: ApiObject): ApiObject {
    const info = RESOURCES[res];
    if (!info) throw new Error(`unknown resource ${String(res)}`);
    if (!isPlainObject(o) || !isPlainObject(o.metadata) || typeof o.metadata.name !== 'string' || !o.metadata.name) {
      throw new Error(`${res}: metadata.name is required`);
    }
    const { apiVersion: _a, kind: _k, ...rest } = o;
    // metadata gets a fresh object: it is mutated below and by callers, and may be shared with a stored object
    const out: ApiObject = { apiVersion: info.apiVersion, kind: info.kind, ...rest, metadata: { ...rest.metadata } };
    if (info.namespaced) out.metadata.namespace = out.metadata.namespace || 'default';
    else delete out.metadata.namespace;
    return out;
  }

  /** o is owned by the store afterwards */
  private doCreate(res: Resource, input: ApiObject): ApiObject {
    const o = this.normalize(res, input);
    const key = this.key(res, o);
    const objs = this.objects(res);
    if (objs.has(key)) throw new Error(`${res} "${key}" already exists`);
    o.metadata.uid = o.metadata.uid || randomUUID();
    o.metadata.creationTimestamp = o.metadata.creationTimestamp || nowTimestamp();
    o.metadata.resourceVersion = String(++this.rv);
    objs.set(key, o);
    this.record({ rv: this.rv, res, type: 'ADDED', obj: o });
    return o;
  }

  /** o is normalized and owned by the store afterwards */
  private doReplace(res: Resource, key: string, existing: ApiObject, o: ApiObject): ApiObject {
    o.metadata.uid = existing.metadata.uid;
    o.metadata.creationTimestamp = existing.metadata.creationTimestamp;
    o.metadata.resourceVersion = String(++this.rv);
    this.objects(res).set(key, o);
    this.record({ rv: this.rv, res, type: 'MODIFIED', obj: o, prev: existing });
    return o;
  }

  private doDelete(res: Resource, namespace: string | undefined, name: string): ApiObject | undefined {
    const key = this.keyOf(res, namespace, name);
    const objs = this.objects(res);
    const existing = objs.get(key);
    if (!existing) return undefined;
    objs.delete(key);
    const gone: ApiObject = { ...existing, metadata: { ...existing.metadata, resourceVersion: String(++this.rv) } };
    this.record({ rv: this.rv, res, type: 'DELETED', obj: gone });
    return gone;
  }

  private record(e: StoredEvent): void {
    this.history.push(e);
    while (this.history.length - this.historyStart > this.historyLimit) {
      this.compactedRv = this.history[this.historyStart]!.rv;
      this.historyStart++;
    }
    if (this.historyStart > 4096 && this.historyStart * 2 > this.history.length) {
      this.history = this.history.slice(this.historyStart);
      this.historyStart = 0;
    }
    let written = false;
    for (const w of this.watchers) {
      if (w.res === e.res && this.deliver(w, e)) written = true;
    }
    if (written && this.onEventWritten) {
      this.onEventWritten(e.res, e.type, clone(e.obj), performance.now() + performance.timeOrigin);
    }
  }

  /** the line a watcher should get for an event, or undefined */
  private eventLine(w: Watcher, e: StoredEvent): string | undefined {
    if (e.rv <= w.sinceRv) return undefined;
    const objJson = () => (e.objJson ??= JSON.stringify(e.obj));
    const now = matches(e.obj, w.sel);
    if (e.type !== 'MODIFIED' || !e.prev) {
      return now ? `{"type":"${e.type}","object":${objJson()}}\n` : undefined;
    }
    const before = matches(e.prev, w.sel);
    if (now) return `{"type":"${before ? 'MODIFIED' : 'ADDED'}","object":${objJson()}}\n`;
    if (!before) return undefined;
    // stopped matching: the watcher sees it deleted (last matching state, at this event's revision)
    e.prevDeletedJson ??= JSON.stringify({
      ...e.prev,
      metadata: { ...e.prev.metadata, resourceVersion: String(e.rv) },
    });
    return `{"type":"DELETED","object":${e.prevDeletedJson}}\n`;
  }

  private deliver(w: Watcher, e: StoredEvent): boolean {
    if (w.closed) return false;
    const line = this.eventLine(w, e);
    if (line === undefined) return false;
    w.http.write(line);
    return true;
  }

  // ---- HTTP ---------------------------------------------------------------

  private static makeHttpServer(tls?: ApiServerOptions['tls']): http.Server {
    // an https.Server is an http.Server as far as this class is concerned (same request/response objects)
    const server = tls
      ? (https.createServer({ key: tls.key, cert: tls.cert, noDelay: true }) as unknown as http.Server)
      : http.createServer({ noDelay: true });
    server.keepAliveTimeout = 30_000;
    return server;
  }

  private static listen(server: http.Server, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });
  }

  private attach(server: http.Server): void {
    this.server = server;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('request', (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.fail(res, err);
      });
    });
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  private async shutdown(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const w of [...this.watchers]) this.closeWatcher(w);
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    const e =
      err instanceof HttpError
        ? err
        : new HttpError(500, 'InternalError', `internal error: ${err instanceof Error ? err.message : String(err)}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.sendJson(res, e.code, statusBody(e.code, e.reason, e.message, e.details));
  }

  private sendJson(res: http.ServerResponse, code: number, body: unknown): void {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(code, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-cache, private',
    });
    res.end(text);
  }

  private readBody(req: http.IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 32 << 20) {
          reject(new HttpError(413, 'RequestEntityTooLarge', 'request body too large'));
          req.destroy();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  private async readJson(req: http.IncomingMessage): Promise<unknown> {
    const text = await this.readBody(req);
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `invalid JSON body: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    req.on('error', () => undefined);
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    if (['/healthz', '/readyz', '/livez'].includes(url.pathname)) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
      return;
    }
    if (url.pathname === '/version') {
      this.sendJson(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-podwarp-fake', platform: 'linux/amd64' });
      return;
    }
    if (method === 'GET' && (url.pathname === '/apis' || GROUP_PREFIXES.includes(url.pathname)))
      return this.serveDiscovery(url.pathname, res);
    const r = route(url.pathname);
    if (!r || (RESOURCES[r.res].optional && !this.served.has(r.res)))
      throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    const failing = this.failing.get(r.res);
    if (failing) throw new HttpError(failing, failing === 403 ? 'Forbidden' : 'InternalError', `${r.res} is failing (test)`);
    const q = url.searchParams;

    if (r.name === undefined) {
      const isWatch = r.watchPrefix || q.get('watch') === 'true' || q.get('watch') === '1';
      if (method === 'GET' && isWatch) return this.serveWatch(r, q, res);
      if (r.watchPrefix) throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      if (method === 'GET') return this.serveList(r, q, res);
      if (method === 'POST') return this.serveCreate(r, await this.readJson(req), res);
      throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
    if (r.watchPrefix) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');

    const name = r.name;
    const key = this.keyOf(r.res, r.ns, name);
    switch (method) {
      case 'GET': {
        const o = this.objects(r.res).get(key);
        if (!o) throw notFound(r.res, name);
        this.sendJson(res, 200, o);
        return;
      }
      case 'PUT': {
        const body = await this.readJson(req);
        this.sendJson(res, 200, this.httpReplace(r, key, body));
        return;
      }
      case 'PATCH': {
        this.stats.patch[r.res]++;
        const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (
          ct !== 'application/merge-patch+json' &&
          ct !== 'application/strategic-merge-patch+json' &&
          ct !== 'application/json-patch+json'
        ) {
          throw new HttpError(
            415,
            'UnsupportedMediaType',
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`,
          );
        }
        const body = await this.readJson(req);
        const existing = this.objects(r.res).get(key);
        if (!existing) throw notFound(r.res, name);
        let patched: unknown;
        if (ct === 'application/json-patch+json') patched = jsonPatch(existing, body);
        else {
          if (!isPlainObject(body)) throw new HttpError(400, 'BadRequest', 'merge patch body must be a JSON object');
          patched = mergePatch(existing, body);
        }
        this.sendJson(res, 200, this.commitWrite(r, key, existing, patched));
        return;
      }
      case 'DELETE': {
        const gone = this.doDelete(r.res, r.ns, name);
        if (!gone) throw notFound(r.res, name);
        this.sendJson(res, 200, gone);
        return;
      }
      default:
        throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  private serveCreate(r: Route, body: unknown, res: http.ServerResponse): void {
    if (!isPlainObject(body) || !isPlainObject(body.metadata) || typeof body.metadata.name !== 'string' || !body.metadata.name) {
      throw new HttpError(422, 'Invalid', `${r.res}: metadata.name: Required value`);
    }
    const o = clone(body) as ApiObject;
    if (r.ns !== undefined) {
      if (o.metadata.namespace && o.metadata.namespace !== r.ns) {
        throw new HttpError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      o.metadata.namespace = r.ns;
    } else if (RESOURCES[r.res].namespaced) {
      throw new HttpError(405, 'MethodNotAllowed', 'create requires a namespaced path');
    }
    delete o.metadata.resourceVersion;
    if (this.objects(r.res).has(this.key(r.res, this.normalize(r.res, o)))) {
      throw new HttpError(409, 'AlreadyExists', `${r.res} "${o.metadata.name}" already exists`, { name: o.metadata.name, kind: r.res });
    }
    this.sendJson(res, 201, this.doCreate(r.res, o));
  }

  private httpReplace(r: Route, key: string, body: unknown): ApiObject {
    const existing = this.objects(r.res).get(key);
    if (!existing) throw notFound(r.res, r.name ?? '');
    if (!isPlainObject(body) || !isPlainObject(body.metadata)) {
      throw new HttpError(400, 'BadRequest', 'request body must be an object with metadata');
    }
    const o = clone(body) as ApiObject;
    o.metadata.name ??= existing.metadata.name;
    if (RESOURCES[r.res].namespaced) o.metadata.namespace ??= existing.metadata.namespace;
    if (o.metadata.name !== existing.metadata.name || (r.ns !== undefined && o.metadata.namespace !== r.ns)) {
      throw new HttpError(400, 'BadRequest', 'the name/namespace of the object does not match the request path');
    }
    if (o.metadata.resourceVersion === undefined || o.metadata.resourceVersion === '') {
      o.metadata.resourceVersion = existing.metadata.resourceVersion;
    }
    return this.commitWrite(r, key, existing, o);
  }

  /** validate an updated object (from PUT/PATCH) and store it; no-op writes emit no event */
  private commitWrite(r: Route, key: string, existing: ApiObject, updated: unknown): ApiObject {
    if (!isPlainObject(updated) || !isPlainObject(updated.metadata)) {
      throw new HttpError(422, 'Invalid', 'the resulting object must have metadata');
    }
    const u = updated as ApiObject;
    if (u.metadata.name !== existing.metadata.name || u.metadata.namespace !== existing.metadata.namespace) {
      throw new HttpError(422, 'Invalid', 'metadata.name and metadata.namespace are immutable');
    }
    const rv = u.metadata.resourceVersion;
    if (rv !== undefined && rv !== existing.metadata.resourceVersion) {
      throw new HttpError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${r.res} "${existing.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name: existing.metadata.name, kind: r.res },
      );
    }
    const o = this.normalize(r.res, updated as ApiObject);
    o.metadata.uid = existing.metadata.uid;
    o.metadata.creationTimestamp = existing.metadata.creationTimestamp;
    o.metadata.resourceVersion = existing.metadata.resourceVersion;
    if (deepEqual(o, existing)) return existing;
    return this.doReplace(r.res, key, existing, o);
  }

  private selectors(r: Route, q: URLSearchParams): Selectors {
    return {
      ns: r.ns,
      fields: parseFieldSelector(q.get('fieldSelector')),
      labels: parseLabelSelector(q.get('labelSelector')),
    };
  }

  private serveList(r: Route, q: URLSearchParams, res: http.ServerResponse): void {
    this.stats.list[r.res]++;
    const sel = this.selectors(r, q);
    const limitRaw = q.get('limit');
    const limit = limitRaw ? Number(limitRaw) : 0;
    if (!Number.isInteger(limit) || limit < 0) throw new HttpError(400, 'BadRequest', `invalid limit: ${limitRaw}`);
    let listRv = this.rv;
    let after: string | undefined;
    const cont = q.get('continue');
    if (cont) {
      try {
        const tok = JSON.parse(Buffer.from(cont, 'base64url').toString('utf8')) as { rv?: unknown; key?: unknown };
        if (typeof tok.rv !== 'number' || typeof tok.key !== 'string') throw new Error('bad token');
        listRv = tok.rv;
        after = tok.key;
      } catch {
        throw new HttpError(400, 'BadRequest', 'continue key is not valid');
      }
    }
    const keys: string[] = [];
    for (const [k, o] of this.objects(r.res)) {
      if (after !== undefined && k <= after) continue;
      if (matches(o, sel)) keys.push(k);
    }
    keys.sort();
    const page = limit > 0 ? keys.slice(0, limit) : keys;
    const objs = this.objects(r.res);
    const parts: string[] = [];
    for (const k of page) {
      // like the real API server, list items carry no apiVersion/kind
      const { apiVersion: _a, kind: _k, ...rest } = objs.get(k)!;
      parts.push(JSON.stringify(rest));
    }
    const info = RESOURCES[r.res];
    const metadata: Record<string, unknown> = { resourceVersion: String(listRv) };
    if (page.length < keys.length) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRv, key: page[page.length - 1] })).toString('base64url');
      if (sel.fields.length === 0 && sel.labels.length === 0) metadata.remainingItemCount = keys.length - page.length;
    }
    const head = JSON.stringify({ kind: `${info.kind}List`, apiVersion: info.apiVersion, metadata });
    this.sendJson(res, 200, `${head.slice(0, -1)},"items":[${parts.join(',')}]}`);
  }

  private serveWatch(r: Route, q: URLSearchParams, res: http.ServerResponse): void {
    this.stats.watch[r.res]++;
    const sel = this.selectors(r, q);
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) {
      throw new HttpError(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    }
    const info = RESOURCES[r.res];
    const bookmarks = q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1';
    const sendInitial = q.get('sendInitialEvents') === 'true';
    const fromRv = rvParam === '' ? 0 : Number(rvParam);

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();

    if (fromRv !== 0 && !sendInitial && fromRv < this.compactedRv) {
      const status = statusBody(410, 'Expired', `too old resource version: ${fromRv} (${this.compactedRv})`);
      res.end(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      return;
    }

    const w: Watcher = { res: r.res, sel, sinceRv: 0, bookmarks, http: res, timers: [], closed: false };
    const out: string[] = [];
    if (fromRv === 0 || sendInitial) {
      // state first: a synthetic ADDED for every current object, then live events
      for (const o of this.objects(r.res).values()) {
        if (matches(o, sel)) out.push(`{"type":"ADDED","object":${JSON.stringify(o)}}\n`);
      }
      w.sinceRv = this.rv;
      if (sendInitial && bookmarks) out.push(this.bookmarkLine(info, true));
    } else {
      // replay retained history after fromRv
      let lo = this.historyStart;
      let hi = this.history.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.history[mid]!.rv <= fromRv) lo = mid + 1;
        else hi = mid;
      }
      w.sinceRv = fromRv;
      for (let i = lo; i < this.history.length; i++) {
        const e = this.history[i]!;
        if (e.res !== r.res) continue;
        const line = this.eventLine(w, e);
        if (line !== undefined) out.push(line);
      }
      w.sinceRv = Math.max(fromRv, this.rv);
    }
    if (out.length > 0) res.write(out.join(''));

    this.watchers.add(w);
    res.on('close', () => this.closeWatcher(w));
    res.on('error', () => this.closeWatcher(w));
    if (bookmarks && this.bookmarkMs > 0) {
      const t = setInterval(() => {
        if (!w.closed) res.write(this.bookmarkLine(info, false));
      }, this.bookmarkMs);
      t.unref();
      w.timers.push(t);
    }
    const timeouts: number[] = [];
    const ts = Number(q.get('timeoutSeconds') ?? '');
    if (Number.isFinite(ts) && ts > 0) timeouts.push(ts * 1000);
    if (this.watchTimeoutMs > 0) timeouts.push(this.watchTimeoutMs);
    if (timeouts.length > 0) {
      const t = setTimeout(
        () => {
          this.closeWatcher(w);
          res.end();
        },
        Math.min(...timeouts),
      );
      t.unref();
      w.timers.push(t);
    }
  }

  private bookmarkLine(info: ResourceInfo, initialEventsEnd: boolean): string {
    const metadata: Record<string, unknown> = { resourceVersion: String(this.rv) };
    if (initialEventsEnd) metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
    return JSON.stringify({ type: 'BOOKMARK', object: { kind: info.kind, apiVersion: info.apiVersion, metadata } }) + '\n';
  }

  private closeWatcher(w: Watcher): void {
    if (w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
    this.watchers.delete(w);
  }
}
