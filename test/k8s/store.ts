/**
 * The API server double's store: objects per resource as plain JSON, one global
 * resourceVersion counter for all resources (like etcd), and the event history
 * a watch resumes from, bounded and compactable.
 */
import { randomUUID } from 'node:crypto';
import { isPlainObject } from './json.js';
import { RESOURCES, RESOURCE_NAMES, type ApiObject, type Resource } from './resources.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
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

function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Objects handed to create() and replace() are owned by the store afterwards, and
 * what it returns is the stored object itself: callers copy on the way in and out.
 */
export class Store {
  private rv = 1000;
  /** every event with rv > compacted is in history */
  private compacted = 1000;
  private history: StoredEvent[] = [];
  private historyStart = 0;
  private readonly store = new Map<Resource, Map<string, ApiObject>>();

  /** onEvent is called synchronously with every change, after it is in history */
  constructor(
    private readonly historyLimit: number,
    private readonly onEvent: (e: StoredEvent) => void,
  ) {
    for (const r of RESOURCE_NAMES) this.store.set(r, new Map());
  }

  get resourceVersion(): number {
    return this.rv;
  }

  /** a watch from a resourceVersion below this one cannot be replayed */
  get compactedRv(): number {
    return this.compacted;
  }

  objects(res: Resource): Map<string, ApiObject> {
    const m = this.store.get(res);
    if (!m) throw new Error(`unknown resource ${String(res)}`);
    return m;
  }

  keyOf(res: Resource, namespace: string | undefined, name: string): string {
    return RESOURCES[res].namespaced ? `${namespace ?? 'default'}/${name}` : name;
  }

  key(res: Resource, o: ApiObject): string {
    return this.keyOf(res, o.metadata.namespace, o.metadata.name);
  }

  /** a copy of o with apiVersion/kind first and the namespace set; validates the name */
  normalize(res: Resource, o: ApiObject): ApiObject {
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

  create(res: Resource, input: ApiObject): ApiObject {
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

  /** o is normalized; it keeps existing's uid and creationTimestamp */
  replace(res: Resource, key: string, existing: ApiObject, o: ApiObject): ApiObject {
    o.metadata.uid = existing.metadata.uid;
    o.metadata.creationTimestamp = existing.metadata.creationTimestamp;
    o.metadata.resourceVersion = String(++this.rv);
    this.objects(res).set(key, o);
    this.record({ rv: this.rv, res, type: 'MODIFIED', obj: o, prev: existing });
    return o;
  }

  /** the deleted object at the deletion's resourceVersion, undefined when there was none */
  delete(res: Resource, namespace: string | undefined, name: string): ApiObject | undefined {
    const key = this.keyOf(res, namespace, name);
    const objs = this.objects(res);
    const existing = objs.get(key);
    if (!existing) return undefined;
    objs.delete(key);
    const gone: ApiObject = { ...existing, metadata: { ...existing.metadata, resourceVersion: String(++this.rv) } };
    this.record({ rv: this.rv, res, type: 'DELETED', obj: gone });
    return gone;
  }

  /** forget all history */
  compact(): void {
    this.history = [];
    this.historyStart = 0;
    this.compacted = this.rv;
  }

  /** the retained events after resourceVersion fromRv, oldest first, all resources */
  *eventsAfter(fromRv: number): Generator<StoredEvent> {
    let lo = this.historyStart;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid]!.rv <= fromRv) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.history.length; i++) yield this.history[i]!;
  }

  private record(e: StoredEvent): void {
    this.history.push(e);
    while (this.history.length - this.historyStart > this.historyLimit) {
      this.compacted = this.history[this.historyStart]!.rv;
      this.historyStart++;
    }
    if (this.historyStart > 4096 && this.historyStart * 2 > this.history.length) {
      this.history = this.history.slice(this.historyStart);
      this.historyStart = 0;
    }
    this.onEvent(e);
  }
}
