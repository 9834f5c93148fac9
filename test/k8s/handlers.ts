/**
 * The API server double's requests: health and version, discovery, and per
 * resource list (selectors, limit + continue), watch (handed to the watches),
 * create, get, replace, patch and delete, with the real API server's checks
 * and `Status` answers (404, 409 Conflict on a stale resourceVersion, 422…).
 */
import type http from 'node:http';
import type { Faults } from './faults.js';
import { HttpError, notFound, readJson, sendJson } from './http.js';
import { clone, deepEqual, isPlainObject } from './json.js';
import { applyPatch, patchType } from './patch.js';
import { GROUP_PREFIXES, RESOURCES, RESOURCE_NAMES, plural, type ApiObject, type Resource } from './resources.js';
import { route, type Route } from './router.js';
import { matches, requestSelectors } from './selectors.js';
import type { Store } from './store.js';
import type { Watches } from './watch.js';

/** requests counted per verb and resource */
export interface RequestStats {
  list: Record<Resource, number>;
  watch: Record<Resource, number>;
  patch: Record<Resource, number>;
}

/** what the handlers answer from */
export interface Api {
  store: Store;
  watches: Watches;
  faults: Faults;
  /** the optional resources served now */
  served: ReadonlySet<Resource>;
  stats: RequestStats;
}

const notAllowed = () => new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
const noSuchResource = () => new HttpError(404, 'NotFound', 'the server could not find the requested resource');

export async function handle(api: Api, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  req.on('error', () => undefined);
  const url = new URL(req.url ?? '/', 'http://fake');
  const method = req.method ?? 'GET';
  if (['/healthz', '/readyz', '/livez'].includes(url.pathname)) {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok');
    return;
  }
  if (url.pathname === '/version') {
    sendJson(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-podwarp-fake', platform: 'linux/amd64' });
    return;
  }
  if (method === 'GET' && (url.pathname === '/apis' || GROUP_PREFIXES.includes(url.pathname)))
    return serveDiscovery(api, url.pathname, res);
  const r = route(url.pathname);
  if (!r || (RESOURCES[r.res].optional && !api.served.has(r.res))) throw noSuchResource();
  api.faults.checkResource(r.res);
  const q = url.searchParams;

  if (r.name === undefined) {
    const isWatch = r.watchPrefix || q.get('watch') === 'true' || q.get('watch') === '1';
    if (method === 'GET' && isWatch) {
      api.stats.watch[r.res]++;
      return api.watches.serve(r.res, requestSelectors(r.ns, q), q, res);
    }
    if (r.watchPrefix) throw notAllowed();
    if (method === 'GET') return serveList(api, r, q, res);
    if (method === 'POST') return serveCreate(api, r, await readJson(req), res);
    throw notAllowed();
  }
  if (r.watchPrefix) throw noSuchResource();

  const name = r.name;
  const key = api.store.keyOf(r.res, r.ns, name);
  switch (method) {
    case 'GET': {
      const o = api.store.objects(r.res).get(key);
      if (!o) throw notFound(r.res, name);
      sendJson(res, 200, o);
      return;
    }
    case 'PUT': {
      const body = await readJson(req);
      sendJson(res, 200, replace(api, r, key, body));
      return;
    }
    case 'PATCH': {
      api.stats.patch[r.res]++;
      const type = patchType(req.headers['content-type'] ?? '');
      const body = await readJson(req);
      const existing = api.store.objects(r.res).get(key);
      if (!existing) throw notFound(r.res, name);
      sendJson(res, 200, commitWrite(api, r, key, existing, applyPatch(type, existing, body)));
      return;
    }
    case 'DELETE': {
      const gone = api.store.delete(r.res, r.ns, name);
      if (!gone) throw notFound(r.res, name);
      sendJson(res, 200, gone);
      return;
    }
    default:
      throw notAllowed();
  }
}

function serveDiscovery(api: Api, pathname: string, res: http.ServerResponse): void {
  api.faults.checkDiscovery();
  const live = RESOURCE_NAMES.filter((r) => !RESOURCES[r].optional || api.served.has(r));
  if (pathname === '/apis') {
    const gvs = [...new Set(live.map((r) => RESOURCES[r].apiVersion).filter((v) => v.includes('/')))];
    const groups = [...new Set(gvs.map((gv) => gv.split('/')[0]!))].map((name) => {
      const versions = gvs.filter((gv) => gv.startsWith(name + '/')).map((gv) => ({ groupVersion: gv, version: gv.split('/')[1]! }));
      return { name, versions, preferredVersion: versions[0] };
    });
    sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups });
    return;
  }
  const inGv = live.filter((r) => RESOURCES[r].prefix === pathname);
  if (!inGv.length) throw noSuchResource();
  sendJson(res, 200, {
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

function serveCreate(api: Api, r: Route, body: unknown, res: http.ServerResponse): void {
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
  const store = api.store;
  if (store.objects(r.res).has(store.key(r.res, store.normalize(r.res, o)))) {
    throw new HttpError(409, 'AlreadyExists', `${r.res} "${o.metadata.name}" already exists`, { name: o.metadata.name, kind: r.res });
  }
  sendJson(res, 201, store.create(r.res, o));
}

/** PUT: the body replaces the object; name and namespace default to the object's */
function replace(api: Api, r: Route, key: string, body: unknown): ApiObject {
  const existing = api.store.objects(r.res).get(key);
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
  return commitWrite(api, r, key, existing, o);
}

/** validate an updated object (from PUT/PATCH) and store it; no-op writes emit no event */
function commitWrite(api: Api, r: Route, key: string, existing: ApiObject, updated: unknown): ApiObject {
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
  const o = api.store.normalize(r.res, updated as ApiObject);
  o.metadata.uid = existing.metadata.uid;
  o.metadata.creationTimestamp = existing.metadata.creationTimestamp;
  o.metadata.resourceVersion = existing.metadata.resourceVersion;
  if (deepEqual(o, existing)) return existing;
  return api.store.replace(r.res, key, existing, o);
}

function serveList(api: Api, r: Route, q: URLSearchParams, res: http.ServerResponse): void {
  api.stats.list[r.res]++;
  const sel = requestSelectors(r.ns, q);
  const limitRaw = q.get('limit');
  const limit = limitRaw ? Number(limitRaw) : 0;
  if (!Number.isInteger(limit) || limit < 0) throw new HttpError(400, 'BadRequest', `invalid limit: ${limitRaw}`);
  let listRv = api.store.resourceVersion;
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
  const objs = api.store.objects(r.res);
  const keys: string[] = [];
  for (const [k, o] of objs) {
    if (after !== undefined && k <= after) continue;
    if (matches(o, sel)) keys.push(k);
  }
  keys.sort();
  const page = limit > 0 ? keys.slice(0, limit) : keys;
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
  sendJson(res, 200, `${head.slice(0, -1)},"items":[${parts.join(',')}]}`);
}
