// The one source of truth for every BPF map podwarp owns.
//
// Each map below names its key and value structs field by field, with explicit
// padding. `cgen.ts` turns this file into build/include/pw_maps.h (structs,
// _Static_asserts, enums and the SEC(".maps") definitions the C programs use);
// `codec.ts` encodes and decodes the same structs for the reconciler and the
// CLI; test/integration/btf.test.ts checks the compiled objects' BTF against it.

export type Scalar = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32';

/** How the CLI renders a field. */
export type Format = 'dec' | 'hex' | 'ipv4' | 'mac' | 'string' | 'flags' | 'reason';

export interface Field {
  name: string;
  type: Scalar;
  /** Array length; absent for a scalar. */
  count?: number;
  format?: Format;
  /** For format 'flags': bit name by bit value. */
  flags?: Record<number, string>;
  doc: string;
}

export interface StructDef {
  name: string;
  doc: string;
  fields: Field[];
}

export type MapType = 'hash' | 'lru_hash' | 'array' | 'percpu_array';

export interface MapDef {
  /** ≤ 15 characters, `pw_` prefix. */
  name: string;
  type: MapType;
  key: StructDef;
  value: StructDef;
  /** Default size; overridable with config `mapSizes`. */
  maxEntries: number;
  writer: string;
  reader: string;
  doc: string;
}

export const SCALAR_SIZE: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4 };

// ---- enums shared by C and TypeScript ----

/** Endpoint flags (pw_endpoint.flags). */
export const EP_FLAGS = {
  /** Pod is in an enabled namespace and not excluded: it may be a bypass endpoint. */
  ENABLED: 1 << 0,
} as const;

/** Interface ledger flags (pw_iface.flags). */
export const IFACE_FLAGS = {
  /** podwarp created the clsact qdisc on this device and may delete it. */
  QDISC_OWNED: 1 << 0,
  /** Attached through a tcx link instead of a cls_bpf filter. */
  TCX: 1 << 1,
} as const;

/**
 * Reasons counted by the tc program, index into pw_stats. Order is ABI:
 * append only.
 */
export const TC_REASONS = [
  'redirected', // handed to bpf_redirect_peer
  'not_ipv4', // not an IPv4 frame (ARP, IPv6, …): normal path
  'malformed', // truncated Ethernet/IPv4 header: normal path
  'not_local', // destination is not a local endpoint: normal path
  'src_unknown', // source IP not an endpoint behind this interface (spoof or unknown)
  'src_disabled', // source pod not enabled (namespace off, excluded)
  'dst_disabled', // destination pod not enabled
  'ttl_expired', // TTL ≤ 1: let the stack send ICMP time exceeded
  'hairpin', // destination behind the same interface as the source
] as const;
export type TcReason = (typeof TC_REASONS)[number];

// ---- structs ----

const endpointKey: StructDef = {
  name: 'pw_ep_key',
  doc: 'Key of pw_endpoints: a pod IPv4 address.',
  fields: [{ name: 'ip', type: 'be32', format: 'ipv4', doc: 'pod IPv4 address, network byte order' }],
};

const endpoint: StructDef = {
  name: 'pw_endpoint',
  doc: 'A local pod that the tc program may redirect to.',
  fields: [
    { name: 'ifindex', type: 'u32', doc: 'ifindex of the host-side veth of the pod' },
    { name: 'flags', type: 'u32', format: 'flags', flags: { [EP_FLAGS.ENABLED]: 'enabled' }, doc: 'PW_EP_* flags' },
    { name: 'mac', type: 'u8', count: 6, format: 'mac', doc: 'MAC of the pod-side interface (eth0)' },
    {
      name: 'gw_mac',
      type: 'u8',
      count: 6,
      format: 'mac',
      doc: "MAC the pod sees as its gateway's (host veth, or the bridge): source MAC of routed frames",
    },
  ],
};

const statsKey: StructDef = {
  name: 'pw_stats_key',
  doc: 'Key of pw_stats: a PW_TC_* reason.',
  fields: [{ name: 'reason', type: 'u32', format: 'reason', doc: 'index into TC_REASONS' }],
};

const counter: StructDef = {
  name: 'pw_counter',
  doc: 'Packet and byte counter (per CPU).',
  fields: [
    { name: 'packets', type: 'u64', doc: 'packets counted' },
    { name: 'bytes', type: 'u64', doc: 'bytes counted (skb->len)' },
  ],
};

const ifaceKey: StructDef = {
  name: 'pw_iface_key',
  doc: 'Key of pw_ifaces: an interface index.',
  fields: [{ name: 'ifindex', type: 'u32', doc: 'interface index' }],
};

const iface: StructDef = {
  name: 'pw_iface',
  doc: 'Ledger entry: an interface podwarp attached to.',
  fields: [
    {
      name: 'flags',
      type: 'u32',
      format: 'flags',
      flags: { [IFACE_FLAGS.QDISC_OWNED]: 'qdisc_owned', [IFACE_FLAGS.TCX]: 'tcx' },
      doc: 'PW_IFACE_* flags',
    },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
    { name: 'name', type: 'u8', count: 16, format: 'string', doc: 'interface name when attached (detects ifindex reuse)' },
  ],
};

// ---- maps ----

export const MAPS: MapDef[] = [
  {
    name: 'pw_endpoints',
    type: 'hash',
    key: endpointKey,
    value: endpoint,
    maxEntries: 65536,
    writer: 'reconciler (src/reconciler.ts) via loader batch updates',
    reader: 'bpf/pw_tc_egress.c; CLI `podwarp dump endpoints`',
    doc: 'Local pod endpoints by IPv4 address. One entry per local pod with a known IP and host veth.',
  },
  {
    name: 'pw_stats',
    type: 'percpu_array',
    key: statsKey,
    value: counter,
    maxEntries: 64,
    writer: 'bpf/pw_tc_egress.c (one slot per PW_TC_* reason)',
    reader: 'CLI `podwarp dump stats`, demo, tests',
    doc: 'Per-CPU packet/byte counters of the tc program, by reason.',
  },
  {
    name: 'pw_ifaces',
    type: 'hash',
    key: ifaceKey,
    value: iface,
    maxEntries: 16384,
    writer: 'loader (loader/datapath.ts) when it attaches or detaches',
    reader: 'loader (detach, uninstall), CLI `podwarp status`',
    doc: 'Ledger of interfaces podwarp attached to, and whether it created their qdisc.',
  },
];

export function mapDef(name: string): MapDef {
  const m = MAPS.find((x) => x.name === name);
  if (!m) throw new Error(`unknown map ${name}`);
  return m;
}

export interface FieldLayout extends Field {
  offset: number;
  size: number;
}

/**
 * Offsets by C's natural alignment. Throws if the compiler would insert
 * padding: every struct must spell its padding out.
 */
export function layoutOf(s: StructDef): { size: number; fields: FieldLayout[] } {
  let off = 0;
  let maxAlign = 1;
  const fields: FieldLayout[] = [];
  for (const f of s.fields) {
    const align = SCALAR_SIZE[f.type];
    maxAlign = Math.max(maxAlign, align);
    if (off % align !== 0) throw new Error(`${s.name}.${f.name}: implicit padding before field at offset ${off}`);
    const size = align * (f.count ?? 1);
    fields.push({ ...f, offset: off, size });
    off += size;
  }
  if (off % maxAlign !== 0) throw new Error(`${s.name}: implicit tail padding (size ${off}, align ${maxAlign})`);
  return { size: off, fields };
}
