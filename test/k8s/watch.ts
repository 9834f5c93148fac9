/**
 * Watches: the chunked stream of a watch request (one JSON event per line,
 * flushed per event), its start (current state, or replay of the history after a
 * resourceVersion, or 410 Expired), the fan-out of every change to the open
 * watches it concerns, selector transitions (ADDED/DELETED when an object starts
 * or stops matching a watch's selectors), bookmarks and timeouts.
 */
import type http from 'node:http';
import { HttpError, statusBody } from './http.js';
import { RESOURCES, type Resource, type ResourceInfo } from './resources.js';
import { matches, type Selectors } from './selectors.js';
import type { Store, StoredEvent } from './store.js';

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

export interface WatchOptions {
  /** bookmark interval; bookmarks only go to watches that asked allowWatchBookmarks=true; 0 = none */
  bookmarkMs: number;
  /** the server ends each watch cleanly after this; 0 = never */
  watchTimeoutMs: number;
}

export class Watches {
  private readonly watchers = new Set<Watcher>();

  constructor(
    private readonly store: Store,
    private readonly opts: WatchOptions,
  ) {}

  /** answers a watch request on res (query q: resourceVersion, allowWatchBookmarks, sendInitialEvents, timeoutSeconds) */
  serve(resource: Resource, sel: Selectors, q: URLSearchParams, res: http.ServerResponse): void {
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) {
      throw new HttpError(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    }
    const info = RESOURCES[resource];
    const bookmarks = q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1';
    const sendInitial = q.get('sendInitialEvents') === 'true';
    const fromRv = rvParam === '' ? 0 : Number(rvParam);

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();

    const compactedRv = this.store.compactedRv;
    if (fromRv !== 0 && !sendInitial && fromRv < compactedRv) {
      const status = statusBody(410, 'Expired', `too old resource version: ${fromRv} (${compactedRv})`);
      res.end(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      return;
    }

    const w: Watcher = { res: resource, sel, sinceRv: 0, bookmarks, http: res, timers: [], closed: false };
    const out: string[] = [];
    if (fromRv === 0 || sendInitial) {
      // state first: a synthetic ADDED for every current object, then live events
      for (const o of this.store.objects(resource).values()) {
        if (matches(o, sel)) out.push(`{"type":"ADDED","object":${JSON.stringify(o)}}\n`);
      }
      w.sinceRv = this.store.resourceVersion;
      if (sendInitial && bookmarks) out.push(this.bookmarkLine(info, true));
    } else {
      // replay retained history after fromRv
      w.sinceRv = fromRv;
      for (const e of this.store.eventsAfter(fromRv)) {
        if (e.res !== resource) continue;
        const line = this.eventLine(w, e);
        if (line !== undefined) out.push(line);
      }
      w.sinceRv = Math.max(fromRv, this.store.resourceVersion);
    }
    if (out.length > 0) res.write(out.join(''));

    this.watchers.add(w);
    res.on('close', () => this.close(w));
    res.on('error', () => this.close(w));
    if (bookmarks && this.opts.bookmarkMs > 0) {
      const t = setInterval(() => {
        if (!w.closed) res.write(this.bookmarkLine(info, false));
      }, this.opts.bookmarkMs);
      t.unref();
      w.timers.push(t);
    }
    const timeouts: number[] = [];
    const ts = Number(q.get('timeoutSeconds') ?? '');
    if (Number.isFinite(ts) && ts > 0) timeouts.push(ts * 1000);
    if (this.opts.watchTimeoutMs > 0) timeouts.push(this.opts.watchTimeoutMs);
    if (timeouts.length > 0) {
      const t = setTimeout(
        () => {
          this.close(w);
          res.end();
        },
        Math.min(...timeouts),
      );
      t.unref();
      w.timers.push(t);
    }
  }

  /** writes e to every open watch that should see it; true when at least one did */
  publish(e: StoredEvent): boolean {
    let written = false;
    for (const w of this.watchers) {
      if (w.res === e.res && this.deliver(w, e)) written = true;
    }
    return written;
  }

  count(res?: Resource): number {
    if (res === undefined) return this.watchers.size;
    let n = 0;
    for (const w of this.watchers) if (w.res === res) n++;
    return n;
  }

  /** destroys the connections of res's open watches (their clients see an error) */
  destroy(res: Resource): void {
    for (const w of [...this.watchers]) if (w.res === res) w.http.destroy();
  }

  /** closes and destroys every open watch connection abruptly; returns how many */
  dropAll(): number {
    const ws = [...this.watchers];
    for (const w of ws) {
      this.close(w);
      w.http.socket?.destroy();
      w.http.destroy();
    }
    return ws.length;
  }

  /** stops writing to every open watch (their connections end with the listener's) */
  closeAll(): void {
    for (const w of [...this.watchers]) this.close(w);
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

  private bookmarkLine(info: ResourceInfo, initialEventsEnd: boolean): string {
    const metadata: Record<string, unknown> = { resourceVersion: String(this.store.resourceVersion) };
    if (initialEventsEnd) metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
    return JSON.stringify({ type: 'BOOKMARK', object: { kind: info.kind, apiVersion: info.apiVersion, metadata } }) + '\n';
  }

  private close(w: Watcher): void {
    if (w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
    this.watchers.delete(w);
  }
}
