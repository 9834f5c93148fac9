// Local source: a state file (YAML or JSON) → Snapshot. The file is validated
// whole (JSON Schema via ajv, then cross-references) before anything is used.
import fs from 'node:fs';
import YAML from 'yaml';
import { InputError } from '../../host/errors.js';
import { checks } from '../../host/validate.js';
import type { Service, Snapshot } from '../model.js';
import { affinityTimeout, podKey } from '../model.js';
import schema from './state.schema.json' with { type: 'json' };

const validate = checks({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true })<StateFile>(schema);

export interface StateFile {
  apiVersion: 'podwarp.io/v1alpha1';
  kind: 'NodeState';
  node?: string;
  kubeProxy?: { masqueradeAll?: boolean };
  namespaces: { name: string; accelerate?: boolean; labels?: Record<string, string> }[];
  pods: {
    namespace: string;
    name: string;
    uid?: string;
    ip?: string;
    hostInterface?: string;
    podInterface?: string;
    mac?: string;
    netns?: string;
    cgroup?: string;
    hostNetwork?: boolean;
    sidecar?: boolean;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  }[];
  networkPolicies?: { namespace: string; name: string; podSelector?: { matchLabels?: Record<string, string> } }[];
  services?: {
    namespace: string;
    name: string;
    clusterIP: string;
    sessionAffinity?: 'None' | 'ClientIP';
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalIPs?: string[];
    externalTrafficPolicy?: 'Cluster' | 'Local';
    loadBalancerSourceRanges?: string[];
    status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string; ipMode?: 'VIP' | 'Proxy' }[] } };
    ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP'; targetPort?: number | string }[];
    endpoints?: {
      ip: string;
      ready?: boolean;
      terminating?: boolean;
      ports?: { name?: string; port: number; protocol?: 'TCP' | 'UDP' }[];
    }[];
  }[];
}

/** Parses and validates; throws InputError listing every problem as path + reason. */
export function parseState(text: string, source = 'state'): StateFile {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { prettyErrors: true });
  } catch (e) {
    throw new InputError(`${source}: not valid YAML/JSON`, [
      { path: '', message: e instanceof Error ? e.message.split('\n')[0]! : String(e) },
    ]);
  }
  if (!validate(doc)) {
    const problems = (validate.errors ?? []).map((e) => {
      let message = e.message ?? 'invalid';
      if (e.keyword === 'additionalProperties') message = `unknown property "${String(e.params.additionalProperty)}"`;
      if (e.keyword === 'pattern' && /ipv4/.test(e.schemaPath)) message = 'not an IPv4 address';
      if (e.keyword === 'pattern' && /mac/.test(e.schemaPath)) message = 'not a MAC address (aa:bb:cc:dd:ee:ff)';
      if (e.keyword === 'const' || e.keyword === 'enum') message += `: ${JSON.stringify(e.params.allowedValue ?? e.params.allowedValues)}`;
      return { path: e.instancePath, message };
    });
    throw new InputError(`${source}: invalid state`, dedupe(problems));
  }
  const st = doc as unknown as StateFile;
  const problems: { path: string; message: string }[] = [];
  const nsNames = new Set<string>();
  st.namespaces.forEach((n, i) => {
    if (nsNames.has(n.name)) problems.push({ path: `/namespaces/${i}/name`, message: `duplicate namespace "${n.name}"` });
    nsNames.add(n.name);
  });
  const pods = new Set<string>();
  const ips = new Map<string, string>();
  const ifaces = new Map<string, string>();
  st.pods.forEach((p, i) => {
    const k = podKey(p);
    if (!nsNames.has(p.namespace))
      problems.push({ path: `/pods/${i}/namespace`, message: `namespace "${p.namespace}" is not listed in /namespaces` });
    if (pods.has(k)) problems.push({ path: `/pods/${i}/name`, message: `duplicate pod "${k}"` });
    pods.add(k);
    if (p.ip && !p.hostNetwork) {
      const other = ips.get(p.ip);
      if (other) problems.push({ path: `/pods/${i}/ip`, message: `IP ${p.ip} is also pod "${other}"` });
      ips.set(p.ip, k);
    }
    if (p.hostInterface) {
      const other = ifaces.get(p.hostInterface);
      if (other) problems.push({ path: `/pods/${i}/hostInterface`, message: `interface ${p.hostInterface} is also pod "${other}"` });
      ifaces.set(p.hostInterface, k);
    }
  });
  (st.networkPolicies ?? []).forEach((np, i) => {
    if (!nsNames.has(np.namespace))
      problems.push({ path: `/networkPolicies/${i}/namespace`, message: `namespace "${np.namespace}" is not listed in /namespaces` });
  });
  if (problems.length) throw new InputError(`${source}: invalid state`, problems);
  return st;
}

function dedupe(ps: { path: string; message: string }[]): { path: string; message: string }[] {
  const seen = new Set<string>();
  return ps.filter((p) => {
    const k = p.path + '\0' + p.message;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function toSnapshot(st: StateFile): Snapshot {
  return {
    node: st.node,
    ...(st.kubeProxy?.masqueradeAll ? { masqueradeAll: true } : {}),
    namespaces: st.namespaces.map((n) => ({ name: n.name, accelerate: n.accelerate ?? false, labels: n.labels ?? {} })),
    pods: st.pods.map((p) => ({
      namespace: p.namespace,
      name: p.name,
      uid: p.uid,
      ip: p.ip,
      hostInterface: p.hostInterface,
      podInterface: p.podInterface ?? 'eth0',
      mac: p.mac?.toLowerCase(),
      netns: p.netns,
      cgroup: p.cgroup,
      hostNetwork: p.hostNetwork ?? false,
      sidecar: p.sidecar ?? false,
      labels: p.labels ?? {},
      annotations: p.annotations ?? {},
    })),
    networkPolicies: (st.networkPolicies ?? []).map((n) => ({
      namespace: n.namespace,
      name: n.name,
      matchLabels: n.podSelector?.matchLabels ?? {},
    })),
    services: (st.services ?? []).map((s) => ({
      namespace: s.namespace,
      name: s.name,
      clusterIP: s.clusterIP,
      ...(s.sessionAffinity === 'ClientIP' ? { affinityTimeout: affinityTimeout(s.sessionAffinityConfig?.clientIP?.timeoutSeconds) } : {}),
      ...external(s),
      ports: s.ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP', targetPort: p.targetPort })),
      endpoints: (s.endpoints ?? []).map((e) => ({
        ip: e.ip,
        ready: e.ready ?? true,
        terminating: e.terminating ?? false,
        ports: (e.ports ?? impliedPorts(s.ports)).map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' })),
      })),
    })),
  };
}

/**
 * The ports of an endpoint listed without `ports` (a convenience of the state
 * file: an EndpointSlice always has its own): what the EndpointSlice
 * controller would write for a pod that declares no named port, one per
 * service port with a numeric targetPort (that number) or none (the service
 * port). A named targetPort cannot be resolved without the pod's ports: that
 * service port gets none, so the endpoint is not one of it.
 */
function impliedPorts(
  ports: NonNullable<StateFile['services']>[number]['ports'],
): { name?: string; port: number; protocol?: 'TCP' | 'UDP' }[] {
  return ports.flatMap((p) =>
    typeof p.targetPort === 'string' ? [] : [{ name: p.name, port: p.targetPort ?? p.port, protocol: p.protocol ?? 'TCP' }],
  );
}

/** The external addresses of a state-file Service, as kube-convert takes them from a Service's spec and status. */
function external(s: NonNullable<StateFile['services']>[number]): Partial<Service> {
  const ingress = (s.status?.loadBalancer?.ingress ?? []).flatMap((i) =>
    i.ip === undefined ? [] : [i.ipMode === 'Proxy' ? { ip: i.ip, ipMode: 'Proxy' as const } : { ip: i.ip }],
  );
  const ranges = (s.loadBalancerSourceRanges ?? []).map((r) => r.trim());
  return {
    ...(s.externalIPs?.length ? { externalIPs: [...new Set(s.externalIPs)] } : {}),
    ...(ingress.length ? { loadBalancerIngress: ingress } : {}),
    ...(s.externalTrafficPolicy === 'Local' ? { externalTrafficPolicy: 'Local' as const } : {}),
    ...(ranges.length ? { loadBalancerSourceRanges: ranges } : {}),
  };
}

export function loadStateFile(file: string): { state: StateFile; snapshot: Snapshot } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read state file ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const state = parseState(text, file);
  return { state, snapshot: toSnapshot(state) };
}

/** Writes a state file atomically (temp + rename), as JSON or YAML by extension. */
export function writeStateFile(file: string, st: StateFile): void {
  parseState(JSON.stringify(st), file); // never write what we would reject
  const text = /\.ya?ml$/.test(file) ? YAML.stringify(st) : JSON.stringify(st, null, 2) + '\n';
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
