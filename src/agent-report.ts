// The agent's report: what it last made of its source, per namespace, for
// `podwarp status` (a separate process). A small JSON file in the run
// directory ($PODWARP_RUN_DIR, default /run/podwarp), replaced atomically.
import type { KubeProxyView } from './sources/kube-proxy-config.js';
import fs from 'node:fs';
import path from 'node:path';
import type { Part } from '../loader/parts.js';
import type { MapSizing } from '../loader/mapsize.js';
import type { PodsResult } from './reconciler.js';
import { EP_FLAGS } from '../abi/schema.js';
import { podKey, type Snapshot } from './model.js';

export interface NamespaceCounts {
  accelerate: boolean;
  /** Endpoints in pw_endpoints with the enabled flag. */
  enabled: number;
  /** Endpoints present but not enabled (namespace off, opted out, selected by a NetworkPolicy). */
  disabled: number;
  /** Local pods that are no endpoint at all (hostNetwork, no IP, facts not found yet…). */
  skipped: number;
}

export interface AgentReport {
  source: string;
  node?: string;
  pid: number;
  updated: string;
  namespaces: Record<string, NamespaceCounts>;
  services: {
    frontends: number;
    dropped: number;
    /** Frontends written without a backend, left to kube-proxy or the load balancer (the first LEFT_LIST_MAX, by name). */
    left?: { frontend: string; name: string; reason: string; kind?: string }[];
    /** How many frontends are left to kube-proxy, by reason (all of them). */
    leftCounts?: Record<string, number>;
    /** Frontends written, by kind: cluster (ClusterIP), external_ip (spec.externalIPs), lb_ingress (status.loadBalancer.ingress). */
    kinds?: Record<string, number>;
    /** The first NAMED_LIST_MAX frontends with their Service and kind, every external/LoadBalancer one first (`podwarp dump services`). */
    named?: { frontend: string; name: string; kind: string }[];
  };
  /** Local pods not (fully) accelerated, and why (DisableReason, SkipReason or PartialReason of src/pods/desired.ts). */
  notAccelerated?: Record<string, { ip?: string; reason: string }>;
  /** Policy APIs podwarp cannot read right now (every pod is on the normal path while any is listed). */
  policyGaps?: string[];
  /** The optional datapath parts of the agent's load, with the kernel's reason for each refused one (loader/parts.ts). */
  parts?: Part[];
  /** The conntrack-sized maps (pw_revnat, pw_udp_flow): their size and where it came from (loader/mapsize.ts). */
  mapSizing?: MapSizing[];
  /** This node's kube-proxy as the agent follows it (src/sources/kube-proxy-config.ts). */
  kubeProxy?: KubeProxyView;
}

/** Each local pod that is not accelerated (or only partly: PartialReason), with its IP and reason. */
export function notAccelerated(pods: Pick<PodsResult, 'desired'>, snap: Snapshot): Record<string, { ip?: string; reason: string }> {
  const ips = new Map(snap.pods.map((p) => [podKey(p), p.ip]));
  const out: Record<string, { ip?: string; reason: string }> = {};
  for (const m of [pods.desired.skipped, pods.desired.disabled, pods.desired.partial])
    for (const [k, reason] of m) out[k] = { ...(ips.get(k) ? { ip: ips.get(k) } : {}), reason };
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

export const runDir = (): string => process.env.PODWARP_RUN_DIR ?? '/run/podwarp';
export const agentReportPath = (): string => path.join(runDir(), 'agent.json');

export function namespaceCounts(
  pods: Pick<PodsResult, 'desired'>,
  namespaces: { name: string; accelerate: boolean }[],
): Record<string, NamespaceCounts> {
  const out: Record<string, NamespaceCounts> = {};
  const row = (ns: string) => (out[ns] ??= { accelerate: false, enabled: 0, disabled: 0, skipped: 0 });
  for (const n of namespaces) row(n.name).accelerate = n.accelerate;
  for (const e of pods.desired.endpoints.values()) row(e.pod.split('/')[0]!)[e.flags & EP_FLAGS.ENABLED ? 'enabled' : 'disabled']++;
  for (const k of pods.desired.skipped.keys()) row(k.split('/')[0]!).skipped++;
  return out;
}

export function writeAgentReport(r: AgentReport): void {
  const file = agentReportPath();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(r, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

/** The report, if an agent wrote one and is still running. */
export function readAgentReport(): (AgentReport & { running: boolean }) | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(agentReportPath(), 'utf8')) as AgentReport;
    let running = false;
    try {
      process.kill(r.pid, 0);
      running = true;
    } catch {
      running = false;
    }
    return { ...r, running };
  } catch {
    return undefined;
  }
}
