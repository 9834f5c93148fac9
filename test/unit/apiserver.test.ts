import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  NetworkingV1Api,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type KubernetesObject,
  type ListPromise,
  type V1EndpointSlice,
  type V1Namespace,
  type V1Pod,
} from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer, type ApiObject, type ApiServerOptions } from '../k8s/apiserver.js';

// ---------------------------------------------------------------------------
// helpers

interface RawObj {
  kind?: string;
  apiVersion?: string;
  code?: number;
  reason?: string;
  message?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: { nodeName?: string };
}
interface Ev {
  type: string;
  object: RawObj;
}
interface ListBody {
  kind: string;
  apiVersion: string;
  metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
  items: RawObj[];
}

let server: FakeApiServer | undefined;
let tmp: string;
const cleanups: (() => unknown)[] = [];

async function startServer(opts?: ApiServerOptions): Promise<FakeApiServer> {
  server = await FakeApiServer.start(opts);
  return server;
}

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'podwarp-apiserver-'));
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await server?.stop();
  server = undefined;
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function req(
  method: string,
  url: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<{ status: number; contentType: string | null; json: unknown }> {
  const r = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, contentType: r.headers.get('content-type'), json: text ? (JSON.parse(text) as unknown) : undefined };
}

async function listRaw(url: string): Promise<ListBody> {
  const r = await req('GET', url);
  expect(r.status).toBe(200);
  expect(r.contentType).toBe('application/json');
  return r.json as ListBody;
}

interface RawWatch {
  status: number;
  headers: http.IncomingHttpHeaders;
  events: Ev[];
  /** raw text received so far that did not end in a newline */
  pending: string;
  ended: boolean;
  closed: boolean;
  close(): void;
}

/** a watch over plain node:http, splitting the body into lines itself */
function rawWatch(url: string): Promise<RawWatch> {
  return new Promise((resolve, reject) => {
    const r = http.get(url, (res) => {
      const w: RawWatch = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events: [],
        pending: '',
        ended: false,
        closed: false,
        close: () => r.destroy(),
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        w.pending += chunk;
        let i: number;
        while ((i = w.pending.indexOf('\n')) >= 0) {
          const line = w.pending.slice(0, i);
          w.pending = w.pending.slice(i + 1);
          w.events.push(JSON.parse(line) as Ev);
        }
      });
      res.on('end', () => (w.ended = true));
      res.on('close', () => (w.closed = true));
      res.on('error', () => undefined);
      resolve(w);
    });
    r.on('error', reject);
    cleanups.push(() => r.destroy());
  });
}

function pod(ns: string, name: string, nodeName?: string, labels?: Record<string, string>): ApiObject {
  return {
    metadata: { name, namespace: ns, ...(labels ? { labels } : {}) },
    spec: { ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', image: 'busybox' }] },
  };
}

function names(items: RawObj[]): string[] {
  return items.map((o) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`).sort();
}

function kubeConfig(s: FakeApiServer): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(s.kubeconfig(tmp));
  return kc;
}

interface Tracked<T extends KubernetesObject> {
  lw: ListWatch<T>;
  adds: string[];
  updates: string[];
  deletes: string[];
  errors: { code?: unknown; message?: unknown }[];
  /** name -> resourceVersion of what the informer currently holds */
  state(): Map<string, string>;
}

/**
 * Start a ListWatch the way an agent would: on 'error' (client-node stops the
 * informer) start it again after a short delay.
 */
async function informer<T extends KubernetesObject>(
  kc: KubeConfig,
  watchPath: string,
  listFn: ListPromise<T>,
  selectors: { label?: string; field?: string } = {},
): Promise<Tracked<T>> {
  const lw = new ListWatch<T>(watchPath, new Watch(kc), listFn, false, selectors.label, selectors.field);
  const key = (o: T) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
  const t: Tracked<T> = {
    lw,
    adds: [],
    updates: [],
    deletes: [],
    errors: [],
    state: () => new Map(lw.list().map((o) => [key(o), o.metadata?.resourceVersion ?? ''])),
  };
  let stopping = false;
  lw.on('add', (o) => t.adds.push(key(o)));
  lw.on('update', (o) => t.updates.push(key(o)));
  lw.on('delete', (o) => t.deletes.push(key(o)));
  lw.on('error', (err?: { code?: unknown; message?: unknown }) => {
    t.errors.push(err ?? {});
    // note: ListWatch.stop() itself reports an AbortError through 'error'
    if (stopping) return;
    setTimeout(() => {
      if (!stopping) void lw.start();
    }, 50);
  });
  cleanups.push(async () => {
    stopping = true;
    await lw.stop();
  });
  await lw.start();
  return t;
}

/** name -> resourceVersion of the server's objects that pass `filter` */
function serverState(s: FakeApiServer, res: Parameters<FakeApiServer['list']>[0], filter: (o: ApiObject) => boolean) {
  return new Map(
    s
      .list(res)
      .filter(filter)
      .map((o) => [`${o.metadata.namespace ?? ''}/${o.metadata.name}`, o.metadata.resourceVersion ?? '']),
  );
}

function sameState(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

const onNode = (node: string) => (o: ApiObject) => (o.spec as { nodeName?: string } | undefined)?.nodeName === node;

// ---------------------------------------------------------------------------

describe('FakeApiServer over raw HTTP', () => {
  it('lists with field and label selectors, per namespace, with list metadata', async () => {
    const s = await startServer();
    s.create('pods', pod('a', 'p1', 'n1', { app: 'web' }));
    s.create('pods', pod('a', 'p2', 'n2', { app: 'db' }));
    s.create('pods', pod('b', 'p3', 'n1', { app: 'db', tier: 'x' }));
    s.create('pods', pod('b', 'p4'));

    const l = await listRaw(`${s.url}/api/v1/pods?fieldSelector=${encodeURIComponent('spec.nodeName=n1')}`);
    expect(l.kind).toBe('PodList');
    expect(l.apiVersion).toBe('v1');
    expect(l.metadata.resourceVersion).toBe(String(s.resourceVersion));
    expect(names(l.items)).toEqual(['a/p1', 'b/p3']);

    expect(names((await listRaw(`${s.url}/api/v1/pods?fieldSelector=spec.nodeName!%3Dn1`)).items)).toEqual(['a/p2', 'b/p4']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?fieldSelector=spec.nodeName%3D`)).items)).toEqual(['b/p4']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?fieldSelector=spec.nodeName%3Dn1,metadata.namespace%3Db`)).items)).toEqual(['b/p3']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?fieldSelector=metadata.name%3Dp2`)).items)).toEqual(['a/p2']);
    expect(names((await listRaw(`${s.url}/api/v1/namespaces/b/pods`)).items)).toEqual(['b/p3', 'b/p4']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?labelSelector=app%3Ddb`)).items)).toEqual(['a/p2', 'b/p3']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?labelSelector=app!%3Ddb`)).items)).toEqual(['a/p1', 'b/p4']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?labelSelector=tier`)).items)).toEqual(['b/p3']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?labelSelector=app%3Ddb,tier`)).items)).toEqual(['b/p3']);
    expect(names((await listRaw(`${s.url}/api/v1/pods?labelSelector=app%20in%20(web,db),!tier`)).items)).toEqual(['a/p1', 'a/p2']);
    expect(s.stats.list.pods).toBe(11);

    const single = await req('GET', `${s.url}/api/v1/namespaces/a/pods/p1`);
    expect(single.status).toBe(200);
    expect(single.json).toMatchObject({ kind: 'Pod', apiVersion: 'v1', metadata: { name: 'p1', namespace: 'a' } });
  });

  it('serves cluster-scoped Nodes: one by name, and listed by metadata.name as kube-proxy and podwarp watch their own', async () => {
    const s = await startServer();
    s.create('nodes', { metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'a' } } });
    s.create('nodes', { metadata: { name: 'n2' } });
    const l = await listRaw(`${s.url}/api/v1/nodes?fieldSelector=${encodeURIComponent('metadata.name=n2')}`);
    expect(l.kind).toBe('NodeList');
    expect(names(l.items)).toEqual(['/n2']);
    const one = await req('GET', `${s.url}/api/v1/nodes/n1`);
    expect(one.status).toBe(200);
    expect(one.json).toMatchObject({ kind: 'Node', metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'a' } } });
    expect((one.json as { metadata: { namespace?: string } }).metadata.namespace).toBeUndefined();
    expect((await req('GET', `${s.url}/api/v1/nodes/n9`)).status).toBe(404);
    expect((await req('GET', `${s.url}/api/v1/nodes/n1/proxy`)).status).toBe(404);
  });

  it('paginates with limit and continue', async () => {
    const s = await startServer();
    for (let i = 0; i < 25; i++) s.create('services', { metadata: { name: `svc-${String(i).padStart(2, '0')}`, namespace: 'ns' } });
    s.create('services', { metadata: { name: 'other', namespace: 'ns2' } });
    const seen: string[] = [];
    let cont: string | undefined;
    let pages = 0;
    do {
      const l = await listRaw(`${s.url}/api/v1/namespaces/ns/services?limit=10${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
      expect(l.kind).toBe('ServiceList');
      pages++;
      expect(l.items.length).toBe(pages < 3 ? 10 : 5);
      seen.push(...l.items.map((o) => o.metadata?.name ?? ''));
      cont = l.metadata.continue;
      if (pages < 3) expect(cont).toBeTruthy();
    } while (cont && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `svc-${String(i).padStart(2, '0')}`));

    const bad = await req('GET', `${s.url}/api/v1/services?limit=5&continue=garbage`);
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ kind: 'Status', code: 400 });
  });

  it('watch from a resourceVersion replays exactly the later events, one line each, then goes live', async () => {
    const s = await startServer();
    s.create('pods', pod('a', 'old', 'n1'));
    s.create('pods', pod('a', 'gone', 'n1'));
    const rv0 = s.resourceVersion;
    s.create('pods', pod('a', 'new', 'n1'));
    s.update('pods', { ...pod('a', 'new', 'n1'), metadata: { name: 'new', namespace: 'a', labels: { v: '2' } } });
    s.create('services', { metadata: { name: 'not-a-pod', namespace: 'a' } });
    s.delete('pods', 'a', 'gone');

    const w = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv0}`);
    expect(w.status).toBe(200);
    expect(w.headers['content-type']).toBe('application/json');
    expect(w.headers['transfer-encoding']).toBe('chunked');
    await waitFor(() => w.events.length >= 3, 'replayed events');
    expect(w.events.map((e) => [e.type, e.object.metadata?.name])).toEqual([
      ['ADDED', 'new'],
      ['MODIFIED', 'new'],
      ['DELETED', 'gone'],
    ]);
    const rvs = w.events.map((e) => Number(e.object.metadata?.resourceVersion));
    expect(rvs.every((rv) => rv > rv0)).toBe(true);
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
    expect(rvs[2]).toBe(s.resourceVersion); // the DELETED event carries a new resourceVersion
    expect(w.events[0]!.object.kind).toBe('Pod');
    expect(w.events[1]!.object.metadata?.labels).toEqual({ v: '2' });
    expect(w.pending).toBe('');

    // live: each event is flushed on its own, as a complete line
    let written = 0;
    s.onEventWritten = (res, type, obj, atMs) => {
      expect([res, type, obj.metadata.name]).toEqual(['pods', 'ADDED', 'live-1']);
      expect(Math.abs(atMs - Date.now())).toBeLessThan(1000);
      written++;
    };
    s.create('pods', pod('b', 'live-1', 'n2'));
    expect(written).toBe(1);
    await waitFor(() => w.events.length === 4, 'live event');
    expect(w.pending).toBe('');
    expect(w.events[3]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'live-1', namespace: 'b' } } });
    s.onEventWritten = undefined;
    s.create('services', { metadata: { name: 'svc-live', namespace: 'b' } });
    s.create('pods', pod('b', 'live-2'));
    await waitFor(() => w.events.length === 5, 'second live event');
    expect(w.events[4]!.object.metadata?.name).toBe('live-2');

    // a watch without resourceVersion starts with a synthetic ADDED per object
    const w2 = await rawWatch(`${s.url}/api/v1/namespaces/a/pods?watch=1`);
    await waitFor(() => w2.events.length >= 2, 'initial state');
    expect(w2.events.map((e) => `${e.type} ${e.object.metadata?.name}`).sort()).toEqual(['ADDED new', 'ADDED old']);
    s.create('pods', pod('b', 'elsewhere'));
    s.create('pods', pod('a', 'here'));
    await waitFor(() => w2.events.length >= 3, 'namespaced live event');
    expect(w2.events[2]!.object.metadata?.name).toBe('here');
    expect(s.watchCount('pods')).toBe(2);
    expect(s.watchCount('services')).toBe(0);
    expect(s.stats.watch.pods).toBe(2);

    // a watcher goes away when its client disconnects
    w.close();
    await waitFor(() => s.watchCount('pods') === 1, 'watcher removal');
  });

  it('sends bookmarks only to watches that asked for them', async () => {
    const s = await startServer({ bookmarkMs: 40 });
    s.create('pods', pod('a', 'p', 'n1'));
    const rv = s.resourceVersion;
    const plain = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv}`);
    const marked = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`);
    await waitFor(() => marked.events.filter((e) => e.type === 'BOOKMARK').length >= 3, 'three bookmarks');
    const bm = marked.events.find((e) => e.type === 'BOOKMARK')!;
    expect(bm.object).toEqual({ kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } });
    expect(plain.events).toEqual([]);
    s.create('pods', pod('a', 'q', 'n1'));
    await waitFor(
      () => marked.events.some((e) => e.type === 'BOOKMARK' && e.object.metadata?.resourceVersion === String(s.resourceVersion)),
      'bookmark at new revision',
    );
    expect(plain.events.map((e) => e.type)).toEqual(['ADDED']);
  });

  it('answers a too-old resourceVersion with an ERROR 410 event and ends the stream', async () => {
    const s = await startServer();
    s.create('pods', pod('a', 'p1'));
    const rv = s.resourceVersion;
    s.create('pods', pod('a', 'p2'));
    s.compact();
    const w = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv}`);
    expect(w.status).toBe(200);
    await waitFor(() => w.ended, 'end of stream');
    expect(w.events).toHaveLength(1);
    expect(w.events[0]).toEqual({
      type: 'ERROR',
      object: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${rv} (${s.resourceVersion})`,
        reason: 'Expired',
        code: 410,
      },
    });
    expect(s.watchCount()).toBe(0);

    // resuming at the compacted revision itself is fine
    const ok = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}`);
    s.create('pods', pod('a', 'p3'));
    await waitFor(() => ok.events.length === 1, 'event after compaction');
    expect(ok.events[0]!.type).toBe('ADDED');
    expect(ok.ended).toBe(false);
  });

  it('expires history beyond historyLimit', async () => {
    const s = await startServer({ historyLimit: 5 });
    const rv0 = s.resourceVersion;
    for (let i = 0; i < 10; i++) s.create('pods', pod('a', `p${i}`));
    const old = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv0}`);
    await waitFor(() => old.ended, 'expired stream end');
    expect(old.events.map((e) => [e.type, e.object.code])).toEqual([['ERROR', 410]]);
    const recent = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion - 5}`);
    await waitFor(() => recent.events.length === 5, 'retained events');
    expect(recent.events.map((e) => e.object.metadata?.name)).toEqual(['p5', 'p6', 'p7', 'p8', 'p9']);
  });

  it('turns selector transitions into ADDED/DELETED for the watcher', async () => {
    const s = await startServer();
    s.create('pods', pod('a', 'mover', 'n1'));
    s.create('pods', pod('a', 'stayer', 'n2'));
    const w = await rawWatch(`${s.url}/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1`);
    await waitFor(() => w.events.length === 1, 'initial ADDED');
    const mover = s.get('pods', 'a', 'mover')!;
    s.update('pods', { ...mover, spec: { nodeName: 'n2' } });
    s.update('pods', pod('a', 'stayer', 'n2', { x: 'y' }));
    s.update('pods', { ...s.get('pods', 'a', 'mover')!, spec: { nodeName: 'n1' } });
    s.update('pods', { ...s.get('pods', 'a', 'mover')!, metadata: { name: 'mover', namespace: 'a', labels: { k: 'v' } } });
    await waitFor(() => w.events.length === 4, 'transition events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata?.name} ${e.object.spec?.nodeName}`)).toEqual([
      'ADDED mover n1',
      'DELETED mover n1',
      'ADDED mover n1',
      'MODIFIED mover n1',
    ]);
    // the DELETED for "stopped matching" carries the revision of the change
    expect(Number(w.events[1]!.object.metadata?.resourceVersion)).toBe(s.resourceVersion - 3);
  });

  it('ends watches cleanly on timeoutSeconds and watchTimeoutMs', async () => {
    const s = await startServer({ watchTimeoutMs: 100 });
    const t0 = Date.now();
    const w = await rawWatch(`${s.url}/api/v1/services?watch=true`);
    await waitFor(() => w.ended, 'server-side watch timeout', 3000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    await s.stop();

    const s2 = await startServer();
    const t1 = Date.now();
    const w2 = await rawWatch(`${s2.url}/api/v1/services?watch=true&timeoutSeconds=1`);
    await waitFor(() => w2.ended, 'timeoutSeconds', 3000);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(950);
    expect(s2.watchCount()).toBe(0);
  });

  it('dropWatches destroys open watches mid-stream', async () => {
    const s = await startServer();
    const a = await rawWatch(`${s.url}/api/v1/pods?watch=true`);
    const b = await rawWatch(`${s.url}/apis/discovery.k8s.io/v1/endpointslices?watch=true`);
    expect(s.watchCount()).toBe(2);
    expect(s.dropWatches()).toBe(2);
    expect(s.watchCount()).toBe(0);
    await waitFor(() => a.closed && b.closed, 'client sockets closed');
    expect(a.ended).toBe(false); // no terminating chunk: an abrupt close, not a clean end
  });

  it('patches a namespace label with merge patch (set, then null removes) and emits MODIFIED', async () => {
    const s = await startServer();
    s.create('namespaces', { metadata: { name: 'team-a', labels: { keep: 'me' } } });
    const w = await rawWatch(`${s.url}/api/v1/namespaces?watch=true&resourceVersion=${s.resourceVersion}`);
    const url = `${s.url}/api/v1/namespaces/team-a`;

    const r1 = await req('PATCH', url, { metadata: { labels: { 'podwarp.io/accelerate': 'true' } } }, 'application/merge-patch+json');
    expect(r1.status).toBe(200);
    expect(r1.contentType).toBe('application/json');
    expect(r1.json).toMatchObject({
      kind: 'Namespace',
      apiVersion: 'v1',
      metadata: { name: 'team-a', labels: { keep: 'me', 'podwarp.io/accelerate': 'true' }, resourceVersion: String(s.resourceVersion) },
    });
    await waitFor(() => w.events.length === 1, 'MODIFIED after set');
    expect(w.events[0]!.type).toBe('MODIFIED');
    expect(w.events[0]!.object.metadata?.labels).toEqual({ keep: 'me', 'podwarp.io/accelerate': 'true' });

    const r2 = await req(
      'PATCH',
      url,
      { metadata: { labels: { 'podwarp.io/accelerate': null } } },
      'application/strategic-merge-patch+json',
    );
    expect(r2.status).toBe(200);
    expect((r2.json as RawObj).metadata?.labels).toEqual({ keep: 'me' });
    await waitFor(() => w.events.length === 2, 'MODIFIED after remove');
    expect(w.events[1]!.type).toBe('MODIFIED');
    expect(w.events[1]!.object.metadata?.labels).toEqual({ keep: 'me' });
    expect(s.get('namespaces', undefined, 'team-a')!.metadata.labels).toEqual({ keep: 'me' });

    // JSON patch (RFC 6902)
    const r3 = await req(
      'PATCH',
      url,
      [
        { op: 'add', path: '/metadata/labels/a~1b', value: 'x' },
        { op: 'replace', path: '/metadata/labels/keep', value: 'changed' },
      ],
      'application/json-patch+json',
    );
    expect(r3.status).toBe(200);
    expect((r3.json as RawObj).metadata?.labels).toEqual({ keep: 'changed', 'a/b': 'x' });
    const r4 = await req('PATCH', url, [{ op: 'remove', path: '/metadata/labels/a~1b' }], 'application/json-patch+json');
    expect((r4.json as RawObj).metadata?.labels).toEqual({ keep: 'changed' });
    await waitFor(() => w.events.length === 4, 'MODIFIED after JSON patches');

    // a no-op patch changes nothing and emits nothing
    const rvBefore = s.resourceVersion;
    const r5 = await req('PATCH', url, { metadata: { labels: { keep: 'changed' } } }, 'application/merge-patch+json');
    expect(r5.status).toBe(200);
    expect(s.resourceVersion).toBe(rvBefore);

    // malformed requests get a Status, the server survives
    const bad = [
      await req('PATCH', url, '{not json', 'application/merge-patch+json'),
      await req('PATCH', url, { op: 'add' }, 'application/json-patch+json'),
      await req('PATCH', url, [{ op: 'remove', path: '/metadata/labels/nope' }], 'application/json-patch+json'),
      await req('PATCH', url, [{ op: 'frobnicate', path: '/x' }], 'application/json-patch+json'),
      await req('PATCH', url, { metadata: { name: 'renamed' } }, 'application/merge-patch+json'),
      await req('PATCH', url, { metadata: {} }, 'text/plain'),
    ];
    expect(bad.map((b) => b.status)).toEqual([400, 400, 422, 422, 422, 415]);
    for (const b of bad) expect(b.json).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure' });
    expect(s.stats.patch.namespaces).toBe(11);

    const missing = await req('PATCH', `${s.url}/api/v1/namespaces/nope`, { metadata: {} }, 'application/merge-patch+json');
    expect(missing.status).toBe(404);
    expect(missing.json).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });
    const unknown = await req('GET', `${s.url}/api/v1/widgets`);
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ kind: 'Status', code: 404 });
    expect(unknown.contentType).toBe('application/json');
    const nsMissing = await req('GET', `${s.url}/api/v1/namespaces/a/pods/none`);
    expect(nsMissing.json).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });

    // PUT replaces; a stale resourceVersion conflicts
    const cur = s.get('namespaces', undefined, 'team-a')!;
    const put = await req('PUT', url, { ...cur, metadata: { ...cur.metadata, labels: { only: 'this' } } });
    expect(put.status).toBe(200);
    expect((put.json as RawObj).metadata?.labels).toEqual({ only: 'this' });
    const stale = await req('PUT', url, cur);
    expect(stale.status).toBe(409);
    await waitFor(() => w.events.length === 5, 'MODIFIED after PUT');
    expect(w.events.every((e) => e.type === 'MODIFIED')).toBe(true);
    expect((await req('GET', url)).status).toBe(200);
  });

  it('keeps history immutable across patches that do not touch metadata', async () => {
    const s = await startServer();
    const rv0 = s.resourceVersion;
    s.create('pods', pod('a', 'p', 'n1'));
    const created = String(s.resourceVersion);
    const r = await req('PATCH', `${s.url}/api/v1/namespaces/a/pods/p`, { spec: { nodeName: 'n2' } }, 'application/merge-patch+json');
    expect(r.status).toBe(200);
    expect((r.json as RawObj).spec?.nodeName).toBe('n2');
    expect(s.stats.patch.pods).toBe(1);
    const w = await rawWatch(`${s.url}/api/v1/pods?watch=true&resourceVersion=${rv0}`);
    await waitFor(() => w.events.length === 2, 'replay');
    expect(w.events.map((e) => [e.type, e.object.metadata?.resourceVersion, e.object.spec?.nodeName])).toEqual([
      ['ADDED', created, 'n1'],
      ['MODIFIED', String(s.resourceVersion), 'n2'],
    ]);
  });

  it('programmatic API: create/update/apply/delete semantics and deep copies', async () => {
    const s = await startServer();
    const input = pod('a', 'p', 'n1', { app: 'x' });
    const created = s.create('pods', input);
    expect(created.metadata.uid).toBeTruthy();
    expect(created.metadata.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(created).toMatchObject({ apiVersion: 'v1', kind: 'Pod', metadata: { resourceVersion: String(s.resourceVersion) } });
    expect(input.metadata.uid).toBeUndefined(); // input not mutated
    created.metadata.labels!.app = 'mutated';
    expect(s.get('pods', 'a', 'p')!.metadata.labels).toEqual({ app: 'x' });
    expect(() => s.create('pods', input)).toThrow(/exists/);
    expect(() => s.update('pods', pod('a', 'missing'))).toThrow(/not found/);
    const updated = s.update('pods', pod('a', 'p', 'n2'));
    expect(updated.metadata.uid).toBe(created.metadata.uid);
    expect(Number(updated.metadata.resourceVersion)).toBeGreaterThan(Number(created.metadata.resourceVersion));
    s.apply('pods', pod('a', 'p', 'n3'));
    s.apply('pods', pod('a', 'q', 'n3'));
    expect(s.list('pods').map((o) => (o.spec as { nodeName: string }).nodeName)).toEqual(['n3', 'n3']);
    const eps = s.create('endpointslices', { metadata: { name: 'e', namespace: 'a' }, addressType: 'IPv4', endpoints: [] });
    expect(eps).toMatchObject({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice' });
    expect(s.create('networkpolicies', { metadata: { name: 'np', namespace: 'a' }, spec: {} }).apiVersion).toBe('networking.k8s.io/v1');
    const rv = s.resourceVersion;
    s.delete('pods', 'a', 'nope');
    expect(s.resourceVersion).toBe(rv);
    s.delete('pods', 'a', 'q');
    expect(s.resourceVersion).toBe(rv + 1);
    expect(s.get('pods', 'a', 'q')).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------

describe('FakeApiServer with @kubernetes/client-node', () => {
  it('ListWatch on pods: callbacks, resume after dropWatches, relist after compaction and restart', { timeout: 30_000 }, async () => {
    const s = await startServer();
    const fieldSelector = 'spec.nodeName=n1';
    s.create('pods', pod('a', 'p1', 'n1'));
    s.create('pods', pod('a', 'p2', 'n1'));
    s.create('pods', pod('b', 'p3', 'n2'));
    const kc = kubeConfig(s);
    const core = kc.makeApiClient(CoreV1Api);
    const t = await informer<V1Pod>(kc, '/api/v1/pods', () => core.listPodForAllNamespaces({ fieldSelector }), { field: fieldSelector });
    const want = () => serverState(s, 'pods', onNode('n1'));
    const converged = () => sameState(t.state(), want());

    await waitFor(() => s.watchCount('pods') === 1, 'watch established');
    expect(t.adds.sort()).toEqual(['a/p1', 'a/p2']);
    expect(converged()).toBe(true);
    expect(s.stats.list.pods).toBe(1);

    // add / update / delete, and a pod that moves off the node
    s.create('pods', pod('a', 'p4', 'n1'));
    s.update('pods', pod('a', 'p1', 'n1', { v: '2' }));
    s.delete('pods', 'a', 'p2');
    s.update('pods', pod('b', 'p3', 'n2', { ignored: 'yes' }));
    s.update('pods', pod('a', 'p4', 'n2'));
    await waitFor(() => t.deletes.length === 2, 'deletes');
    expect(t.adds).toContain('a/p4');
    expect(t.updates).toEqual(['a/p1']);
    expect(t.deletes).toEqual(['a/p2', 'a/p4']);
    expect(t.lw.get('p1', 'a')?.metadata?.labels).toEqual({ v: '2' });
    expect(converged()).toBe(true);

    // abrupt disconnect: the informer resumes from its resourceVersion without listing
    let lists = s.stats.list.pods;
    const watches = s.stats.watch.pods;
    expect(s.dropWatches()).toBe(1);
    s.create('pods', pod('a', 'p5', 'n1')); // happens while the client is disconnected: replayed from history
    await waitFor(() => t.state().has('a/p5'), 'resume after dropWatches');
    s.create('pods', pod('a', 'p6', 'n1'));
    await waitFor(() => t.state().has('a/p6') && converged(), 'live after resume');
    expect(s.stats.list.pods).toBe(lists);
    expect(s.stats.watch.pods).toBeGreaterThan(watches);

    // history gone while disconnected: 410 -> the informer relists and converges, deletion included
    lists = s.stats.list.pods;
    s.dropWatches();
    s.delete('pods', 'a', 'p1');
    s.create('pods', pod('b', 'p7', 'n1'));
    s.compact();
    await waitFor(() => converged() && !t.state().has('a/p1') && s.watchCount('pods') === 1, 'relist after compact');
    expect(s.stats.list.pods).toBeGreaterThan(lists);
    expect(t.deletes).toContain('a/p1');

    // API server restart: connection refused for a while, changes meanwhile
    lists = s.stats.list.pods;
    const errorsBefore = t.errors.length;
    const restarted = s.restart(300);
    s.delete('pods', 'a', 'p5');
    s.create('pods', pod('b', 'p8', 'n1'));
    s.update('pods', pod('a', 'p6', 'n1', { after: 'restart' }));
    await restarted;
    await waitFor(() => converged() && s.watchCount('pods') === 1, 'convergence after restart', 10_000);
    expect(t.errors.slice(errorsBefore).some((e) => e.code === 'ECONNREFUSED')).toBe(true);
    expect(s.stats.list.pods).toBeGreaterThan(lists);
    expect(t.deletes).toContain('a/p5');
    expect(t.lw.get('p6', 'a')?.metadata?.labels).toEqual({ after: 'restart' });
    expect([...t.state().keys()].sort()).toEqual(['a/p6', 'b/p7', 'b/p8']);
  });

  it('ListWatch on EndpointSlices with a label selector through DiscoveryV1Api', { timeout: 20_000 }, async () => {
    const s = await startServer();
    const slice = (ns: string, name: string, svc: string, ip: string): ApiObject => ({
      metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [ip], conditions: { ready: true } }],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
    s.create('endpointslices', slice('a', 'web-1', 'web', '10.0.0.1'));
    s.create('endpointslices', slice('a', 'db-1', 'db', '10.0.0.9'));
    const kc = kubeConfig(s);
    const disco = kc.makeApiClient(DiscoveryV1Api);
    const labelSelector = 'kubernetes.io/service-name=web';
    const t = await informer<V1EndpointSlice>(
      kc,
      '/apis/discovery.k8s.io/v1/endpointslices',
      () => disco.listEndpointSliceForAllNamespaces({ labelSelector }),
      { label: labelSelector },
    );
    const want = () => serverState(s, 'endpointslices', (o) => o.metadata.labels?.['kubernetes.io/service-name'] === 'web');
    const converged = () => sameState(t.state(), want());
    await waitFor(() => s.watchCount('endpointslices') === 1, 'watch established');
    expect(t.adds).toEqual(['a/web-1']);
    expect(t.lw.get('web-1', 'a')?.endpoints[0]?.addresses).toEqual(['10.0.0.1']);

    s.create('endpointslices', slice('a', 'web-2', 'web', '10.0.0.2'));
    s.update('endpointslices', slice('a', 'web-1', 'web', '10.0.0.3'));
    s.update('endpointslices', slice('a', 'db-1', 'web', '10.0.0.9')); // starts matching
    await waitFor(() => t.adds.length === 3 && t.updates.length === 1, 'slice events');
    expect(t.lw.get('web-1', 'a')?.endpoints[0]?.addresses).toEqual(['10.0.0.3']);
    s.update('endpointslices', slice('a', 'db-1', 'db', '10.0.0.9')); // stops matching
    s.delete('endpointslices', 'a', 'web-2');
    await waitFor(() => t.deletes.length === 2, 'slice deletes');
    expect(t.deletes.sort()).toEqual(['a/db-1', 'a/web-2']);
    expect(converged()).toBe(true);

    const lists = s.stats.list.endpointslices;
    s.dropWatches();
    s.create('endpointslices', slice('b', 'web-3', 'web', '10.0.1.1'));
    await waitFor(() => converged() && t.state().has('b/web-3'), 'resume');
    expect(s.stats.list.endpointslices).toBe(lists);

    s.dropWatches();
    s.delete('endpointslices', 'a', 'web-1');
    s.compact();
    await waitFor(() => converged() && !t.state().has('a/web-1'), 'relist');
    expect(s.stats.list.endpointslices).toBe(lists + 1);

    // the other typed clients reach their paths too
    s.create('networkpolicies', { metadata: { name: 'deny', namespace: 'a' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
    const net = kc.makeApiClient(NetworkingV1Api);
    const nps = await net.listNetworkPolicyForAllNamespaces();
    expect(nps.items.map((n) => n.metadata?.name)).toEqual(['deny']);
    expect(nps.metadata?.resourceVersion).toBe(String(s.resourceVersion));
    const np = await net.readNamespacedNetworkPolicy({ name: 'deny', namespace: 'a' });
    expect(np.spec?.policyTypes).toEqual(['Ingress']);
  });

  it('patches namespace labels with CoreV1Api.patchNamespace', { timeout: 20_000 }, async () => {
    const s = await startServer();
    s.create('namespaces', { metadata: { name: 'team-a', labels: { keep: 'me' } } });
    const kc = kubeConfig(s);
    const core = kc.makeApiClient(CoreV1Api);
    const t = await informer<V1Namespace>(kc, '/api/v1/namespaces', () => core.listNamespace());
    await waitFor(() => t.adds.length === 1 && s.watchCount('namespaces') === 1, 'namespace informer');

    const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const set = await core.patchNamespace(
      { name: 'team-a', body: { metadata: { labels: { 'podwarp.io/accelerate': 'true' } } } },
      mergePatch,
    );
    expect(set.metadata?.labels).toEqual({ keep: 'me', 'podwarp.io/accelerate': 'true' });
    await waitFor(() => t.updates.length === 1, 'update after set');
    expect(t.lw.get('team-a')?.metadata?.labels).toEqual({ keep: 'me', 'podwarp.io/accelerate': 'true' });

    const removed = await core.patchNamespace(
      { name: 'team-a', body: { metadata: { labels: { 'podwarp.io/accelerate': null } } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(removed.metadata?.labels).toEqual({ keep: 'me' });
    await waitFor(() => t.updates.length === 2, 'update after removal');
    expect(t.lw.get('team-a')?.metadata?.labels).toEqual({ keep: 'me' });
    expect(s.get('namespaces', undefined, 'team-a')?.metadata.labels).toEqual({ keep: 'me' });

    // without options client-node 1.4 sends application/json-patch+json: an object body is rejected ...
    const err = await core.patchNamespace({ name: 'team-a', body: { metadata: { labels: { x: 'y' } } } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiException);
    expect((err as ApiException<unknown>).code).toBe(400);
    // ... and a JSON patch array is accepted
    const jp = await core.patchNamespace({
      name: 'team-a',
      body: [{ op: 'add', path: '/metadata/labels/podwarp.io~1accelerate', value: 'false' }],
    });
    expect(jp.metadata?.labels).toEqual({ keep: 'me', 'podwarp.io/accelerate': 'false' });
    expect(s.stats.patch.namespaces).toBe(4);

    const missing = await core.readNamespace({ name: 'nope' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(missing).toBeInstanceOf(ApiException);
    expect((missing as ApiException<unknown>).code).toBe(404);
    const body = (missing as ApiException<unknown>).body;
    expect(typeof body === 'string' ? (JSON.parse(body) as unknown) : body).toMatchObject({
      kind: 'Status',
      reason: 'NotFound',
      code: 404,
    });
  });
});

describe('FakeApiServer at scale', () => {
  it('load()s 10,000 services and lists them all in under 2 s', { timeout: 20_000 }, async () => {
    const s = await startServer();
    const svcs: ApiObject[] = Array.from({ length: 10_000 }, (_, i) => ({
      metadata: { name: `svc-${i}`, namespace: `ns-${i % 50}`, labels: { app: `app-${i % 7}` } },
      spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    }));
    const t0 = performance.now();
    s.load('services', svcs);
    const l = await listRaw(`${s.url}/api/v1/services`);
    const elapsed = performance.now() - t0;
    expect(l.items).toHaveLength(10_000);
    expect(new Set(l.items.map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`)).size).toBe(10_000);
    expect(l.metadata.resourceVersion).toBe(String(s.resourceVersion));
    expect(elapsed).toBeLessThan(2000);
    expect(s.list('services')).toHaveLength(10_000);

    // and through the typed client
    const core = kubeConfig(s).makeApiClient(CoreV1Api);
    const typed = await core.listServiceForAllNamespaces({ labelSelector: 'app=app-3' });
    expect(typed.items).toHaveLength(svcs.filter((_, i) => i % 7 === 3).length);
  });
});
