// Where a pod's network is, seen from the node: the pod's interface (by its
// IP, inside the pod's netns, entered through a pid of the pod), its MAC, and
// the host end of its veth. The `ip`/`nsenter` calls are host/ip.ts's.
import fs from 'node:fs';
import * as ipr from '../../host/ip.js';
import { errorMessage } from '../../host/errors.js';

export type DetailedLink = ipr.Link;
export type RouteEntry = ipr.Route;

/** The host netns' links with their kind and veth peer (one `ip -j -d link show`). */
export const hostLinks = (): Promise<DetailedLink[]> => ipr.detailedLinks();

export interface PodNet {
  /** ifindex of the host end of the pod's veth, in the host netns. */
  hostIfindex: number;
  /** Name of the pod's interface that holds the IP (eth0). */
  podInterface: string;
  /** MAC of that interface, lowercase. */
  mac: string;
  /** ifindex of that interface in the pod's netns (the host veth's peer index). */
  podIfindex: number;
}

export type Probe<T> = { ok: T } | { why: string };

/** The netns inode of a process ("net:[4026531840]"), undefined if it is gone. */
export function netnsOf(pid: number | 'self'): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Like podNetByPid, but says why when it finds nothing. */
export async function probePodNet(pid: number, ip: string, host?: DetailedLink[]): Promise<Probe<PodNet>> {
  if (!Number.isInteger(pid) || pid <= 0) return { why: `bad pid ${pid}` };
  const ns = netnsOf(pid);
  if (!ns) return { why: `pid ${pid} is gone` };
  if (ns === netnsOf('self')) return { why: `pid ${pid} is in the host network namespace` };
  let links: DetailedLink[];
  try {
    links = await ipr.linksOfPid(pid);
  } catch (e) {
    return { why: `nsenter into pid ${pid} failed: ${errorMessage(e).split('\n')[0] ?? ''}`.trim() };
  }
  const held = links.filter((l) => (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip));
  if (held.length === 0) return { why: `no interface holds ${ip} in the netns of pid ${pid}` };
  if (held.length > 1) return { why: `${held.length} interfaces hold ${ip} in the netns of pid ${pid}` };
  const l = held[0]!;
  if (l.linkinfo?.info_kind !== 'veth')
    return { why: `${l.ifname} (holds ${ip}) is a ${l.linkinfo?.info_kind ?? 'non-veth'} device, not a veth` };
  if (!l.address) return { why: `${l.ifname} (holds ${ip}) has no MAC` };
  if (l.link_index === undefined || l.link_netnsid === undefined)
    return { why: `veth peer of ${l.ifname} (holds ${ip}) is not in another netns` };
  const hl = host ?? (await hostLinks());
  const peer = hl.find((x) => x.ifindex === l.link_index);
  if (!peer) return { why: `veth peer of ${l.ifname} (ifindex ${l.link_index}) is not in the host netns` };
  // the host link with that ifindex must be the other end: a veth pointing back at the pod's interface
  if (peer.linkinfo?.info_kind !== 'veth' || peer.link_index !== l.ifindex || peer.link_netnsid === undefined) {
    return { why: `host ifindex ${l.link_index} (${peer.ifname}) is not the veth peer of ${l.ifname} (holds ${ip})` };
  }
  return { ok: { hostIfindex: peer.ifindex, podInterface: l.ifname, mac: l.address.toLowerCase(), podIfindex: l.ifindex } };
}

/**
 * Enters the network namespace of `pid` and finds the interface holding `ip`,
 * its MAC, and the ifindex of its veth peer in the host netns (checked: a
 * veth there whose peer is that interface). `host`: the host links, if the
 * caller has them already (else one `ip -j -d link show`).
 */
export async function podNetByPid(pid: number, ip: string, host?: DetailedLink[]): Promise<PodNet | undefined> {
  const r = await probePodNet(pid, ip, host);
  return 'ok' in r ? r.ok : undefined;
}

/** The devices of on-link /32 routes to `ip` (no gateway) in `routes`. */
function routeDevs(ip: string, routes: RouteEntry[]): string[] {
  return [...new Set(routes.filter((x) => (x.dst === ip || x.dst === `${ip}/32`) && x.dev && !x.gateway).map((x) => x.dev!))];
}

/** Main-table IPv4 routes of the host (one `ip -j -4 route show`), for many hostRouteDev look-ups. */
export const hostRoutes = (): Promise<RouteEntry[]> => ipr.routes(undefined, { table: 'main' });

/**
 * The host device of the on-link /32 route to `ip` (ptp/kindnet wiring:
 * `<ip> dev vethX scope link`), undefined if there is none or more than one.
 * `routes`: the host's routes if the caller has them (else `ip -j route show <ip>/32`).
 */
export async function hostRouteDev(ip: string, routes?: RouteEntry[]): Promise<string | undefined> {
  const rs = routes ?? (await ipr.routes(undefined, { table: 'main', to: `${ip}/32` }));
  const devs = routeDevs(ip, rs);
  return devs.length === 1 ? devs[0] : undefined;
}
