// The Kubernetes source: @kubernetes/client-node informers (list + watch,
// relist on 410 Gone, restart with backoff after errors) for this node's
// Pods and Node (its zone label), and every Namespace, Service, EndpointSlice
// and NetworkPolicy.
// It keeps the informers' caches (no copies) plus two small indexes
// (EndpointSlices by Service) and tells the agent *what* changed, so a
// changed EndpointSlice costs one Service's worth of work, not a full pass.
import {
  ApisApi,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  NetworkingV1Api,
  Watch,
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Namespace,
  type V1NetworkPolicy,
  type V1Pod,
  type V1Service,
} from '@kubernetes/client-node';
import fs from 'node:fs';
import { InputError, errorMessage } from '../../host/errors.js';
import { log } from '../../host/log.js';
import type { NetworkPolicy, Service, Snapshot } from '../model.js';
import { POLICY_APIS, apiName, policyFrom, trimPolicy, type PolicyApi } from './kube-policies.js';
import {
  SERVICE_NAME_LABEL,
  ZONE_LABEL,
  dedupeIPs,
  trim,
  endpointsFrom,
  namespaceFrom,
  networkPolicyFrom,
  podFrom,
  serviceFrom,
} from './kube-convert.js';

export { ZONE_LABEL };
/**
 * kube-proxy's Service and EndpointSlice informers list only what no other
 * proxy is named for (service.kubernetes.io/service-proxy-name) and no
 * headless slice (service.kubernetes.io/headless); podwarp's do the same, so
 * a Service meant for another proxy is never translated at connect().
 */
export const PROXIED_BY_US = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';

export type Kind = 'namespaces' | 'pods' | 'services' | 'endpointslices' | 'networkpolicies' | 'nodes';
/** The kinds whose caches must be complete before the agent touches the datapath (not `nodes`: the zone is optional). */
export const KINDS: Kind[] = ['namespaces', 'pods', 'services', 'endpointslices', 'networkpolicies'];

/**
 * What an event invalidates: the node-local part (pods, namespaces, policies)
 * and/or some Services (namespace/name), or every Service (`zone`: this
 * node's `topology.kubernetes.io/zone` label changed, so topology hints
 * choose anew).
 */
export interface Change {
  pods: boolean;
  services: Set<string>;
  zone?: boolean;
}

export interface SourceHooks {
  onChange(c: Change): void;
  /** An object (or part of one) is not used, and why: logged once by the caller, counted. */
  onSkip(kind: string, name: string, reason: string): void;
  onEvent?(kind: Kind, type: 'add' | 'update' | 'delete'): void;
  onList?(kind: Kind): void;
  onError?(kind: Kind, err: string): void;
  /** A policy API (`<plural>.<group>`) or the discovery itself failed (fail closed until it answers again). */
  onPolicyError?(api: string, err: string): void;
}

export interface KubeSourceOptions {
  /** kubeconfig file; default: in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG / ~/.kube/config. */
  kubeconfig?: string;
  node: string;
  /** First retry after a watch error; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Objects per list page (limit/continue). */
  pageSize?: number;
  /** API discovery (which policy APIs the cluster serves) is repeated this often; default 30 s. */
  discoveryMs?: number;
}

/** An informer of one served policy API (POLICY_APIS). */
interface PolicyInformer {
  api: PolicyApi;
  version: string;
  lw: ListWatch<KubernetesObject>;
  /** Listed, and no watch error since: its cache is complete. */
  synced: boolean;
  stopped: boolean;
  backoffMs?: number;
  error?: string;
}

export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (file) {
      if (!fs.existsSync(file)) throw new InputError(`kubeconfig ${file} does not exist`);
      kc.loadFromFile(file);
    } else if (process.env.KUBERNETES_SERVICE_HOST) {
      // in a pod: the service account under /var/run/secrets/kubernetes.io/serviceaccount
      // (PODWARP_INCLUSTER_ROOT prefixes that path: an account mounted elsewhere, and the tests)
      kc.loadFromCluster(process.env.PODWARP_INCLUSTER_ROOT ?? '');
    } else {
      kc.loadFromDefault();
    }
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot load the Kubernetes client configuration: ${errorMessage(e)}`);
  }
  if (!kc.getCurrentCluster())
    throw new InputError('no Kubernetes cluster configured: pass --kubeconfig FILE, set KUBECONFIG, or run in a pod');
  return kc;
}

/** client-node's Watch does not ask for bookmarks; the informer already handles them (they move its resourceVersion on). */
/** Also trims every watched object before the informer caches it (see trim()). */
class BookmarkWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly slimObj: (o: unknown) => unknown,
  ) {
    super(kc);
  }
  override watch(
    path: string,
    q: Record<string, string | number | boolean | undefined>,
    cb: Parameters<Watch['watch']>[2],
    done: Parameters<Watch['watch']>[3],
  ) {
    const slim: Parameters<Watch['watch']>[2] = (type, obj, raw) =>
      cb(type, type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED' ? this.slimObj(obj) : obj, raw);
    return super.watch(path, { ...q, allowWatchBookmarks: true }, slim, done);
  }
}

/** An API client error as one line: `HTTP <code>: <first line>` when it has a status code. */
function apiError(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'number' ? `HTTP ${code}: ${errorMessage(e).split('\n')[0]}` : errorMessage(e);
}

/** Makes the informer's next start() list again instead of resuming its watch (client-node resumes when it has a resourceVersion). */
const relist = (lw: ListWatch<KubernetesObject>) => {
  (lw as unknown as { resourceVersion: string }).resourceVersion = '';
};

const keyOf = (o: KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export class KubeSource {
  private readonly kc: KubeConfig;
  private readonly informers = new Map<Kind, ListWatch<KubernetesObject>>();
  private readonly listed = new Set<Kind>();
  private readonly backoff = new Map<Kind, number>();
  private readonly lastError = new Map<Kind, string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Service key → slice key → slice. */
  private readonly slicesBySvc = new Map<string, Map<string, V1EndpointSlice>>();
  private readonly sliceOwner = new Map<string, string>();
  /** Served policy APIs by `<plural>.<group>`. */
  private readonly policies = new Map<string, PolicyInformer>();
  /** Discovery: not run yet (undefined), failing (its error) or answered (''). */
  private discoveryError: string | undefined;
  /** Core kinds whose watch failed and that have not relisted since. */
  private readonly stale = new Set<Kind>();
  private stopped = false;
  /** The zone last reported (a Node event that changes it is a `zone` Change). */
  private knownZone?: string;

  constructor(
    private readonly opts: KubeSourceOptions,
    private readonly hooks: SourceHooks,
  ) {
    this.kc = loadKubeConfig(opts.kubeconfig);
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '?';
  }

  /**
   * This node's `topology.kubernetes.io/zone` label, from the watched Node
   * (undefined: no label, or the Node could not be listed yet). A failing
   * watch keeps the last one seen, as kube-proxy does.
   */
  get zone(): string | undefined {
    const n = this.informers.get('nodes')?.get(this.opts.node);
    const z = n?.metadata?.labels?.[ZONE_LABEL];
    return typeof z === 'string' && z !== '' ? z : undefined;
  }

  /** Why the zone is unknown: the Node's list failed (e.g. RBAC) or it does not exist. */
  get zoneError(): string | undefined {
    if (this.listed.has('nodes')) return this.informers.get('nodes')?.get(this.opts.node) ? undefined : `Node ${this.opts.node} not found`;
    return this.lastError.get('nodes');
  }

  /** Starts every informer; resolves once each has listed once (the caches are complete), or rejects after timeoutMs. */
  async start(timeoutMs = 60_000): Promise<void> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const disc = this.kc.makeApiClient(DiscoveryV1Api);
    const net = this.kc.makeApiClient(NetworkingV1Api);
    const node = this.opts.node;
    type Page = { items: KubernetesObject[]; metadata?: { resourceVersion?: string; _continue?: string } };
    type Params = { limit: number; _continue?: string; fieldSelector?: string; labelSelector?: string };
    // kind, path, list call, field selector, label selector (the watch asks for the same)
    const defs: [Kind, string, (p: Params) => Promise<Page>, string?, string?][] = [
      ['namespaces', '/api/v1/namespaces', (p) => core.listNamespace(p)],
      [
        'pods',
        '/api/v1/pods',
        (p) => core.listPodForAllNamespaces({ ...p, fieldSelector: `spec.nodeName=${node}` }),
        `spec.nodeName=${node}`,
      ],
      [
        'services',
        '/api/v1/services',
        (p) => core.listServiceForAllNamespaces({ ...p, labelSelector: PROXIED_BY_US }),
        undefined,
        PROXIED_BY_US,
      ],
      [
        'endpointslices',
        '/apis/discovery.k8s.io/v1/endpointslices',
        (p) => disc.listEndpointSliceForAllNamespaces({ ...p, labelSelector: PROXIED_BY_US }),
        undefined,
        PROXIED_BY_US,
      ],
      ['networkpolicies', '/apis/networking.k8s.io/v1/networkpolicies', (p) => net.listNetworkPolicyForAllNamespaces(p)],
      // this node alone (kube-proxy watches its Node the same way): its zone label decides topology hints
      ['nodes', '/api/v1/nodes', (p) => core.listNode({ ...p, fieldSelector: `metadata.name=${node}` }), `metadata.name=${node}`],
    ];
    for (const [kind, path, list, fieldSelector, labelSelector] of defs) {
      // paged (like client-go's reflector), trimmed page by page: a 10,000-object list never sits in memory whole
      const listFn = async () => {
        const items: KubernetesObject[] = [];
        let page: Page | undefined;
        do {
          page = await list({ limit: this.opts.pageSize ?? 500, _continue: page?.metadata?._continue });
          for (const o of page.items) items.push(trim(kind, o) as KubernetesObject);
        } while (page.metadata?._continue);
        const r = { items, metadata: { resourceVersion: page.metadata?.resourceVersion } };
        this.listed.add(kind);
        this.stale.delete(kind);
        this.backoff.delete(kind);
        this.hooks.onList?.(kind);
        return r;
      };
      const lw = new ListWatch<KubernetesObject>(
        path,
        new BookmarkWatch(this.kc, (o) => trim(kind, o)),
        listFn,
        false,
        labelSelector,
        fieldSelector,
      );
      lw.on('add', (o) => this.event(kind, 'add', o));
      lw.on('update', (o) => this.event(kind, 'update', o));
      lw.on('delete', (o) => this.event(kind, 'delete', o));
      lw.on('error', (e: unknown) => this.failed(kind, lw, e));
      this.informers.set(kind, lw);
    }
    await Promise.all([...this.informers.values()].map((lw) => lw.start()));
    const deadline = Date.now() + timeoutMs;
    await this.discover();
    this.schedule(() => this.rediscover(), this.opts.discoveryMs ?? 30_000);
    // every kind listed, and the Node listed or failed once (no zone then: hinted Services use every endpoint)
    const nodeAnswered = () => this.listed.has('nodes') || this.lastError.has('nodes');
    while (KINDS.some((k) => !this.listed.has(k)) || !nodeAnswered()) {
      if (this.stopped) throw new Error('source stopped');
      if (Date.now() > deadline) {
        if (!KINDS.some((k) => !this.listed.has(k))) break;
        const why = KINDS.filter((k) => !this.listed.has(k)).map(
          (k) => `${k}${this.lastError.has(k) ? ` (${this.lastError.get(k)})` : ''}`,
        );
        throw new Error(`Kubernetes API at ${this.server} did not answer the initial list of: ${why.join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // the served policy APIs: each listed or failing (a failing one keeps every pod on the normal path: policyGaps)
    while (!this.stopped && Date.now() < deadline && [...this.policies.values()].some((p) => !p.synced && !p.error))
      await new Promise((r) => setTimeout(r, 100));
  }

  private schedule(fn: () => Promise<void>, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.stopped) return;
      void fn().finally(() => {
        if (!this.stopped) this.schedule(fn, ms);
      });
    }, ms);
    this.timers.add(t);
  }

  private async rediscover(): Promise<void> {
    const before = this.gapKey();
    const changed = await this.discover();
    if (changed || this.gapKey() !== before) this.hooks.onChange({ pods: true, services: new Set() });
  }

  private gapKey(): string {
    return JSON.stringify([this.policyGaps(), [...this.policies.keys()].sort()]);
  }

  /**
   * API discovery: which POLICY_APIS the cluster serves (GET /apis, then each
   * candidate group's version). Starts an informer for every newly served API
   * and stops the ones no longer served. Returns whether that set changed.
   */
  private async discover(): Promise<boolean> {
    const served = new Map<string, { api: PolicyApi; version: string }>();
    try {
      const groups = await this.kc.makeApiClient(ApisApi).getAPIVersions();
      const custom = this.kc.makeApiClient(CustomObjectsApi);
      for (const g of groups.groups ?? []) {
        const wanted = POLICY_APIS.filter((a) => a.group === g.name);
        if (!wanted.length) continue;
        // the preferred version first: the first version serving a resource is the one watched
        const versions = [g.preferredVersion?.version, ...(g.versions ?? []).map((v) => v.version)].filter(
          (v, i, all): v is string => typeof v === 'string' && all.indexOf(v) === i,
        );
        for (const version of versions) {
          const res = await custom.getAPIResources({ group: g.name, version });
          for (const a of wanted) {
            if (!served.has(apiName(a)) && (res.resources ?? []).some((r) => r.name === a.plural))
              served.set(apiName(a), { api: a, version });
          }
        }
      }
    } catch (e) {
      const err = apiError(e);
      if (this.discoveryError !== err) log.warn({ err }, 'API discovery failed: no pod is accelerated until it answers');
      this.discoveryError = err;
      this.hooks.onPolicyError?.('discovery', err);
      return false;
    }
    if (this.discoveryError) log.info('API discovery answers again');
    this.discoveryError = '';
    let changed = false;
    for (const [name, p] of this.policies) {
      if (served.get(name)?.version === p.version) continue;
      p.stopped = true;
      await p.lw.stop();
      this.policies.delete(name);
      changed = true;
      log.info({ api: name }, 'policy API no longer served');
    }
    for (const [name, { api, version }] of served) {
      if (this.policies.has(name)) continue;
      this.startPolicy(name, api, version);
      changed = true;
      log.info({ api: name, version }, 'policy API served: watching it');
    }
    return changed;
  }

  private startPolicy(name: string, api: PolicyApi, version: string): void {
    const custom = this.kc.makeApiClient(CustomObjectsApi);
    const path = `/apis/${api.group}/${version}/${api.plural}`;
    type Page = { items?: KubernetesObject[]; metadata?: { resourceVersion?: string; continue?: string } };
    const p: PolicyInformer = { api, version, synced: false, stopped: false, lw: undefined as unknown as ListWatch<KubernetesObject> };
    const listFn = async () => {
      const items: KubernetesObject[] = [];
      let page: Page | undefined;
      do {
        page = (await custom.listClusterCustomObject({
          group: api.group,
          version,
          plural: api.plural,
          limit: this.opts.pageSize ?? 500,
          _continue: page?.metadata?.continue,
        })) as Page;
        for (const o of page.items ?? []) items.push(trimPolicy(o) as KubernetesObject);
      } while (page.metadata?.continue);
      if (p.stopped) throw new Error('stopped');
      p.synced = true;
      p.error = undefined;
      p.backoffMs = undefined;
      this.hooks.onChange({ pods: true, services: new Set() });
      return { items, metadata: { resourceVersion: page.metadata?.resourceVersion } };
    };
    p.lw = new ListWatch<KubernetesObject>(path, new BookmarkWatch(this.kc, trimPolicy), listFn, false);
    const changed = () => {
      if (!p.stopped) this.hooks.onChange({ pods: true, services: new Set() });
    };
    p.lw.on('add', changed);
    p.lw.on('update', changed);
    p.lw.on('delete', changed);
    p.lw.on('error', (e: unknown) => {
      if (this.stopped || p.stopped) return;
      const err = apiError(e);
      const first = !p.error;
      p.synced = false;
      p.error = err;
      this.hooks.onPolicyError?.(name, err);
      // fail closed at once: the pods this API may cover leave the fast path until it relists
      this.hooks.onChange({ pods: true, services: new Set() });
      const ms = p.backoffMs ?? this.opts.backoffMs ?? 500;
      p.backoffMs = Math.min(ms * 2, this.opts.maxBackoffMs ?? 10_000);
      if (first) log.warn({ api: name, err, retryMs: ms }, 'policy API watch failed: its pods are not accelerated until it relists');
      const t = setTimeout(() => {
        this.timers.delete(t);
        // relist (not resume): the cache counts as complete again only once a list has answered
        relist(p.lw);
        if (!this.stopped && !p.stopped) void p.lw.start();
      }, ms);
      this.timers.add(t);
    });
    this.policies.set(name, p);
    void p.lw.start();
  }

  /** Policy APIs (and `discovery`) whose objects podwarp does not have right now: fail closed while any is listed. */
  policyGaps(): string[] {
    const gaps: string[] = [];
    if (this.discoveryError !== '') gaps.push('discovery');
    if (this.stale.has('networkpolicies')) gaps.push('networkpolicies.networking.k8s.io');
    for (const [name, p] of this.policies) if (!p.synced) gaps.push(name);
    return gaps.sort();
  }

  /** The served policy APIs and their object counts (status, metrics). */
  policyApis(): { api: string; version: string; objects: number; synced: boolean; error?: string }[] {
    return [...this.policies].map(([api, p]) => ({
      api,
      version: p.version,
      objects: p.lw.list().length,
      synced: p.synced,
      error: p.error,
    }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    await Promise.all([...this.informers.values()].map((lw) => lw.stop()));
    for (const p of this.policies.values()) p.stopped = true;
    await Promise.all([...this.policies.values()].map((p) => p.lw.stop()));
  }

  private failed(kind: Kind, lw: ListWatch<KubernetesObject>, e: unknown): void {
    if (this.stopped) return; // stop() aborts the watch, which reports an AbortError
    const err = apiError(e);
    this.lastError.set(kind, err);
    if (kind === 'networkpolicies' && !this.stale.has(kind)) {
      // events may be missed until it relists: fail closed
      this.stale.add(kind);
      this.hooks.onChange({ pods: true, services: new Set() });
    }
    this.hooks.onError?.(kind, err);
    const ms = this.backoff.get(kind) ?? this.opts.backoffMs ?? 500;
    this.backoff.set(kind, Math.min(ms * 2, this.opts.maxBackoffMs ?? 10_000));
    log.warn({ kind, err, retryMs: ms }, 'watch failed; restarting');
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (kind === 'networkpolicies') relist(lw); // stale until a list answers (fail closed)
      if (!this.stopped) void lw.start();
    }, ms);
    this.timers.add(t);
  }

  private event(kind: Kind, type: 'add' | 'update' | 'delete', o: KubernetesObject): void {
    this.hooks.onEvent?.(kind, type);
    const c: Change = { pods: false, services: new Set() };
    if (kind === 'nodes') {
      const zone = this.zone;
      if (zone === this.knownZone) return;
      log.info({ node: this.opts.node, zone: zone ?? null, was: this.knownZone ?? null }, "this node's zone label changed");
      this.knownZone = zone;
      c.zone = true;
    } else if (kind === 'services') c.services.add(keyOf(o));
    else if (kind === 'endpointslices') {
      const sk = keyOf(o);
      const old = this.sliceOwner.get(sk);
      if (old) {
        this.slicesBySvc.get(old)?.delete(sk);
        if (this.slicesBySvc.get(old)?.size === 0) this.slicesBySvc.delete(old);
        this.sliceOwner.delete(sk);
        c.services.add(old);
      }
      const svc = o.metadata?.labels?.[SERVICE_NAME_LABEL];
      if (type !== 'delete' && svc) {
        const owner = `${o.metadata?.namespace ?? ''}/${svc}`;
        if (!this.slicesBySvc.has(owner)) this.slicesBySvc.set(owner, new Map());
        this.slicesBySvc.get(owner)!.set(sk, o as V1EndpointSlice);
        this.sliceOwner.set(sk, owner);
        c.services.add(owner);
      }
    } else c.pods = true;
    this.hooks.onChange(c);
  }

  /** Objects in the caches, by kind (a gauge; `nodes`: 1 once this node is seen). */
  counts(): Record<Kind, number> {
    return Object.fromEntries([...KINDS, 'nodes'].map((k) => [k, this.informers.get(k as Kind)?.list().length ?? 0])) as Record<
      Kind,
      number
    >;
  }

  /** The node-local part of the snapshot: this node's pods, every namespace and NetworkPolicy. Services come per key (service()). */
  snapshot(): Snapshot {
    const list = <T>(k: Kind) => (this.informers.get(k)?.list() ?? []) as T[];
    const namespaces = [];
    for (const o of list<V1Namespace>('namespaces')) {
      const r = namespaceFrom(o);
      if (r.skip) this.hooks.onSkip('namespace', keyOf(o), r.skip);
      if (r.value) namespaces.push(r.value);
    }
    const pods = [];
    for (const o of list<V1Pod>('pods')) {
      if (o.spec?.nodeName !== undefined && o.spec.nodeName !== this.opts.node) continue; // the field selector already says so; belt and braces
      const r = podFrom(o);
      if (r.skip) this.hooks.onSkip('pod', keyOf(o), r.skip);
      if (r.value) pods.push(r.value);
    }
    const d = dedupeIPs(pods);
    for (const [pod, why] of d.conflicts) this.hooks.onSkip('pod', pod, why);
    const networkPolicies: NetworkPolicy[] = [];
    for (const o of list<V1NetworkPolicy>('networkpolicies')) {
      const r = networkPolicyFrom(o);
      if (r.skip) this.hooks.onSkip('networkpolicy', keyOf(o), r.skip);
      if (r.value) networkPolicies.push(r.value);
    }
    for (const [name, p] of this.policies) {
      for (const o of p.lw.list()) {
        const r = policyFrom(p.api, o);
        if (r.skip) this.hooks.onSkip(name, keyOf(o), r.skip);
        if (r.value) networkPolicies.push(...r.value);
      }
    }
    const policyGaps = this.policyGaps();
    return { node: this.opts.node, zone: this.zone, namespaces, pods: d.pods, networkPolicies, services: [], policyGaps };
  }

  serviceKeys(): string[] {
    return (this.informers.get('services')?.list() ?? []).map(keyOf);
  }

  /** One Service with the endpoints of its slices, or undefined when it is gone or not load-balanced. */
  service(key: string): Service | undefined {
    const i = key.indexOf('/');
    const o = this.informers.get('services')?.get(key.slice(i + 1), key.slice(0, i)) as V1Service | undefined;
    if (!o) return undefined;
    const r = serviceFrom(o);
    if (r.skip) this.hooks.onSkip('service', key, r.skip);
    if (!r.value) return undefined;
    const e = endpointsFrom(this.slicesBySvc.get(key)?.values() ?? []);
    for (const s of e.skips) this.hooks.onSkip('endpointslice', s.slice, s.reason);
    return { ...r.value, endpoints: e.endpoints };
  }
}
