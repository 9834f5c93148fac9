// Kubernetes objects → the source-neutral model (src/model.ts). Pure: no I/O.
// Every object that cannot be used as it is says why (`skip`), so the source
// can log it once by name and count it; nothing here throws on odd input.
import type { V1EndpointSlice, V1Namespace, V1NetworkPolicy, V1Pod, V1Service } from '@kubernetes/client-node';
import { BANDWIDTH_ANNOTATIONS, ISTIO_CAPTURE_ANNOTATIONS } from '../pods/desired.js';
import {
  ACCELERATE_LABEL,
  affinityTimeout,
  type Namespace,
  type NetworkPolicy,
  type Pod,
  type Service,
  type ServiceEndpoint,
  type ServicePort,
} from '../model.js';

/** Marks a pod as running an Istio-style sidecar (besides an `istio-proxy` container). */
export const SIDECAR_ANNOTATION = 'podwarp.io/sidecar';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** The Node label topology-aware routing compares zone hints with. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** The pod annotations podwarp reads (the cache keeps only these: trim()). */
const KEPT_ANNOTATIONS = new Set([...BANDWIDTH_ANNOTATIONS, ...ISTIO_CAPTURE_ANNOTATIONS]);
export const keptAnnotation = (k: string): boolean => k.startsWith('podwarp.io/') || KEPT_ANNOTATIONS.has(k);

/**
 * An Istio sidecar: a container named istio-proxy, or a native sidecar (an
 * init container istio-proxy with restartPolicy Always, Kubernetes ≥ 1.28),
 * or the podwarp.io/sidecar annotation.
 */
export function hasSidecar(
  spec: { containers?: unknown; initContainers?: unknown } | undefined,
  annotations: Record<string, string>,
): boolean {
  if (annotations[SIDECAR_ANNOTATION] === 'true') return true;
  const list = (x: unknown) => (Array.isArray(x) ? (x as ({ name?: unknown; restartPolicy?: unknown } | null)[]) : []);
  if (list(spec?.containers).some((c) => c?.name === 'istio-proxy')) return true;
  return list(spec?.initContainers).some((c) => c?.name === 'istio-proxy' && c.restartPolicy === 'Always');
}

export type Converted<T> = { value: T; skip?: undefined } | { value?: undefined; skip: string } | { value: T; skip: string };

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export const isIPv4 = (s: unknown): s is string => typeof s === 'string' && IPV4.test(s);
const strMap = (m: unknown): Record<string, string> => {
  if (!m || typeof m !== 'object') return {};
  return Object.fromEntries(Object.entries(m as Record<string, unknown>).filter(([, v]) => typeof v === 'string')) as Record<
    string,
    string
  >;
};
const named = (o: { metadata?: { name?: string; namespace?: string } } | undefined): { ns: string; name: string } | undefined => {
  const name = o?.metadata?.name;
  if (typeof name !== 'string' || !name) return undefined;
  const ns = o?.metadata?.namespace;
  return { ns: typeof ns === 'string' ? ns : '', name };
};

export function namespaceFrom(o: V1Namespace): Converted<Namespace> {
  const id = named(o);
  if (!id) return { skip: 'missing metadata.name' };
  const labels = strMap(o.metadata?.labels);
  return { value: { name: id.name, labels, accelerate: labels[ACCELERATE_LABEL] === 'true' } };
}

/**
 * A pod of this node. Finished pods (Succeeded/Failed) are dropped: their IP
 * may already belong to a new pod. An IPv6-only pod is kept without an IP
 * (never an endpoint) and reported.
 */
export function podFrom(o: V1Pod): Converted<Pod> {
  const id = named(o);
  if (!id || !id.ns) return { skip: 'missing metadata.name or metadata.namespace' };
  const phase = o.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return { skip: `finished (${phase})` };
  const ips = [...new Set([...(o.status?.podIPs ?? []).map((p) => p?.ip), o.status?.podIP])].filter(
    (x): x is string => typeof x === 'string' && x !== '',
  );
  const v4 = ips.find(isIPv4);
  // only the annotations podwarp reads matter (and the cache keeps only those: trim())
  const annotations = Object.fromEntries(Object.entries(strMap(o.metadata?.annotations)).filter(([k]) => keptAnnotation(k)));
  const pod: Pod = {
    namespace: id.ns,
    name: id.name,
    uid: typeof o.metadata?.uid === 'string' ? o.metadata.uid : undefined,
    ip: v4,
    podInterface: 'eth0',
    hostNetwork: o.spec?.hostNetwork === true,
    terminating: o.metadata?.deletionTimestamp !== undefined && o.metadata?.deletionTimestamp !== null,
    sidecar: hasSidecar(o.spec, annotations),
    labels: strMap(o.metadata?.labels),
    annotations,
  };
  if (!v4 && ips.length && !pod.hostNetwork) return { value: pod, skip: `no IPv4 address (${ips.join(', ')}): IPv6 is not accelerated` };
  return { value: pod };
}

/**
 * Local pods → at most one pod per IP. During churn a terminating pod and its
 * successor can briefly share an IP: the live one wins; two live pods with one
 * IP are both left out (no guess), and reported.
 */
export function dedupeIPs(pods: Pod[]): { pods: Pod[]; conflicts: Map<string, string> } {
  const byIp = new Map<string, Pod[]>();
  for (const p of pods) if (p.ip && !p.hostNetwork) byIp.set(p.ip, [...(byIp.get(p.ip) ?? []), p]);
  const drop = new Set<Pod>();
  const conflicts = new Map<string, string>();
  for (const [ip, group] of byIp) {
    if (group.length < 2) continue;
    const live = group.filter((p) => !p.terminating);
    for (const p of group) if (p.terminating && live.length) drop.add(p);
    // two live pods (or only terminating ones) with one IP: none is used
    const claim = live.length ? live : group;
    if (claim.length > 1) {
      const names = claim.map((p) => `${p.namespace}/${p.name}`).sort();
      for (const p of group) drop.add(p);
      for (const p of claim) conflicts.set(`${p.namespace}/${p.name}`, `duplicate IP: ${ip} is claimed by ${names.join(' and ')}`);
    }
  }
  return { pods: pods.filter((p) => !drop.has(p)), conflicts };
}

export function networkPolicyFrom(o: V1NetworkPolicy): Converted<NetworkPolicy> {
  const id = named(o);
  if (!id || !id.ns) return { skip: 'missing metadata.name or metadata.namespace' };
  const sel = o.spec?.podSelector ?? {};
  const exprs: NonNullable<NetworkPolicy['matchExpressions']> = [];
  for (const e of Array.isArray(sel.matchExpressions) ? sel.matchExpressions : []) {
    const op = e?.operator;
    if (typeof e?.key !== 'string' || (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist')) {
      // cannot tell whom it selects: treat it as selecting every pod of the namespace (never accelerate what a policy may cover)
      return {
        value: { namespace: id.ns, name: id.name, matchLabels: {} },
        skip: `unsupported podSelector expression ${JSON.stringify(e)}: treated as selecting every pod`,
      };
    }
    exprs.push({ key: e.key, operator: op, values: Array.isArray(e.values) ? e.values.filter((v) => typeof v === 'string') : undefined });
  }
  return {
    value: { namespace: id.ns, name: id.name, matchLabels: strMap(sel.matchLabels), matchExpressions: exprs.length ? exprs : undefined },
  };
}

/** A Service without endpoints (see endpointsFrom). Headless, ExternalName and IPv6-only Services are not load-balanced by podwarp. */
export function serviceFrom(o: V1Service): Converted<Omit<Service, 'endpoints'>> {
  const id = named(o);
  if (!id || !id.ns) return { skip: 'missing metadata.name or metadata.namespace' };
  const spec = o.spec;
  if (!spec) return { skip: 'no spec' };
  if (spec.type === 'ExternalName') return { skip: 'ExternalName (DNS only)' };
  const ips = [...new Set([...(spec.clusterIPs ?? []), spec.clusterIP])].filter((x): x is string => typeof x === 'string' && x !== '');
  if (!ips.length || ips.includes('None')) return { skip: 'headless (no ClusterIP)' };
  const clusterIP = ips.find(isIPv4);
  if (!clusterIP) return { skip: `no IPv4 ClusterIP (${ips.join(', ')})` };
  const ports: ServicePort[] = [];
  const odd: string[] = [];
  for (const p of Array.isArray(spec.ports) ? spec.ports : []) {
    const proto = p?.protocol ?? 'TCP';
    if ((proto !== 'TCP' && proto !== 'UDP') || !Number.isInteger(p?.port) || p.port < 1 || p.port > 65535) {
      odd.push(`${p?.name ?? p?.port}/${proto}`);
      continue;
    }
    const tp = p.targetPort as unknown;
    const targetPort = typeof tp === 'number' ? tp : typeof tp === 'string' && tp !== '' ? (/^\d+$/.test(tp) ? Number(tp) : tp) : undefined;
    ports.push({ name: p.name || undefined, port: p.port, protocol: proto, targetPort });
  }
  const value = {
    namespace: id.ns,
    name: id.name,
    clusterIP,
    ...(spec.internalTrafficPolicy === 'Local' ? { internalTrafficPolicy: 'Local' as const } : {}),
    ...(spec.sessionAffinity === 'ClientIP'
      ? { affinityTimeout: affinityTimeout(spec.sessionAffinityConfig?.clientIP?.timeoutSeconds) }
      : {}),
    ...externalOf(spec, o.status),
    ports,
  };
  if (!ports.length) return { skip: 'no TCP/UDP port' };
  return odd.length ? { value, skip: `ports not load-balanced (not TCP/UDP or invalid): ${odd.join(', ')}` } : { value };
}

/**
 * The external addresses of a Service as kube-proxy's IPv4 proxier takes
 * them (pkg/proxy/serviceport.go): IPv4 `spec.externalIPs`, IPv4
 * `status.loadBalancer.ingress[].ip` (hostname-only entries have no address),
 * with their ipMode, externalTrafficPolicy (Local only for a LoadBalancer
 * or NodePort Service or a ClusterIP one with externalIPs, as kube-proxy's
 * apiservice.ExternalPolicyLocal reads it), and the IPv4
 * loadBalancerSourceRanges (whitespace trimmed, as kube-proxy does).
 */
function externalOf(spec: NonNullable<V1Service['spec']>, status: V1Service['status']): Partial<Service> {
  const out: Partial<Service> = {};
  const rawExt = Array.isArray(spec.externalIPs) ? spec.externalIPs : [];
  const ext = [...new Set(rawExt.filter(isIPv4))];
  if (ext.length) out.externalIPs = ext;
  const ingress: NonNullable<Service['loadBalancerIngress']> = [];
  for (const ing of Array.isArray(status?.loadBalancer?.ingress) ? status.loadBalancer.ingress : []) {
    if (!isIPv4(ing?.ip)) continue;
    ingress.push(ing.ipMode === 'Proxy' ? { ip: ing.ip, ipMode: 'Proxy' } : { ip: ing.ip });
  }
  if (ingress.length) out.loadBalancerIngress = ingress;
  // apiservice.ExternalPolicyLocal: Local counts only for an externally accessible Service
  const type = spec.type ?? 'ClusterIP';
  const accessible = type === 'LoadBalancer' || type === 'NodePort' || (type === 'ClusterIP' && rawExt.length > 0);
  if (spec.externalTrafficPolicy === 'Local' && accessible) out.externalTrafficPolicy = 'Local';
  const ranges = (Array.isArray(spec.loadBalancerSourceRanges) ? spec.loadBalancerSourceRanges : [])
    .map((r) => (typeof r === 'string' ? r.trim() : ''))
    .filter((r) => isIPv4(r.split('/')[0]));
  if (ranges.length) out.loadBalancerSourceRanges = ranges;
  return out;
}

/**
 * The IPv4 endpoints of a Service's slices, each with its slice's valid ports
 * (the ones kube-proxy uses: TCP/UDP, a port number 1-65535; desired.ts
 * matches them to the service ports by name and protocol). Slices of other
 * address types are reported and ignored.
 */
export function endpointsFrom(slices: Iterable<V1EndpointSlice>): {
  endpoints: ServiceEndpoint[];
  skips: { slice: string; reason: string }[];
} {
  const endpoints: ServiceEndpoint[] = [];
  const skips: { slice: string; reason: string }[] = [];
  for (const s of slices) {
    const name = `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? '?'}`;
    if (s.addressType !== 'IPv4') {
      skips.push({ slice: name, reason: `addressType ${String(s.addressType)} is not load-balanced` });
      continue;
    }
    // kube-proxy skips a slice port with a null or 0 port (and SCTP here): no endpoint of this slice is then an
    // endpoint of that service port. `ports: []` or none: the slice's endpoints belong to no service port at all.
    const ports: ServiceEndpoint['ports'] = [];
    for (const p of Array.isArray(s.ports) ? s.ports : []) {
      const proto = p?.protocol ?? 'TCP';
      if ((proto === 'TCP' || proto === 'UDP') && Number.isInteger(p?.port) && p.port! >= 1 && p.port! <= 65535)
        ports.push({ name: p.name || undefined, port: p.port!, protocol: proto });
    }
    const eps =
      typeof (s.endpoints as unknown) === 'string'
        ? unpackEndpoints(s.endpoints as unknown as string)
        : Array.isArray(s.endpoints)
          ? s.endpoints
          : [];
    for (const e of eps) {
      const ip = (e?.addresses ?? []).find(isIPv4);
      if (!ip) {
        skips.push({ slice: name, reason: `endpoint without an IPv4 address (${JSON.stringify(e?.addresses ?? null)})` });
        continue;
      }
      // API semantics (as kube-proxy reads them): a nil ready or serving means true; a nil terminating means false
      const names = (h: unknown) =>
        Array.isArray(h) ? h.map((x: { name?: unknown }) => x?.name).filter((n): n is string => typeof n === 'string' && n !== '') : [];
      const forZones = names(e.hints?.forZones);
      const forNodes = names((e.hints as { forNodes?: unknown } | undefined)?.forNodes);
      endpoints.push({
        ip,
        ready: e.conditions?.ready !== false,
        terminating: e.conditions?.terminating === true,
        ...(e.conditions?.serving === false ? { serving: false } : {}),
        ...(typeof e.nodeName === 'string' && e.nodeName !== '' ? { nodeName: e.nodeName } : {}),
        ...(forZones.length ? { forZones } : {}),
        ...(forNodes.length ? { forNodes } : {}),
        ports,
      });
    }
  }
  return { endpoints, skips };
}

/**
 * What the informer caches keep of each object: only the fields the
 * converters above read (real objects carry managedFields, pod specs,
 * topology hints… that would multiply the agent's memory at 100k endpoints).
 * Applied to listed items and watch events alike, before caching.
 */
/**
 * A slice's endpoints as the cache keeps them:
 * "addr,ready,terminating,serving,nodeName,zoneHints,nodeHints;…" with
 * ready/terminating/serving 1, 0 or - (unset), addr the first IPv4 address
 * or - (none), nodeName or - , hints as names joined by | or - (none).
 * Strings of the older 3-field form read as before. endpointsFrom() reads
 * both this and the API's array form.
 */
export type PackedEndpoints = string;
const flag = (v: unknown) => (v === true ? '1' : v === false ? '0' : '-');
const word = (v: unknown) => (typeof v === 'string' && v !== '' ? v.replace(/[,;|]/g, '') : '-');
const hintNames = (h: unknown) => {
  const n = Array.isArray(h) ? h.map((x: { name?: unknown }) => word(x?.name)).filter((x) => x !== '-') : [];
  return n.length ? n.join('|') : '-';
};
interface ApiEndpoint {
  addresses?: unknown;
  conditions?: { ready?: unknown; terminating?: unknown; serving?: unknown };
  nodeName?: unknown;
  hints?: { forZones?: unknown; forNodes?: unknown };
}
export function packEndpoints(eps: ApiEndpoint[]): PackedEndpoints {
  return eps
    .map((e) => {
      const a = Array.isArray(e?.addresses) ? e.addresses : [];
      const ip = a.find(isIPv4) ?? (a.length ? `!${a.map(String).join('|').replace(/[,;]/g, '')}` : '-');
      const c = e?.conditions;
      return [
        ip,
        flag(c?.ready),
        flag(c?.terminating),
        flag(c?.serving),
        word(e?.nodeName),
        hintNames(e?.hints?.forZones),
        hintNames(e?.hints?.forNodes),
      ].join(',');
    })
    .join(';');
}
function unpackEndpoints(p: PackedEndpoints): {
  addresses: string[];
  conditions: { ready?: boolean; terminating?: boolean; serving?: boolean };
  nodeName?: string;
  hints?: { forZones?: { name: string }[]; forNodes?: { name: string }[] };
}[] {
  if (!p) return [];
  const cond = (k: string, v: string | undefined) => (v === undefined || v === '-' ? {} : { [k]: v === '1' });
  const hints = (v: string | undefined) => (v === undefined || v === '-' ? undefined : v.split('|').map((name) => ({ name })));
  return p.split(';').map((e) => {
    const [ip = '-', r, t, sv, node, zones, nodes] = e.split(',');
    const addresses = ip === '-' ? [] : ip.startsWith('!') ? ip.slice(1).split('|') : [ip];
    return {
      addresses,
      conditions: { ...cond('ready', r), ...cond('terminating', t), ...cond('serving', sv) },
      ...(node === undefined || node === '-' ? {} : { nodeName: node }),
      hints: { forZones: hints(zones), forNodes: hints(nodes) },
    };
  });
}

export function trim(kind: string, o: unknown): unknown {
  if (!o || typeof o !== 'object') return o;
  const x = o as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const m = x.metadata ?? {};
  const meta = (extra: Record<string, unknown> = {}) => ({
    name: m.name,
    namespace: m.namespace,
    resourceVersion: m.resourceVersion,
    ...extra,
  });
  const pick = (src: unknown, keys: string[]) =>
    src && typeof src === 'object'
      ? Object.fromEntries(keys.filter((k) => k in (src as object)).map((k) => [k, (src as Record<string, unknown>)[k]]))
      : undefined;
  switch (kind) {
    case 'namespaces':
      return { metadata: meta({ labels: m.labels }) };
    case 'pods': {
      const ann =
        m.annotations && typeof m.annotations === 'object'
          ? Object.fromEntries(Object.entries(m.annotations).filter(([k]) => keptAnnotation(k)))
          : undefined;
      const spec = x.spec ?? {};
      return {
        metadata: meta({ uid: m.uid, labels: m.labels, annotations: ann, deletionTimestamp: m.deletionTimestamp }),
        spec: {
          nodeName: spec.nodeName,
          hostNetwork: spec.hostNetwork,
          containers: Array.isArray(spec.containers) ? spec.containers.map((c: { name?: string }) => ({ name: c?.name })) : undefined,
          initContainers: Array.isArray(spec.initContainers)
            ? spec.initContainers.map((c: { name?: string; restartPolicy?: string }) => ({
                name: c?.name,
                restartPolicy: c?.restartPolicy,
              }))
            : undefined,
        },
        status: pick(x.status, ['phase', 'podIP', 'podIPs']),
      };
    }
    case 'services':
      return {
        metadata: meta(),
        spec: pick(x.spec, [
          'type',
          'clusterIP',
          'clusterIPs',
          'ports',
          'internalTrafficPolicy',
          'sessionAffinity',
          'sessionAffinityConfig',
          'externalIPs',
          'externalTrafficPolicy',
          'loadBalancerSourceRanges',
        ]),
        status: x.status?.loadBalancer?.ingress
          ? {
              loadBalancer: {
                ingress: (Array.isArray(x.status.loadBalancer.ingress) ? x.status.loadBalancer.ingress : []).map(
                  (i: { ip?: string; ipMode?: string }) => pick(i, ['ip', 'ipMode']),
                ),
              },
            }
          : undefined,
      };
    case 'endpointslices':
      return {
        metadata: meta({
          labels: m.labels?.[SERVICE_NAME_LABEL] !== undefined ? { [SERVICE_NAME_LABEL]: m.labels[SERVICE_NAME_LABEL] } : undefined,
        }),
        addressType: x.addressType,
        // packed (see PackedEndpoints): at 100,000 endpoints, one string per slice instead of three objects per endpoint
        endpoints: Array.isArray(x.endpoints) ? packEndpoints(x.endpoints) : x.endpoints,
        ports: x.ports,
      };
    case 'networkpolicies':
      return { metadata: meta(), spec: { podSelector: x.spec?.podSelector } };
    case 'nodes':
      // only the zone label: a Node's status (images, conditions) is large and changes every few seconds
      return { metadata: meta({ labels: m.labels?.[ZONE_LABEL] !== undefined ? { [ZONE_LABEL]: m.labels[ZONE_LABEL] } : undefined }) };
    default:
      return o;
  }
}
