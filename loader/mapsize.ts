// The sizes of the maps whose loss an application notices, from the node's
// limits. pw_revnat (reverse translation: getpeername(), UDP replies) and
// pw_udp_flow (an unconnected UDP flow's backend) stand in for conntrack
// entries of kube-proxy's path, so they hold as many as the node's conntrack
// table (net.netfilter.nf_conntrack_max): where kube-proxy would keep a flow,
// podwarp keeps its translation. The size is applied when the map is created
// (pinned); a pinned map keeps its size across agent restarts.
import fs from 'node:fs';

/** The maps sized from nf_conntrack_max unless PODWARP_MAP_SIZES names them. */
export const CONNTRACK_SIZED = ['pw_revnat', 'pw_udp_flow'] as const;

/** The floor: the schema's default, and the size when nf_conntrack is not loaded. */
export const CONNTRACK_SIZED_FLOOR = 65_536;

/**
 * The ceiling: 2^20 entries, kube-proxy's conntrack sizing for 32 CPUs
 * (maxPerCore 32768). LRU maps are preallocated: an entry costs 88 bytes of
 * pw_revnat and 104 of pw_udp_flow (`bpftool map show` memlock /
 * max_entries), 192 MiB for the two at the ceiling, 48 MiB at 262,144.
 */
export const CONNTRACK_SIZED_CEILING = 1 << 20;

export const CONNTRACK_MAX_PATH = '/proc/sys/net/netfilter/nf_conntrack_max';

export type SizeSource = 'explicit' | 'nf_conntrack_max' | 'default';

export interface MapSizing {
  map: string;
  /** The size a new pin of the map gets. */
  entries: number;
  source: SizeSource;
  /** Why, in words: the sysctl's value and any clamp, or why there is none. */
  detail: string;
  /** The pinned map's size when it differs (an earlier load chose it): kept. */
  pinned?: number;
}

/**
 * nf_conntrack_max's text (undefined: the file is absent, nf_conntrack not
 * loaded) → the size of a conntrack-sized map. Pure.
 */
export function sizeFromConntrackMax(text: string | undefined): { entries: number; source: SizeSource; detail: string } {
  const floor = { entries: CONNTRACK_SIZED_FLOOR, source: 'default' as const };
  if (text === undefined) return { ...floor, detail: 'nf_conntrack not loaded (no net.netfilter.nf_conntrack_max): the default' };
  const t = text.trim();
  if (!/^\d+$/.test(t)) return { ...floor, detail: `net.netfilter.nf_conntrack_max reads "${t.slice(0, 40)}": the default` };
  const n = Number(t);
  if (n < CONNTRACK_SIZED_FLOOR)
    return {
      entries: CONNTRACK_SIZED_FLOOR,
      source: 'nf_conntrack_max',
      detail: `nf_conntrack_max ${n}, raised to the floor ${CONNTRACK_SIZED_FLOOR}`,
    };
  if (n > CONNTRACK_SIZED_CEILING)
    return {
      entries: CONNTRACK_SIZED_CEILING,
      source: 'nf_conntrack_max',
      detail: `nf_conntrack_max ${n}, held to the ceiling ${CONNTRACK_SIZED_CEILING}`,
    };
  return { entries: n, source: 'nf_conntrack_max', detail: `nf_conntrack_max ${n}` };
}

/** The conntrack-sized maps' sizes: an explicit size (PODWARP_MAP_SIZES) wins, else the sysctl's. Pure. */
export function conntrackSizing(explicit: Record<string, number>, conntrackMax: string | undefined): MapSizing[] {
  const derived = sizeFromConntrackMax(conntrackMax);
  return CONNTRACK_SIZED.map((map) =>
    explicit[map] !== undefined
      ? { map, entries: explicit[map], source: 'explicit', detail: `PODWARP_MAP_SIZES ${map}=${explicit[map]}` }
      : { map, ...derived },
  );
}

/** A sizing as the pin has it: the pinned size noted where it differs (kept: a size applies at creation). */
export function asPinned(s: MapSizing, pinnedEntries: number | undefined): MapSizing {
  return pinnedEntries === undefined || pinnedEntries === s.entries ? s : { ...s, pinned: pinnedEntries };
}

/** The sysctl's text, undefined when the file is absent (nf_conntrack not loaded). */
export function readConntrackMax(file = CONNTRACK_MAX_PATH): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** One line for status and logs: "pw_revnat 262144 (nf_conntrack_max 262144)". */
export function describeSizing(s: MapSizing): string {
  const kept = s.pinned !== undefined ? `; pinned with ${s.pinned}, kept until \`podwarp uninstall\`` : '';
  return `${s.map} ${s.pinned ?? s.entries} entries (${s.detail}${kept})`;
}
