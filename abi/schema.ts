// The one source of truth for every BPF map podwarp owns.
//
// Each map below names its key and value structs field by field, with explicit
// padding. `cgen.ts` turns this file into build/include/pw_types.h (flags,
// enums, structs with _Static_asserts) and pw_maps.h (the SEC(".maps")
// definitions the programs use); devtools/docs.ts into the map table of docs/maps.md;
// `codec.ts` encodes and decodes the same structs for the reconciler and the
// CLI; test/unit/btf.test.ts checks the compiled objects' BTF against it.

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

export type MapType = 'hash' | 'lru_hash' | 'array' | 'percpu_array' | 'sockhash' | 'sk_storage';

export interface MapDef {
  /** ≤ 15 characters, `pw_` prefix. */
  name: string;
  type: MapType;
  key: StructDef;
  value: StructDef;
  /** Default size; overridable with config `mapSizes`. 0 for sk_storage (one value per socket, no size). */
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
} as const;

/**
 * Reasons counted by each program in pw_stats. A program's reasons sit at
 * `base + position`; order is ABI: append only, within a group's 16 slots.
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
  'untracked', // TCP packet of a connection the program did not see start (older, or NATed by kube-proxy): normal path
  'udp_nat_unsafe', // no longer counted (before pw_udp_ct: UDP while the socket LB was off or incomplete); the slot stays (ABI)
  'udp_not_tracked', // UDP of a flow not (yet) answered directly between the two pods (pw_udp_ct), or a fragment: normal path
  'not_tcp_udp', // neither TCP nor UDP (ICMP, SCTP, …): may belong to a NATed flow, normal path
] as const;
export type TcReason = (typeof TC_REASONS)[number];

export const SOCKOPS_REASONS = [
  'added_pod', // established pod↔pod socket put into pw_sock
  'added_proxy', // established app↔proxy loopback socket put into pw_sock
  'not_local', // peer is not an enabled local endpoint nor our proxy: left alone
  'exists', // a socket with the same key is already in pw_sock: not accelerated
  'add_failed', // bpf_sock_hash_update failed otherwise (map full, …)
  'odst_saved', // original destination of a proxied connect keyed by 4-tuple
  'closed', // flow state removed at TCP_CLOSE
  'revnat_watch', // a connection pw_lb translated to a backend: watched to its close
  'revnat_closed', // its pw_revnat entry deleted at TCP_CLOSE
  'revnat_evicted', // a watched connection's pw_revnat entry was gone at TCP_CLOSE: the LRU evicted it while the connection lived (getpeername() showed the backend)
] as const;

export const MSG_REASONS = [
  'redirected', // message moved straight into the peer socket
  'no_peer', // the first message found no peer in pw_sock: flow stays on TCP
  'passthrough', // flow is on the normal TCP path (no peer at start, bulk, or disabled)
  'to_tcp_bulk', // flow switched to TCP for good after a bulk-sized message
  'to_tcp_off', // flow switched to TCP for good: socket acceleration switched off
  'to_tcp_queue', // redirected, and the flow then switched to TCP for good: the peer held QUEUE_MAX_BYTES unread (TCP's window paces the writer)
] as const;

export const PROXY_REASONS = [
  'redirected', // connect() sent to the pod's proxy, original destination saved
  'proxy_uid', // the proxy's own connect(): left alone (no loop)
  'loopback', // destination on loopback: left alone
  'excluded_port', // destination port excluded
  'not_tcp', // UDP and others: left alone
  'odst_full', // original destination could not be saved: left alone
  'proxy_gid', // a connect() by the proxy gid (Istio excludes --gid-owner 1337 too): left alone
  'own_pod_ip', // destination is the connecting pod's own IP (Istio: `-o lo ! --uid-owner 1337 -j RETURN`): left alone
  'dns_port', // TCP to port 53: left to the pod's iptables (Istio's DNS capture sends it to 15053, not to 15001)
  'redirected_v6', // pw_proxy_conn6: a dual-stack socket's connect() to ::ffff:a.b.c.d sent to the proxy
  'not_ipv4', // pw_proxy_conn6: a pure IPv6 destination (podwarp is IPv4-only): left alone
  'peer_odst', // pw_proxy_peer4/6: getpeername() of a captured socket answered with its original destination
] as const;

export const ODST_REASONS = [
  'answered', // SO_ORIGINAL_DST answered from pw_odst_tuple
  'not_found', // no saved original destination for this socket
] as const;

export const LB_REASONS = [
  'translated', // connect()/sendmsg() to a service sent to a backend
  'no_backend', // service known but no ready backend: normal path
  'not_service', // destination is not a service: untouched
  'slot_missing', // a slot or backend was not there (must stay 0: update ordering)
  'rev_nat', // recvmsg/getpeername answered with the service address
  'rev_nat_full', // the UDP reverse translation could not be saved
  'affinity_hit', // ClientIP affinity: sent to the backend this client used within the timeout
  'affinity_expired', // ClientIP affinity: the client's entry was older than the timeout: chosen anew
  'affinity_gone', // ClientIP affinity: the remembered backend is no longer one of the service's: chosen anew
  'udp_connected_left', // connect() of a UDP socket to a service: not translated, kube-proxy's (its conntrack cleanup moves the socket off a removed backend)
  'v4mapped', // an AF_INET6 socket's v4-mapped connect/recvmsg/getpeername translated by pw_lb_conn6/recv6/peer6 (also counted as translated or rev_nat)
  'udp_flow_hit', // unconnected UDP: the datagram went to the backend its flow (socket, frontend) remembers in pw_udp_flow (also counted as translated)
  'udp_flow_expired', // unconnected UDP: the flow's entry was idle past conntrack's UDP timeout: chosen anew
  'udp_flow_gone', // unconnected UDP: the flow's backend no longer serves the frontend (pw_udp_serve), as kube-proxy's conntrack cleanup: chosen anew
  'affinity_no_client', // ClientIP affinity: the connecting process is in no pod cgroup of pw_lb_client (no client address to key by): not translated, kube-proxy's affinity applies
] as const;

export interface StatGroup {
  prog: string;
  /** C enum prefix: PW_<PREFIX>_<REASON>. */
  prefix: string;
  base: number;
  reasons: readonly string[];
}

export const STAT_GROUPS: StatGroup[] = [
  { prog: 'pw_tc_egress', prefix: 'TC', base: 0, reasons: TC_REASONS },
  { prog: 'pw_sockops', prefix: 'SOCKOPS', base: 16, reasons: SOCKOPS_REASONS },
  { prog: 'pw_sk_msg', prefix: 'MSG', base: 32, reasons: MSG_REASONS },
  { prog: 'pw_proxy_conn4', prefix: 'PROXY', base: 48, reasons: PROXY_REASONS },
  { prog: 'pw_proxy_odst', prefix: 'ODST', base: 64, reasons: ODST_REASONS },
  { prog: 'pw_lb', prefix: 'LB', base: 80, reasons: LB_REASONS },
];

/** Flow flags (pw_flow.flags). */
export const FLOW_FLAGS = {
  /** Messages of this socket go through TCP, never redirected again. */
  PASSTHROUGH: 1 << 0,
} as const;

/**
 * Flow control of the sockmap fast path. A redirected message is queued on
 * the peer socket without any receive window: a writer faster than its
 * reader would queue without bound (until tcp_mem, then ENOMEM). bpf/trace/
 * counts what each socket reads from that queue (pw_sock_read); pw_sk_msg
 * moves a flow to TCP for good once redirected − read would pass this bound.
 */
export const FLOW_CONTROL = {
  /** Unread redirected bytes a socket may hold (16 MiB: TCP's default tcp_rmem[2] 6 MiB + tcp_wmem[2] 4 MiB, rounded up). */
  QUEUE_MAX_BYTES: 16 << 20,
} as const;

/** Cgroup hooks podwarp attaches (pw_cgroup.hooks). */
export const CGROUP_HOOKS = {
  /** pw_sockops at sock_ops */
  SOCK_OPS: 1 << 0,
  /** pw_proxy_conn4/6 at connect4/6 and pw_proxy_peer4/6 at getpeername4/6 (sidecar pods: outbound capture) */
  CONNECT4: 1 << 1,
  /** pw_proxy_odst at getsockopt (sidecar pods) */
  GETSOCKOPT: 1 << 2,
  /** pw_lb_conn4, pw_lb_send4, pw_lb_recv4, pw_lb_peer4, and pw_lb_conn6, pw_lb_recv6, pw_lb_peer6 for v4-mapped AF_INET6 sockets (service load balancing) */
  LB: 1 << 3,
} as const;

/** IP protocol numbers (C: PW_IPPROTO_TCP, PW_IPPROTO_UDP). */
export const PROTO = { TCP: 6, UDP: 17 } as const;

/** pw_ct.state */
export const CT_STATE = { SYN_SEEN: 1, ESTABLISHED: 2 } as const;

/** pw_udp_ct.state (C: PW_UDP_CT_OPENED, PW_UDP_CT_ANSWERED). */
export const UDP_CT_STATE = { OPENED: 1, ANSWERED: 2 } as const;

/**
 * Idle time after which a pw_udp_ct entry no longer counts (C:
 * PW_UDP_CT_TIMEOUT_<STATE>_NS), as conntrack's UDP timeouts: 30 s while
 * unanswered (nf_conntrack_udp_timeout), 120 s once answered
 * (nf_conntrack_udp_timeout_stream). An expired flow starts over as OPENED.
 */
export const UDP_CT_TIMEOUT_NS = { OPENED: 30_000_000_000, ANSWERED: 120_000_000_000 } as const;

/**
 * Unconnected UDP flow memory (pw_udp_flow, C: PW_UDP_FLOW_<NAME>). An entry
 * counts while idle less than conntrack's UDP timeout for its state
 * (UDP_CT_TIMEOUT_NS): 30 s while no reply was read, 120 s once a reply was
 * and the flow is older than STREAM_AFTER_NS, as nf_conntrack_proto_udp
 * extends a flow to the stream timeout only when it is "still active after
 * two seconds" (a reply within them refreshes it to 30 s).
 */
export const UDP_FLOW = { STREAM_AFTER_NS: 2_000_000_000 } as const;

/** Config (pw_config, one entry). */
export const CONFIG_FLAGS = {
  /** sk_msg redirects at all (cleared before sockets are removed: drain first). */
  SOCKMAP_ON: 1 << 0,
  /** the socket LB is on and no Service is left out of it (connected UDP is always kube-proxy's, so this never meant "no UDP is NATed"). Informational since pw_udp_ct: the tc program no longer reads it */
  TC_UDP: 1 << 1,
} as const;

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
      flags: { [IFACE_FLAGS.QDISC_OWNED]: 'qdisc_owned' },
      doc: 'PW_IFACE_* flags',
    },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
    { name: 'name', type: 'u8', count: 16, format: 'string', doc: 'interface name when attached (detects ifindex reuse)' },
  ],
};

const sockKey: StructDef = {
  name: 'pw_sock_key',
  doc: 'A TCP socket by its IPv4 4-tuple, as seen from the socket (local first).',
  fields: [
    { name: 'sip', type: 'be32', format: 'ipv4', doc: 'local IPv4 address' },
    { name: 'dip', type: 'be32', format: 'ipv4', doc: 'remote IPv4 address' },
    { name: 'sport', type: 'be16', doc: 'local port, network order' },
    { name: 'dport', type: 'be16', doc: 'remote port, network order' },
  ],
};

const sockVal: StructDef = {
  name: 'pw_sock_val',
  doc: 'Value of pw_sock as user space sees it: the socket cookie.',
  fields: [{ name: 'cookie', type: 'u64', doc: 'socket cookie' }],
};

const flow: StructDef = {
  name: 'pw_flow',
  doc: 'Per-socket state of the sockmap fast path.',
  fields: [
    { name: 'flags', type: 'u32', format: 'flags', flags: { [FLOW_FLAGS.PASSTHROUGH]: 'passthrough' }, doc: 'PW_FLOW_* flags' },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
    { name: 'bytes', type: 'u64', doc: 'bytes redirected so far' },
  ],
};

const sockRead: StructDef = {
  name: 'pw_read',
  doc: 'Bytes a socket has read from its psock ingress queue (data its peer redirected).',
  fields: [{ name: 'bytes', type: 'u64', doc: 'bytes read so far' }],
};

const cookieKey: StructDef = {
  name: 'pw_cookie_key',
  doc: 'A socket cookie.',
  fields: [{ name: 'cookie', type: 'u64', doc: 'bpf_get_socket_cookie()' }],
};

const origDst: StructDef = {
  name: 'pw_odst',
  doc: 'Original destination of a connect() sent to the proxy.',
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'original destination address' },
    { name: 'port', type: 'be16', doc: 'original destination port, network order' },
    { name: '_pad0', type: 'u16', doc: 'explicit padding, zero' },
  ],
};

const cgroupKey: StructDef = {
  name: 'pw_cgroup_key',
  doc: 'A cgroup v2 by id (the inode number of its directory).',
  fields: [{ name: 'id', type: 'u64', doc: 'cgroup id' }],
};

const cgroupRec: StructDef = {
  name: 'pw_cgroup',
  doc: 'Ledger entry: a pod cgroup podwarp attached programs to.',
  fields: [
    {
      name: 'hooks',
      type: 'u32',
      format: 'flags',
      flags: {
        [CGROUP_HOOKS.SOCK_OPS]: 'sock_ops',
        [CGROUP_HOOKS.CONNECT4]: 'connect4',
        [CGROUP_HOOKS.GETSOCKOPT]: 'getsockopt',
        [CGROUP_HOOKS.LB]: 'lb',
      },
      doc: 'PW_HOOK_* bits attached',
    },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
    { name: 'path', type: 'u8', count: 256, format: 'string', doc: 'cgroup path below the cgroup2 mount' },
  ],
};

const svcKey: StructDef = {
  name: 'pw_svc_key',
  doc: 'A service frontend and one of its slots (0: the master entry).',
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'ClusterIP' },
    { name: 'port', type: 'be16', doc: 'service port, network order' },
    { name: 'proto', type: 'u8', doc: 'IPPROTO_TCP (6) or IPPROTO_UDP (17)' },
    { name: '_pad0', type: 'u8', doc: 'explicit padding, zero' },
    { name: 'slot', type: 'u16', doc: '0: master entry; 1..count: backend slots' },
    { name: '_pad1', type: 'u16', doc: 'explicit padding, zero' },
  ],
};

const svcVal: StructDef = {
  name: 'pw_svc',
  doc: 'Master entry (slot 0): how many backends; slot entry: which backend.',
  fields: [
    {
      name: 'backend_id',
      type: 'u32',
      doc: 'slot entry: id in pw_backends; master entry: sessionAffinity ClientIP timeout in seconds (0: no affinity), as Cilium keeps it',
    },
    { name: 'count', type: 'u16', doc: 'master entry: number of ready backends (slots 1..count)' },
    { name: '_pad0', type: 'u16', doc: 'explicit padding, zero' },
  ],
};

const backendKey: StructDef = {
  name: 'pw_backend_key',
  doc: 'A backend id.',
  fields: [{ name: 'id', type: 'u32', doc: 'backend id (1..)' }],
};

const backendVal: StructDef = {
  name: 'pw_backend',
  doc: 'A backend address.',
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'endpoint IPv4 address' },
    { name: 'port', type: 'be16', doc: 'target port, network order' },
    { name: 'proto', type: 'u8', doc: 'IPPROTO_TCP or IPPROTO_UDP' },
    { name: '_pad0', type: 'u8', doc: 'explicit padding, zero' },
  ],
};

const revNatKey: StructDef = {
  name: 'pw_revnat_key',
  doc: 'A socket and the backend it was sent to.',
  fields: [
    { name: 'cookie', type: 'u64', doc: 'socket cookie' },
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'backend address' },
    { name: 'port', type: 'be16', doc: 'backend port, network order' },
    { name: '_pad0', type: 'u16', doc: 'explicit padding, zero' },
  ],
};

const revNatVal: StructDef = {
  name: 'pw_revnat',
  doc: 'The service address the socket asked for.',
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'ClusterIP' },
    { name: 'port', type: 'be16', doc: 'service port, network order' },
    { name: '_pad0', type: 'u16', doc: 'explicit padding, zero' },
  ],
};

const revNatSkKey: StructDef = {
  name: 'pw_revnat_sk_key',
  doc: 'Key of pw_revnat_sk as BTF needs it (an int); the kernel keys the value by socket.',
  fields: [{ name: 'index', type: 'u32', doc: 'unused: socket storage has no user-visible key' }],
};

const revNatSkVal: StructDef = {
  name: 'pw_revnat_sk',
  doc: 'What pw_sockops knows of a socket pw_lb translated.',
  fields: [
    {
      name: 'watched',
      type: 'u32',
      doc: '1: its pw_revnat entry was there at ACTIVE_ESTABLISHED, so a missing entry at close was evicted',
    },
  ],
};

const ctKey: StructDef = {
  name: 'pw_ct_key',
  doc: 'A flow, in the direction of its first packet seen (TCP: its SYN).',
  fields: [
    { name: 'saddr', type: 'be32', format: 'ipv4', doc: 'client address' },
    { name: 'daddr', type: 'be32', format: 'ipv4', doc: 'server address' },
    { name: 'sport', type: 'be16', doc: 'client port, network order' },
    { name: 'dport', type: 'be16', doc: 'server port, network order' },
  ],
};

const ctVal: StructDef = {
  name: 'pw_ct',
  doc: 'How far the fast path saw the connection start.',
  fields: [{ name: 'state', type: 'u32', doc: 'PW_CT_SYN_SEEN (1), PW_CT_ESTABLISHED (2: its SYN-ACK answered that SYN)' }],
};

const udpCtVal: StructDef = {
  name: 'pw_udp_ct',
  doc: 'A UDP flow the fast path saw opened directly between two enabled pods, and when it last carried a packet.',
  fields: [
    { name: 'last_ns', type: 'u64', doc: 'CLOCK_MONOTONIC (bpf_ktime_get_ns) of the last packet of either direction' },
    { name: 'state', type: 'u32', doc: 'PW_UDP_CT_OPENED (1), PW_UDP_CT_ANSWERED (2: the other pod sent back, addressed directly)' },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
  ],
};

const configKey: StructDef = {
  name: 'pw_config_key',
  doc: 'Key of pw_config: always 0.',
  fields: [{ name: 'index', type: 'u32', doc: 'always 0' }],
};

const config: StructDef = {
  name: 'pw_config',
  doc: 'Node-wide settings the agent writes for the socket programs.',
  fields: [
    { name: 'flags', type: 'u32', format: 'flags', flags: { [CONFIG_FLAGS.SOCKMAP_ON]: 'sockmap_on' }, doc: 'PW_CONFIG_* flags' },
    { name: 'proxy_uid', type: 'u32', doc: 'uid of the sidecar proxy (Istio: 1337); its connects are not captured' },
    { name: 'proxy_port', type: 'u16', doc: 'proxy outbound port (Istio: 15001), host order' },
    {
      name: 'proxy_gid',
      type: 'u16',
      doc: 'gid of the sidecar proxy (Istio: 1337), at most 65535; connects by a process of that gid are not captured. In the former padding: pw_config keeps its 36-byte layout, so a running node upgrades without uninstall',
    },
    { name: 'bulk_bytes', type: 'u32', doc: 'a message at least this large moves its flow to TCP for good (0: never)' },
    { name: 'excluded_ports', type: 'u16', count: 8, doc: 'outbound destination ports never captured (0: unused slot), host order' },
    { name: 'svc_dropped', type: 'u32', doc: 'gauge: services the agent left out because pw_svc/pw_backends would not hold them' },
  ],
};

const podCgroupVal: StructDef = {
  name: 'pw_pod_cg',
  doc: 'The pod-level cgroup of the pod that owns an IPv4 address.',
  fields: [{ name: 'id', type: 'u64', doc: 'cgroup id (inode of the pod cgroup directory): an ancestor of every process of the pod' }],
};

/**
 * Record of the drain iterator (bpf/iter/pw_sock_iter.c): one per socket in
 * pw_sock, its key and whether redirected bytes still wait in its queue.
 */
export const SOCK_DRAIN: StructDef = {
  name: 'pw_sock_drain',
  doc: 'Drain iterator record: a pw_sock key and whether its ingress queue holds unread redirected data.',
  fields: [...sockKey.fields, { name: 'pending', type: 'u32', doc: '1: the psock ingress queue is not empty' }],
};

/** Structs that are not map keys or values but cross the kernel/user boundary (iterator records). */
export const RECORDS: StructDef[] = [SOCK_DRAIN];

// ---- sessionAffinity: ClientIP (pw_affinity, pw_aff_match) ----
// The master entry of pw_svc carries the timeout (backend_id field, seconds;
// 0: none). pw_affinity remembers, per client and frontend, the backend last
// used and when; pw_aff_match says which backends are still the frontend's,
// so a remembered backend that left the service is never used again.

const affinityKey: StructDef = {
  name: 'pw_aff_key',
  doc: 'A client (the pod of the connecting process, by its IP) and a service frontend.',
  fields: [
    {
      name: 'client',
      type: 'be32',
      format: 'ipv4',
      doc: "the client pod's IPv4 address (pw_lb_client of the connecting process's pod cgroup), the address kube-proxy's `recent` lists and affinity sets key by",
    },
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'ClusterIP' },
    { name: 'port', type: 'be16', doc: 'service port, network order' },
    { name: 'proto', type: 'u8', doc: 'IPPROTO_TCP or IPPROTO_UDP' },
    { name: '_pad0', type: 'u8', doc: 'explicit padding, zero' },
  ],
};

const cgroupClientKey: StructDef = {
  name: 'pw_cgroup_key',
  doc: 'A pod cgroup.',
  fields: [{ name: 'id', type: 'u64', doc: 'cgroup id (inode of the pod cgroup directory, cgroup v2)' }],
};

const cgroupClientVal: StructDef = {
  name: 'pw_lb_client',
  doc: 'The IPv4 address of the pod that owns a cgroup.',
  fields: [{ name: 'ip', type: 'be32', format: 'ipv4', doc: 'pod IP' }],
};

const affinityVal: StructDef = {
  name: 'pw_affinity',
  doc: 'The backend a client last reached through a frontend, and when.',
  fields: [
    { name: 'backend_id', type: 'u32', doc: 'id in pw_backends' },
    { name: '_pad0', type: 'u32', doc: 'explicit padding, zero' },
    { name: 'last_ns', type: 'u64', doc: 'CLOCK_MONOTONIC (bpf_ktime_get_ns) of the last connect()/sendmsg() that used it' },
  ],
};

const affMatchKey: StructDef = {
  name: 'pw_aff_match_key',
  doc: 'A service frontend with affinity and one of its backends.',
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'ClusterIP' },
    { name: 'port', type: 'be16', doc: 'service port, network order' },
    { name: 'proto', type: 'u8', doc: 'IPPROTO_TCP or IPPROTO_UDP' },
    { name: '_pad0', type: 'u8', doc: 'explicit padding, zero' },
    { name: 'backend_id', type: 'u32', doc: 'id in pw_backends' },
  ],
};

const affMatchVal: StructDef = {
  name: 'pw_aff_match',
  doc: 'Presence only.',
  fields: [{ name: 'present', type: 'u32', doc: 'always 1' }],
};

const AFFINITY_MAPS: MapDef[] = [
  {
    name: 'pw_affinity',
    type: 'lru_hash',
    key: affinityKey,
    value: affinityVal,
    maxEntries: 65536,
    writer: 'bpf/pw_lb.h (pw_lb_conn4, pw_lb_conn6, pw_lb_send4): every translation to a frontend with affinity',
    reader: 'bpf/pw_lb.h; `podwarp dump affinity`',
    doc: 'sessionAffinity ClientIP: the backend each client (pod) last used per frontend, and when. Used again while younger than the timeout and still in pw_aff_match; refreshed on every use, as kube-proxy refreshes its `recent` entry (nftables: affinity set) at each new connection. LRU evicts the oldest.',
  },
  {
    name: 'pw_lb_client',
    type: 'hash',
    key: cgroupClientKey,
    value: cgroupClientVal,
    maxEntries: 16384,
    writer: 'agent: src/pods/apply.ts (syncCgroupClients: exactly the pods given the socket LB, written before their hooks are attached)',
    reader: "bpf/pw_lb.h (pw_lb_client: the connecting pod, walking the process's ancestor cgroups); agent read-back",
    doc: 'Pod cgroup id → pod IPv4, for the pods with the socket LB: the client address sessionAffinity ClientIP keys by, as kube-proxy does. A connect to a frontend with affinity from a process in no such cgroup is left to kube-proxy (affinity_no_client).',
  },
  {
    name: 'pw_aff_match',
    type: 'hash',
    key: affMatchKey,
    value: affMatchVal,
    maxEntries: 65536,
    writer: 'agent: src/services/sync.ts with the slots (added before the master entry, removed in the prune)',
    reader:
      "bpf/pw_lb.h (is a remembered backend still one of the frontend's); agent read-back; `podwarp dump services` (per slot), `podwarp dump affinity` (entry state)",
    doc: 'Backends of the frontends with ClientIP affinity, (frontend, backend id) → 1: a client whose remembered backend is not here chooses anew.',
  },
];

// ---- unconnected UDP flow memory (pw_udp_flow, pw_udp_serve) ----
// kube-proxy keeps an unconnected UDP flow on its backend through the flow's
// conntrack entry, and its cleanup (pkg/proxy/conntrack/cleanup.go,
// CleanStaleEntries) deletes the entry only once the backend's IP is no
// longer one of the Service port's serving endpoints. pw_udp_flow is that
// entry per (socket, frontend); pw_udp_serve is that serving set. It is a map
// of its own, not pw_aff_match: the set is every serving endpoint of the
// Service port by IP, whatever node, topology hint, traffic policy or
// terminating state (kube-proxy does not take those into account, so a
// change of them keeps the flow), while pw_aff_match holds the backend ids
// new connections may take, and a serving endpoint outside them has no id
// (it is not in pw_backends).

/** A UDP frontend, 8 bytes: the first fields of pw_udp_serve_key, the last of pw_udp_flow_key. */
const udpFrontendFields: Field[] = [
  { name: 'ip', type: 'be32', format: 'ipv4', doc: 'ClusterIP (or external / LoadBalancer IP)' },
  { name: 'port', type: 'be16', doc: 'service port, network order' },
  { name: 'proto', type: 'u8', doc: 'IPPROTO_UDP' },
  { name: '_pad0', type: 'u8', doc: 'explicit padding, zero' },
];

const udpFlowKey: StructDef = {
  name: 'pw_udp_flow_key',
  doc: 'An unconnected UDP socket and a service frontend it sends to.',
  fields: [{ name: 'cookie', type: 'u64', doc: 'socket cookie' }, ...udpFrontendFields],
};

const udpFlowVal: StructDef = {
  name: 'pw_udp_flow',
  doc: "The backend a flow's datagrams go to, and how recently the flow carried one.",
  fields: [
    { name: 'ip', type: 'be32', format: 'ipv4', doc: 'backend (endpoint) address' },
    { name: 'port', type: 'be16', doc: 'backend port, network order' },
    { name: 'state', type: 'u16', doc: 'PW_UDP_CT_OPENED (1), PW_UDP_CT_ANSWERED (2: the socket read a reply from the backend)' },
    { name: 'first_ns', type: 'u64', doc: "CLOCK_MONOTONIC (bpf_ktime_get_ns) of the flow's first datagram" },
    { name: 'last_ns', type: 'u64', doc: 'CLOCK_MONOTONIC of its last datagram sent or reply read' },
  ],
};

const udpServeKey: StructDef = {
  name: 'pw_udp_serve_key',
  doc: 'A UDP service frontend and the IP of one of its serving endpoints.',
  fields: [...udpFrontendFields, { name: 'ep_ip', type: 'be32', format: 'ipv4', doc: 'endpoint IPv4 address' }],
};

const udpServeVal: StructDef = {
  name: 'pw_udp_serve',
  doc: 'Presence only.',
  fields: [{ name: 'present', type: 'u32', doc: 'always 1' }],
};

const UDP_FLOW_MAPS: MapDef[] = [
  {
    name: 'pw_udp_flow',
    type: 'lru_hash',
    key: udpFlowKey,
    value: udpFlowVal,
    maxEntries: 65536,
    writer:
      'bpf/pw_lb.h: pw_lb_send4 (a new flow: its backend; every datagram: last_ns), pw_lb_recv4, pw_lb_recv6 (a reply read from the backend: ANSWERED, last_ns)',
    reader: 'bpf/pw_lb.h (pw_lb_send4: which backend a datagram of a known flow goes to)',
    doc: "Unconnected UDP flow memory, as kube-proxy's conntrack entry: (socket cookie, frontend) → backend address. Every datagram of the flow goes to that backend while the entry is younger than conntrack's UDP timeout (PW_UDP_CT_TIMEOUT_*: 30 s, 120 s once answered and older than 2 s, as nf_conntrack_udp_timeout and nf_conntrack_udp_timeout_stream) and the backend's IP is in pw_udp_serve; else the datagram chooses anew at random and the entry is replaced. LRU: when full, the least recently used flow is evicted and its next datagram chooses anew, like a flow whose conntrack entry expired. One entry per socket and frontend, created at the size nf_conntrack_max asks (65536 to 1048576; docs/maps.md#when-a-map-is-full).",
  },
  {
    name: 'pw_udp_serve',
    type: 'hash',
    key: udpServeKey,
    value: udpServeVal,
    maxEntries: 65536,
    writer: 'agent: src/services/sync.ts with the slots (added before the master entry, removed in the prune)',
    reader: "bpf/pw_lb.h (pw_lb_send4: is a flow's backend still serving)",
    doc: "Serving endpoints of every UDP frontend by IP, (frontend, endpoint IP) → 1: every endpoint of the Service port whose EndpointSlice condition serving is true (unset: true), on any node, whatever topology hints, traffic policy or terminating say, the set kube-proxy's conntrack cleanup (CleanStaleEntries) keeps UDP flows to. A flow in pw_udp_flow whose backend is not here chooses anew.",
  },
];

// ---- maps ----

export const MAPS: MapDef[] = [
  {
    name: 'pw_endpoints',
    type: 'hash',
    key: endpointKey,
    value: endpoint,
    maxEntries: 65536,
    writer: 'agent: src/pods/apply.ts (one bpftool batch per pass)',
    reader:
      'bpf/pw_tc_egress.c (redirect target), bpf/pw_sockops.c (both ends local and enabled); agent read-back; `podwarp dump endpoints`',
    doc: 'Local pod endpoints by IPv4 address. One entry per local pod with a known IP and host veth.',
  },
  {
    name: 'pw_stats',
    type: 'percpu_array',
    key: statsKey,
    value: counter,
    maxEntries: 128,
    writer: 'every program, one slot per PW_<PROG>_<REASON> (STAT_GROUPS)',
    reader: '`podwarp dump stats`, agent /metrics, demo, tests',
    doc: 'Per-CPU packet (or message) and byte counters of every program, by reason.',
  },
  {
    name: 'pw_ifaces',
    type: 'hash',
    key: ifaceKey,
    value: iface,
    maxEntries: 16384,
    writer: 'loader/tcattach.ts when it attaches or detaches',
    reader: 'loader/tcattach.ts (reload, detach, uninstall); `podwarp status`',
    doc: 'Ledger of interfaces podwarp attached to, and whether it created their qdisc.',
  },
  {
    name: 'pw_sock',
    type: 'sockhash',
    key: sockKey,
    value: sockVal,
    maxEntries: 65536,
    writer: "bpf/pw_sockops.c (established sockets); loader/sockdrain.ts deletes a disabled pod's sockets, drained",
    reader: 'bpf/pw_sk_msg.c (peer lookup); iter/pw_sock (bpf/iter/pw_sock_iter.c); `podwarp dump sockets`',
    doc: 'Accelerated TCP sockets by 4-tuple. sk_msg redirects a message to the socket keyed by the reversed tuple.',
  },
  {
    name: 'pw_flows',
    type: 'lru_hash',
    key: sockKey,
    value: flow,
    maxEntries: 65536,
    writer:
      'bpf/pw_sk_msg.c (decision at first message, bulk and flow-control switches), bpf/pw_sockops.c (delete at close); loader/sockdrain.ts (passthrough before a drain)',
    reader: 'bpf/pw_sk_msg.c; loader/sockdrain.ts; `podwarp dump sockets`',
    doc: 'Per-socket fast-path state: redirected, or on TCP for good.',
  },
  {
    name: 'pw_sock_read',
    type: 'lru_hash',
    key: sockKey,
    value: sockRead,
    maxEntries: 65536,
    writer:
      'bpf/trace/pw_read.h (fexit on the kernel function that copies a psock ingress queue to the reader), only for sockets a pw_flows flow redirects into; bpf/pw_sockops.c (delete at close)',
    reader:
      "bpf/pw_sk_msg.c (unread = the sender's pw_flows.bytes − this, on kernels without psock msg_tot_len); `podwarp dump sockets` (READ-BYTES)",
    doc: 'Flow control: bytes each accelerated socket has read of what its peer redirected into it.',
  },
  {
    name: 'pw_odst_cookie',
    type: 'lru_hash',
    key: cookieKey,
    value: origDst,
    maxEntries: 65536,
    writer: 'bpf/pw_proxy_conn4.c, bpf/pw_proxy_conn6.c at connect()',
    reader: 'bpf/pw_sockops.c at ACTIVE_ESTABLISHED (moves it to pw_odst_tuple)',
    doc: 'Original destination of a connect() sent to the proxy, by the app socket cookie.',
  },
  {
    name: 'pw_odst_tuple',
    type: 'lru_hash',
    key: sockKey,
    value: origDst,
    maxEntries: 65536,
    writer: 'bpf/pw_sockops.c',
    reader:
      'bpf/pw_proxy_odst.c (getsockopt SO_ORIGINAL_DST on the proxy side), bpf/pw_proxy_peer4.c and pw_proxy_peer6.c (getpeername on the app side)',
    doc: 'Original destination of a proxied connection, by the app socket 4-tuple.',
  },
  {
    name: 'pw_ct',
    type: 'lru_hash',
    key: ctKey,
    value: ctVal,
    maxEntries: 262144,
    writer: 'bpf/pw_tc_egress.c (SYN between two enabled pods; SYN-ACK that answers it; RST)',
    reader: 'bpf/pw_tc_egress.c (later packets of either direction); `podwarp dump flows`',
    doc: 'TCP connections the tc program saw start: only those are redirected, so a connection NATed by kube-proxy (its replies need the reverse NAT) or older than the attachment stays on the normal path. Entries end at RST or by LRU eviction; a SYN-ACK that answers no SYN seen here drops a stale entry.',
  },
  {
    name: 'pw_udp_ct',
    type: 'lru_hash',
    key: ctKey,
    value: udpCtVal,
    maxEntries: 65536,
    writer:
      'bpf/pw_tc_egress.c (UDP between two enabled pods: first packet → OPENED, the other pod answering directly → ANSWERED, every packet refreshes)',
    reader: 'bpf/pw_tc_egress.c; `podwarp dump flows` (state, idle time, whether it still counts)',
    doc: "UDP flows between two enabled pods, keyed in the direction of the first packet seen. A flow is redirected only once ANSWERED: the other pod sent back to the opener's address directly, so neither side reaches the other through a NATed address. Its first packets, and every packet of a flow one side opened through a Service kube-proxy DNATs (its replies look pod-to-pod), take the normal path. An entry idle past PW_UDP_CT_TIMEOUT_* (30 s opened, 120 s answered, as conntrack) no longer counts; LRU evicts the oldest.",
  },
  {
    name: 'pw_svc',
    type: 'hash',
    key: svcKey,
    value: svcVal,
    maxEntries: 262144,
    writer: 'agent: src/services/sync.ts through src/services/maps.ts, in order: backends → slots → master → prune',
    reader: 'bpf/pw_lb.h (pw_lb_conn4, pw_lb_conn6, pw_lb_send4); agent read-back through iter/pw_svc; `podwarp dump services`',
    doc: 'Service frontends: slot 0 holds the backend count (and the ClientIP affinity timeout), slots 1..count the backend ids.',
  },
  {
    name: 'pw_backends',
    type: 'hash',
    key: backendKey,
    value: backendVal,
    maxEntries: 131072,
    writer: 'agent: src/services/sync.ts (written before any slot points to them, deleted after none does)',
    reader: 'bpf/pw_lb.h; agent read-back through iter/pw_backends; `podwarp dump backends`',
    doc: 'Service backends by id.',
  },
  {
    name: 'pw_revnat',
    type: 'lru_hash',
    key: revNatKey,
    value: revNatVal,
    maxEntries: 65536,
    writer:
      "bpf/pw_lb_conn4.c, bpf/pw_lb_conn6.c (TCP connect), bpf/pw_lb_send4.c (unconnected UDP, AF_INET and v4-mapped): every translation; bpf/pw_sockops.c deletes a TCP entry when its connection closes; pw_lb_send4 deletes a UDP flow's entry for its old backend when the flow chooses anew",
    reader:
      'bpf/pw_lb_recv4.c, bpf/pw_lb_recv6.c (UDP replies), bpf/pw_lb_peer4.c, bpf/pw_lb_peer6.c (getpeername); bpf/pw_sockops.c (is this connection translated?)',
    doc: 'Reverse translation by socket cookie and backend: UDP replies and getpeername() show the ClusterIP (v4-mapped sockets: ::ffff:ClusterIP). TCP entries live as long as their connection (deleted at close where pw_sockops runs); UDP entries until their flow chooses another backend (pw_udp_flow: expired or no longer serving) or the LRU evicts them. An evicted entry of a live flow shows the backend address instead of the ClusterIP (pw_sockops counts it for TCP: revnat_evicted). Created at the size nf_conntrack_max asks (65536 to 1048576; docs/maps.md#when-a-map-is-full).',
  },
  {
    name: 'pw_revnat_sk',
    type: 'sk_storage',
    key: revNatSkKey,
    value: revNatSkVal,
    maxEntries: 0,
    writer: 'bpf/pw_sockops.c (ACTIVE_ESTABLISHED of a connection whose pw_revnat entry is there)',
    reader: 'bpf/pw_sockops.c (TCP_CLOSE: was this connection translated?)',
    doc: 'Socket storage (BPF_MAP_TYPE_SK_STORAGE): marks a TCP socket pw_sockops watches for its reverse translation. It lives and dies with the socket, so no eviction or stale cookie can make it lie: at close, a marked socket whose pw_revnat entry is gone lost that entry to the LRU while it was open (revnat_evicted). A socket in pw_sock only (pod↔pod, sidecar) is not marked. Not dumpable: `podwarp status` shows no count.',
  },
  {
    name: 'pw_cgroups',
    type: 'hash',
    key: cgroupKey,
    value: cgroupRec,
    maxEntries: 16384,
    writer: 'loader/cgroupattach.ts when it attaches to or detaches from a pod cgroup',
    reader: 'loader/cgroupattach.ts (reload, detach, uninstall); `podwarp status`',
    doc: 'Ledger of pod cgroups podwarp attached socket programs to (multi-attach, never the root cgroup).',
  },
  {
    name: 'pw_config',
    type: 'array',
    key: configKey,
    value: config,
    maxEntries: 1,
    writer: 'agent: src/pods/apply.ts (writeConfig)',
    reader: 'bpf/pw_sk_msg.c, bpf/pw_sockops.c, bpf/pw_proxy_conn4.c, bpf/pw_proxy_conn6.c; `podwarp status`',
    doc: 'Node-wide settings for the socket programs.',
  },
  {
    name: 'pw_pod_cgroup',
    type: 'hash',
    key: endpointKey,
    value: podCgroupVal,
    maxEntries: 16384,
    writer:
      'agent: src/pods/apply.ts (syncPodCgroups: exactly the pods given the sidecar capture, written before their hooks are attached)',
    reader:
      'bpf/pw_proxy.h (pw_proxy_conn4, pw_proxy_conn6: is the destination the connecting pod itself); agent read-back (syncPodCgroups)',
    doc: "Own pod IP of each pod with podwarp's sidecar capture, pod IP → pod cgroup id. A connect() whose destination is here and whose process has that cgroup as an ancestor (bpf_get_current_ancestor_cgroup_id) dials its own pod: not captured, as Istio's iptables return traffic that leaves through lo.",
  },
  ...AFFINITY_MAPS,
  ...UDP_FLOW_MAPS,
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
const layouts = new WeakMap<StructDef, { size: number; fields: FieldLayout[] }>();

/** Offsets and size of a struct (computed once per definition: codecs call this per record). */
export function layoutOf(s: StructDef): { size: number; fields: FieldLayout[] } {
  let l = layouts.get(s);
  if (!l) layouts.set(s, (l = computeLayout(s)));
  return l;
}

function computeLayout(s: StructDef): { size: number; fields: FieldLayout[] } {
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
