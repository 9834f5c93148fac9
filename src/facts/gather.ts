// Node facts: what the node itself says about each local pod (host veth,
// gateway MAC, pod MAC, pod cgroup). I/O lives here, at the front of the
// pipeline; desired.ts only reads the result.
//
// Two kinds of pod: those that name their host interface (the local state
// file) and those that carry only a UID (the Kubernetes source). For the
// latter the node is asked: the pod cgroup by UID (one walk of the cgroup2
// tree per call), a pid in it, the pod's netns through that pid (nsenter),
// the interface holding the pod IP there and its veth peer on the host; else
// the on-link /32 route to the pod IP and a neighbour entry. Anything not
// found is `missing`, with why: the caller retries, nothing is guessed.
import * as ipr from '../../host/ip.js';
import { cgroup2Root } from '../../host/mounts.js';
import { errorMessage } from '../../host/errors.js';
import { normalizeUid, pidInCgroup, podPids, scanPodCgroups, type PodCgroupScan } from './cgroups.js';
import { hostLinks, hostRouteDev, hostRoutes, netnsOf, probePodNet, type DetailedLink, type PodNet, type RouteEntry } from './podnet.js';
import { podKey, type Pod, type Snapshot } from '../model.js';

export interface PodFacts {
  /** ifindex of the host end of the pod's veth. */
  ifindex: number;
  /** Name of that interface (the pod's `hostInterface`, or found by the node). */
  hostInterface: string;
  /** MAC of the pod's eth0. */
  mac: string;
  /** MAC the pod uses as its gateway: the host veth, or the bridge it is enslaved to. */
  gwMac: string;
  /** Pod-level cgroup below the cgroup2 mount (the pod's own `cgroup`, or found by UID). */
  cgroup?: string;
}

export interface NodeFacts {
  pods: Map<string, PodFacts>;
  /** Pods whose facts could not be found yet, with why (retried, never guessed). */
  missing: Map<string, string>;
}

interface CachedNet extends PodNet {
  ip: string;
  cgroup: string;
  hostInterface: string;
}

/**
 * What nsenter found per pod UID, reused while it still holds: same IP, same
 * pod cgroup, and the host veth of that ifindex still exists, with that name,
 * and still points at the pod's interface. Pods gone from a snapshot are
 * forgotten. Saves one nsenter per pod and pass.
 */
export class FactsCache {
  readonly byUid = new Map<string, CachedNet>();
}
const defaultCache = new FactsCache();

export interface GatherOptions {
  /** cgroup2 mount to look for pod cgroups in (default: from /proc/mounts). */
  cgroupMount?: string;
  cache?: FactsCache;
}

const isVeth = (l: DetailedLink | undefined): boolean => l?.linkinfo?.info_kind === 'veth';

/** The node's state, read lazily and at most once per gatherFacts call. */
class NodeView {
  private scan?: PodCgroupScan | Error;
  private routes?: Promise<RouteEntry[]>;
  readonly byName: Map<string, DetailedLink>;
  readonly byIndex: Map<number, DetailedLink>;
  constructor(
    readonly links: DetailedLink[],
    private readonly mountOpt: string | undefined,
  ) {
    this.byName = new Map(links.map((l) => [l.ifname, l]));
    this.byIndex = new Map(links.map((l) => [l.ifindex, l]));
  }
  private mountPath?: string;
  get mount(): string {
    return (this.mountPath ??= this.mountOpt ?? cgroup2Root());
  }
  cgroups(): PodCgroupScan | Error {
    if (!this.scan) {
      try {
        this.scan = scanPodCgroups(this.mount);
      } catch (e) {
        this.scan = new Error(`pod cgroups not readable: ${errorMessage(e)}`);
      }
    }
    return this.scan;
  }
  hostRoutes(): Promise<RouteEntry[]> {
    return (this.routes ??= hostRoutes());
  }
  gwMac(host: DetailedLink): string | undefined {
    return (host.master ? this.byName.get(host.master)?.address : host.address)?.toLowerCase();
  }
}

export async function gatherFacts(snap: Snapshot, opts: GatherOptions = {}): Promise<NodeFacts> {
  const out: NodeFacts = { pods: new Map(), missing: new Map() };
  const cache = opts.cache ?? defaultCache;
  const node = new NodeView(await hostLinks(), opts.cgroupMount);
  const seenUids = new Set<string>();
  for (const p of snap.pods) {
    if (p.hostNetwork || !p.ip) continue; // never endpoints; desired.ts says why
    const k = podKey(p);
    if (p.hostInterface) {
      const r = await byHostInterface(p, p.ip, p.hostInterface, node);
      if ('why' in r) out.missing.set(k, r.why);
      else out.pods.set(k, r.ok);
    } else if (p.uid) {
      const uid = normalizeUid(p.uid);
      if (!uid) {
        out.missing.set(k, `pod uid "${p.uid}" is not a UID`);
        continue;
      }
      seenUids.add(uid);
      const r = await byUid(p, p.ip, uid, node, cache);
      if ('why' in r) out.missing.set(k, r.why);
      else out.pods.set(k, r.ok);
    }
    // neither: nothing to find the pod by (desired.ts: no-interface)
  }
  for (const uid of cache.byUid.keys()) if (!seenUids.has(uid)) cache.byUid.delete(uid);
  return out;
}

type Found = { ok: PodFacts } | { why: string };

/** Today's path: the pod names its host interface (and maybe its netns). */
async function byHostInterface(p: Pod, ip: string, hostInterface: string, node: NodeView): Promise<Found> {
  const host = node.byName.get(hostInterface);
  if (!host) return { why: `host interface ${hostInterface} not found` };
  const gw = node.gwMac(host);
  if (!gw) return { why: `no MAC for gateway of ${hostInterface}` };
  let mac = p.mac;
  if (!mac && p.netns) {
    try {
      mac = (await ipr.link(p.podInterface, p.netns))?.address;
    } catch {
      mac = undefined;
    }
  }
  if (!mac) mac = await neighbourMac(hostInterface, ip);
  if (!mac) return { why: `MAC of ${ip} unknown (no netns, no neighbour entry on ${hostInterface})` };
  return { ok: { ifindex: host.ifindex, hostInterface, mac: mac.toLowerCase(), gwMac: gw, cgroup: p.cgroup } };
}

async function neighbourMac(dev: string, ip: string): Promise<string | undefined> {
  const n = (await ipr.neighbors(dev)).find(
    (x) => x.dst === ip && x.lladdr && !(x.state ?? []).some((s) => s === 'FAILED' || s === 'INCOMPLETE'),
  );
  return n?.lladdr;
}

/** A pod known by UID only: the node says where it is. */
async function byUid(p: Pod, ip: string, uid: string, node: NodeView, cache: FactsCache): Promise<Found> {
  const scan = node.cgroups();
  let cgroup: string | undefined;
  let cgWhy: string;
  if (scan instanceof Error) cgWhy = scan.message;
  else {
    cgroup = scan.pods.get(uid);
    const dup = scan.duplicates.get(uid);
    cgWhy = dup
      ? `pod cgroup ambiguous: uid ${uid} at ${dup.join(', ')}`
      : `no pod cgroup for uid ${uid} below ${node.mount}${scan.truncated ? ' (cgroup walk truncated)' : ''}`;
  }

  // 1. through a process of the pod (its netns), checked against the host veth
  if (cgroup) {
    const cached = cache.byUid.get(uid);
    if (cached && cached.ip === ip && cached.cgroup === cgroup) {
      const h = node.byIndex.get(cached.hostIfindex);
      if (h && h.ifname === cached.hostInterface && isVeth(h) && h.link_index === cached.podIfindex) {
        const gw = node.gwMac(h);
        if (gw) return { ok: { ifindex: h.ifindex, hostInterface: h.ifname, mac: cached.mac, gwMac: gw, cgroup } };
      }
    }
    cache.byUid.delete(uid);
    const r = await viaPids(ip, cgroup, node);
    if ('ok' in r) {
      const h = node.byIndex.get(r.ok.hostIfindex)!; // probePodNet checked it is in the host list
      const gw = node.gwMac(h);
      if (!gw) return { why: `no MAC for gateway of ${h.ifname} (pod ${uid})` };
      cache.byUid.set(uid, { ...r.ok, ip, cgroup, hostInterface: h.ifname });
      return { ok: { ifindex: h.ifindex, hostInterface: h.ifname, mac: r.ok.mac, gwMac: gw, cgroup } };
    }
    cgWhy = r.why;
  }

  // 2. the on-link /32 route to the pod (ptp/kindnet wiring) and a neighbour entry
  let routes: RouteEntry[];
  try {
    routes = await node.hostRoutes();
  } catch (e) {
    return { why: `${cgWhy}; host routes unreadable: ${errorMessage(e)}` };
  }
  const dev = await hostRouteDev(ip, routes);
  if (!dev) return { why: `${cgWhy}; no single on-link /32 route to ${ip}` };
  const h = node.byName.get(dev);
  if (!h) return { why: `${cgWhy}; route to ${ip} is on ${dev}, which is not in the host link list` };
  if (!isVeth(h))
    return { why: `${cgWhy}; route to ${ip} is on ${dev}, which is a ${h.linkinfo?.info_kind ?? 'physical'} device, not a veth` };
  const gw = node.gwMac(h);
  if (!gw) return { why: `${cgWhy}; no MAC for gateway of ${dev}` };
  const mac = p.mac ?? (await neighbourMac(dev, ip));
  if (!mac) return { why: `${cgWhy}; route to ${ip} on ${dev} but no neighbour entry for it` };
  return { ok: { ifindex: h.ifindex, hostInterface: dev, mac: mac.toLowerCase(), gwMac: gw, cgroup } };
}

/** podNetByPid through the pids of the pod cgroup: one nsenter per distinct netns, pid reuse checked. */
async function viaPids(ip: string, cgroup: string, node: NodeView): Promise<{ ok: PodNet } | { why: string }> {
  const pids = podPids(node.mount, cgroup);
  if (pids.length === 0) return { why: `no process in pod cgroup ${cgroup}` };
  const tried = new Set<string>();
  const whys: string[] = [];
  for (const pid of pids) {
    const ns = netnsOf(pid);
    if (!ns || tried.has(ns)) continue;
    tried.add(ns);
    const r = await probePodNet(pid, ip, node.links);
    if ('ok' in r) {
      // the pid could have exited and been reused between the cgroup read and nsenter
      if (netnsOf(pid) === ns && pidInCgroup(node.mount, cgroup, pid)) return r;
      whys.push(`pid ${pid} left pod cgroup ${cgroup} during the look-up`);
    } else whys.push(r.why);
  }
  if (whys.length === 0) return { why: `processes of pod cgroup ${cgroup} exited during the look-up` };
  return { why: `pod cgroup ${cgroup}: ${whys.join('; ')}` };
}
