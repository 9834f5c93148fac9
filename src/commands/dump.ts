// `podwarp dump …`: read the pinned maps through bpftool and decode them with
// the schema. Works whether or not the agent runs.
import fs from 'node:fs';
import type { Datapath } from '../../loader/datapath.js';
import { InputError, NotLoadedError } from '../../host/errors.js';
import * as ipr from '../../host/ip.js';
import { decode, flagNames } from '../../abi/codec.js';
import { sockKeyString } from '../../loader/sockdrain.js';
import { CT_STATE, FLOW_FLAGS, MAPS, STAT_GROUPS, UDP_CT_STATE, UDP_CT_TIMEOUT_NS, UDP_FLOW, mapDef } from '../../abi/schema.js';
import { data, isData, table, type OutputFormat } from '../table.js';
import { BpfServiceMaps } from '../services/maps.js';
import { readAgentReport } from '../agent-report.js';

function requirePinned(dp: Datapath, map: string): void {
  if (!fs.existsSync(dp.pins.map(map))) {
    throw new NotLoadedError(
      `podwarp is not loaded: map ${map} is not pinned at ${dp.pins.map(map)} (start the agent, or check PODWARP_PIN_NAME)`,
    );
  }
}

export interface EndpointRow {
  ip: string;
  ifindex: number;
  iface: string;
  flags: string;
  mac: string;
  gwMac: string;
  /** From the agent's report, when there is one: the pod, and why it is not (fully) accelerated. */
  pod?: string;
  reason?: string;
}

export async function endpointRows(dp: Datapath): Promise<EndpointRow[]> {
  requirePinned(dp, 'pw_endpoints');
  const names = new Map((await ipr.links()).map((l) => [l.ifindex, l.ifname]));
  const flagsField = mapDef('pw_endpoints').value.fields.find((f) => f.name === 'flags')!;
  const why = reasonsByIp();
  return (await dp.maps.dump('pw_endpoints'))
    .map((e) => ({
      ip: String(e.key.ip),
      ifindex: Number(e.value.ifindex),
      iface: names.get(Number(e.value.ifindex)) ?? '?',
      flags: flagNames(flagsField, Number(e.value.flags)),
      mac: String(e.value.mac),
      gwMac: String(e.value.gw_mac),
      ...why.get(String(e.key.ip)),
    }))
    .sort((a, b) => ipNum(a.ip) - ipNum(b.ip));
}

/** IP → pod and reason, from the running agent's report (`podwarp dump endpoints` says why an endpoint is disabled). */
function reasonsByIp(): Map<string, { pod: string; reason: string }> {
  const r = readAgentReport();
  const out = new Map<string, { pod: string; reason: string }>();
  for (const [pod, n] of Object.entries(r?.notAccelerated ?? {})) if (n.ip) out.set(n.ip, { pod, reason: n.reason });
  return out;
}

const ipNum = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);

export interface StatRow {
  program: string;
  reason: string;
  packets: bigint;
  bytes: bigint;
}

export async function statRows(dp: Datapath): Promise<StatRow[]> {
  requirePinned(dp, 'pw_stats');
  const c = await dp.maps.counters('pw_stats');
  return STAT_GROUPS.flatMap((g) =>
    g.reasons.map((reason, i) => ({
      program: g.prog,
      reason,
      packets: c.get(g.base + i)?.packets ?? 0n,
      bytes: c.get(g.base + i)?.bytes ?? 0n,
    })),
  );
}

export async function dumpEndpoints(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await endpointRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  return (
    table(
      ['IP', 'IFINDEX', 'HOST-IFACE', 'FLAGS', 'POD-MAC', 'GW-MAC', 'NOT ACCELERATED BECAUSE'],
      rows.map((r) => [r.ip, r.ifindex, r.iface, r.flags, r.mac, r.gwMac, r.reason ? `${r.reason} (${r.pod})` : '-']),
    ) + `${rows.length} endpoints\n`
  );
}

export async function dumpStats(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await statRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  // packets for tc, messages for sk_msg, events for the socket and cgroup hooks
  return table(
    ['PROGRAM', 'REASON', 'COUNT', 'BYTES'],
    rows.map((r) => [r.program, r.reason, r.packets, r.bytes]),
  );
}

export interface SocketRow {
  local: string;
  remote: string;
  cookie: string;
  /** Decision of this socket's sends: redirect, passthrough (TCP), or undecided (no message yet). */
  flow: 'redirect' | 'passthrough' | 'undecided';
  /** Bytes this socket has redirected into its peer. */
  bytes: number;
  /** Redirected data waiting in this socket for its application to read (null: unknown, the kernel refused the drain iterator). */
  pending: boolean | null;
  /** Redirected bytes this socket has read (pw_sock_read: counted on kernels whose flow control uses the fexit read counter). */
  read?: number;
}

export async function socketRows(dp: Datapath): Promise<SocketRow[]> {
  requirePinned(dp, 'pw_sock');
  const flows = new Map((await dp.maps.dump('pw_flows')).map((e) => [sockKeyString(e.key), e.value]));
  const pending = await dp.sockets.pending();
  const reads = dp.pins.hasMap('pw_sock_read')
    ? new Map((await dp.maps.dump('pw_sock_read')).map((e) => [sockKeyString(e.key), Number(e.value.bytes)]))
    : new Map<string, number>();
  const raw = await dp.maps.dumpRaw('pw_sock');
  const keyDef = mapDef('pw_sock').key;
  return raw
    .map((e) => {
      const k = decode(keyDef, e.key);
      const s = sockKeyString(k);
      const f = flows.get(s);
      return {
        local: `${String(k.sip)}:${Number(k.sport)}`,
        remote: `${String(k.dip)}:${Number(k.dport)}`,
        cookie: e.value.readBigUInt64LE(0).toString(),
        flow: !f ? ('undecided' as const) : Number(f.flags) & FLOW_FLAGS.PASSTHROUGH ? ('passthrough' as const) : ('redirect' as const),
        bytes: f ? Number(f.bytes) : 0,
        pending: pending ? (pending.get(s) ?? false) : null,
        read: reads.get(s),
      };
    })
    .sort((a, b) => (a.local + a.remote).localeCompare(b.local + b.remote));
}

export async function dumpSockets(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await socketRows(dp);
  if (isData(fmt)) return data({ count: rows.length, sockets: rows }, fmt);
  return (
    table(
      ['LOCAL', 'REMOTE', 'COOKIE', 'FLOW', 'REDIRECTED-BYTES', 'READ-BYTES', 'UNREAD'],
      rows.map((r) => [
        r.local,
        r.remote,
        r.cookie,
        r.flow,
        r.bytes,
        r.read ?? '-',
        r.pending === null ? 'unknown' : r.pending ? 'yes' : 'no',
      ]),
    ) + `${rows.length} sockets in pw_sock\n`
  );
}

export interface ServiceRow {
  frontend: string;
  proto: 'TCP' | 'UDP';
  count: number;
  /** sessionAffinity ClientIP timeout in seconds (master entry); absent: None */
  affinity?: number;
  /** with affinity: whether the slot's backend is in pw_aff_match (a client remembered on it may return to it) */
  slots: { slot: number; backendId: number; backend: string; match?: boolean }[];
  /** From the agent's report: the Service and why this frontend is left to kube-proxy (count 0). */
  left?: { name: string; reason: string };
  /** From the agent's report: which address of which Service this is (absent: not in the report's list). */
  kind?: string;
  service?: string;
}

const PROTO_NAME: Record<number, 'TCP' | 'UDP'> = { 6: 'TCP', 17: 'UDP' };
const KIND_LABEL: Record<string, string> = { cluster: 'cluster', external_ip: 'external-ip', lb_ingress: 'lb-ingress' };

export async function serviceRows(dp: Datapath): Promise<ServiceRow[]> {
  requirePinned(dp, 'pw_svc');
  const have = await new BpfServiceMaps(dp).read();
  const addr = (id: number) => {
    const b = have.backends.get(id);
    return b ? `${b.ip}:${b.port}` : '(missing)';
  };
  const keys = new Set([...have.masters.keys(), ...have.slots.keys()]);
  const report = readAgentReport()?.services;
  const left = new Map((report?.left ?? []).map((l) => [l.frontend, { name: l.name, reason: l.reason }]));
  const named = new Map((report?.named ?? []).map((n) => [n.frontend, n]));
  return [...keys].sort().map((k) => {
    const m = have.masters.get(k);
    const [a = '', proto] = k.split('/');
    const matches = have.matches.get(k);
    const slots = [...(have.slots.get(k) ?? new Map<number, number>())]
      .sort((x, y) => x[0] - y[0])
      .map(([slot, id]) => ({ slot, backendId: id, backend: addr(id), ...(m?.affinity ? { match: matches?.has(id) ?? false } : {}) }));
    const why = m?.count === 0 ? left.get(k) : undefined;
    const n = named.get(k);
    return {
      frontend: a,
      proto: PROTO_NAME[Number(proto)] ?? 'TCP',
      ...(n ? { kind: n.kind, service: n.name } : {}),
      count: m?.count ?? -1,
      ...(m?.affinity ? { affinity: m.affinity } : {}),
      slots,
      ...(why ? { left: why } : {}),
    };
  });
}

/** In the style of `cilium bpf lb list`: the frontend with its master entry, then each slot. */
export async function dumpServices(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await serviceRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  const lines: (string | number)[][] = [];
  for (const r of rows) {
    const count = r.count < 0 ? '(no master entry)' : r.count === 0 ? '(0 backends: left to kube-proxy)' : `(${r.count} backends)`;
    const master = r.affinity ? `${count} sessionAffinity ClientIP ${r.affinity}s` : count;
    const svc = r.service ?? r.left?.name;
    const kind = [r.kind ? (KIND_LABEL[r.kind] ?? r.kind) : svc ? '?' : '', svc ?? ''].join(' ').trim();
    lines.push([`${r.frontend} (${r.proto})`, kind, 0, r.left ? `${master} ${r.left.reason}` : master]);
    for (const s of r.slots)
      lines.push(['', '', s.slot, `${s.backend} (id ${s.backendId})${s.match === false ? ' no affinity match!' : ''}`]);
  }
  return table(['SERVICE ADDRESS', 'KIND SERVICE', 'SLOT', 'BACKEND ADDRESS'], lines) + `${rows.length} frontends\n`;
}

export async function dumpBackends(dp: Datapath, fmt: OutputFormat): Promise<string> {
  requirePinned(dp, 'pw_backends');
  const rows = [...(await new BpfServiceMaps(dp).read()).backends]
    .sort((a, b) => a[0] - b[0])
    .map(([id, b]) => ({ id, address: `${b.ip}:${b.port}`, proto: PROTO_NAME[b.proto] ?? String(b.proto) }));
  if (isData(fmt)) return data(rows, fmt);
  return (
    table(
      ['ID', 'ADDRESS', 'PROTO'],
      rows.map((r) => [r.id, r.address, r.proto]),
    ) + `${rows.length} backends\n`
  );
}

export interface AffinityRow {
  /** the client pod's IPv4 address (as kube-proxy keys its affinity) */
  client: string;
  frontend: string;
  proto: 'TCP' | 'UDP';
  backendId: number;
  backend: string;
  /** seconds since the client last used it (CLOCK_MONOTONIC, the programs' bpf_ktime_get_ns) */
  ageSeconds: number;
  /** the frontend's timeout now; absent when the frontend has no affinity (any more) */
  timeout?: number;
  /** what the next connect() of this client does with the entry: use it, or choose anew (too old, backend left, affinity off) */
  state: 'live' | 'expired' | 'gone' | 'off';
}

/** pw_affinity, with each entry's age and whether a connect() would still use it (pw_svc timeout, pw_aff_match). */
export async function affinityRows(dp: Datapath): Promise<AffinityRow[]> {
  requirePinned(dp, 'pw_affinity');
  const have = await new BpfServiceMaps(dp).read();
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns
  return (await dp.maps.dump('pw_affinity'))
    .map((e) => {
      const fe = `${String(e.key.ip)}:${Number(e.key.port)}`;
      const proto = Number(e.key.proto);
      const k = `${fe}/${proto}`;
      const id = Number(e.value.backend_id);
      const b = have.backends.get(id);
      const last = BigInt(e.value.last_ns as bigint);
      const ageSeconds = Number(now > last ? now - last : 0n) / 1e9;
      const timeout = have.masters.get(k)?.affinity;
      const state: AffinityRow['state'] = !timeout
        ? 'off'
        : ageSeconds > timeout
          ? 'expired'
          : have.matches.get(k)?.has(id)
            ? 'live'
            : 'gone';
      return {
        client: String(e.key.client),
        frontend: fe,
        proto: PROTO_NAME[proto] ?? 'TCP',
        backendId: id,
        backend: b ? `${b.ip}:${b.port}` : '(missing)',
        ageSeconds: Math.round(ageSeconds * 10) / 10,
        ...(timeout ? { timeout } : {}),
        state,
      };
    })
    .sort((a, b) => a.frontend.localeCompare(b.frontend) || a.client.localeCompare(b.client));
}

export async function dumpAffinity(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await affinityRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  return (
    table(
      ['SERVICE ADDRESS', 'CLIENT', 'BACKEND ADDRESS', 'AGE', 'TIMEOUT', 'STATE'],
      rows.map((r) => [
        `${r.frontend} (${r.proto})`,
        r.client,
        `${r.backend} (id ${r.backendId})`,
        `${r.ageSeconds}s`,
        r.timeout ? `${r.timeout}s` : '-',
        r.state,
      ]),
    ) + `${rows.length} affinity entries\n`
  );
}

export interface UdpFlowRow {
  /** socket cookie */
  socket: string;
  frontend: string;
  backend: string;
  state: 'opened' | 'answered';
  /** seconds since its last datagram sent or reply read */
  idleSeconds: number;
  /** the idle timeout that applies to it now (s): 30, or 120 for an answered stream */
  timeout: number;
  /** what its next datagram does: go to the backend, or choose anew (idle too long, backend no longer serving, not a Service any more) */
  status: 'live' | 'expired' | 'gone' | 'no_service';
}

/**
 * The idle timeout of a pw_udp_flow entry, as bpf/pw_lb.h pw_udp_flow_live
 * applies it: 120 s once answered and older than 2 s at its last use, else 30 s.
 */
export function udpFlowTimeoutNs(state: number, firstNs: bigint, lastNs: bigint): bigint {
  return state === UDP_CT_STATE.ANSWERED && lastNs - firstNs > BigInt(UDP_FLOW.STREAM_AFTER_NS)
    ? BigInt(UDP_CT_TIMEOUT_NS.ANSWERED)
    : BigInt(UDP_CT_TIMEOUT_NS.OPENED);
}

/** pw_udp_flow: each unconnected UDP flow's backend, idle time and whether its next datagram still goes there (pw_svc, pw_udp_serve). */
export async function udpFlowRows(dp: Datapath): Promise<UdpFlowRow[]> {
  requirePinned(dp, 'pw_udp_flow');
  const have = await new BpfServiceMaps(dp).read();
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns
  return (await dp.maps.dump('pw_udp_flow'))
    .map((e) => {
      const fe = `${String(e.key.ip)}:${Number(e.key.port)}`;
      const k = `${fe}/${Number(e.key.proto)}`;
      const st = Number(e.value.state);
      const first = BigInt(e.value.first_ns as bigint);
      const last = BigInt(e.value.last_ns as bigint);
      const idle = now > last ? now - last : 0n;
      const timeout = udpFlowTimeoutNs(st, first, last);
      const status: UdpFlowRow['status'] = !have.masters.has(k)
        ? 'no_service'
        : idle > timeout
          ? 'expired'
          : have.serving.get(k)?.has(String(e.value.ip))
            ? 'live'
            : 'gone';
      return {
        socket: String(e.key.cookie),
        frontend: fe,
        backend: `${String(e.value.ip)}:${Number(e.value.port)}`,
        state: st === UDP_CT_STATE.ANSWERED ? ('answered' as const) : ('opened' as const),
        idleSeconds: Math.round(Number(idle) / 1e8) / 10,
        timeout: Number(timeout / 1_000_000_000n),
        status,
      };
    })
    .sort((a, b) => a.frontend.localeCompare(b.frontend) || a.socket.localeCompare(b.socket));
}

export async function dumpUdpFlows(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await udpFlowRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  return (
    table(
      ['SERVICE ADDRESS', 'SOCKET', 'BACKEND ADDRESS', 'STATE', 'IDLE', 'TIMEOUT', 'STATUS'],
      rows.map((r) => [r.frontend, r.socket, r.backend, r.state, `${r.idleSeconds}s`, `${r.timeout}s`, r.status]),
    ) + `${rows.length} unconnected UDP flows\n`
  );
}

/** One entry of any map, decoded with the schema (per-CPU maps: numbers summed over CPUs). */
export interface MapRow {
  key: Record<string, unknown>;
  value: Record<string, unknown>;
}

const sumValues = (vs: Record<string, unknown>[]): Record<string, unknown> => {
  const out: Record<string, unknown> = { ...vs[0] };
  for (const k of Object.keys(out))
    if (typeof out[k] === 'bigint' || typeof out[k] === 'number') out[k] = vs.reduce((s, v) => s + BigInt(v[k] as bigint | number), 0n);
  return out;
};

/** Every entry of a pinned map, decoded: `podwarp dump map NAME` (any map of abi/schema.ts). */
export async function mapRows(dp: Datapath, name: string): Promise<MapRow[]> {
  const def = MAPS.find((m) => m.name === name);
  if (!def) throw new InputError(`unknown map "${name}" (${MAPS.map((m) => m.name).join(', ')})`);
  requirePinned(dp, name);
  // socket storage has no keys to walk (the kernel answers each socket's value, not a listing)
  if (def.type === 'sk_storage') return [];
  if (def.type.startsWith('percpu')) return (await dp.maps.dumpPerCpu(name)).map((e) => ({ key: e.key, value: sumValues(e.values) }));
  return (await dp.maps.dump(name)).map((e) => ({ key: e.key, value: e.value }));
}

const cell = (v: unknown): string => (Array.isArray(v) ? v.join(',') : String(v));

export async function dumpMap(dp: Datapath, name: string, fmt: OutputFormat): Promise<string> {
  const rows = await mapRows(dp, name);
  if (isData(fmt)) return data(rows, fmt);
  const def = mapDef(name);
  const shown = (f: { name: string }) => !f.name.startsWith('_pad');
  const kf = def.key.fields.filter(shown).map((f) => f.name);
  const vf = def.value.fields.filter(shown).map((f) => f.name);
  const headers = [...kf.map((f) => `KEY.${f}`), ...vf.map((f) => f)].map((h) => h.toUpperCase());
  return (
    table(
      headers,
      rows.map((r) => [...kf.map((f) => cell(r.key[f])), ...vf.map((f) => cell(r.value[f]))]),
    ) +
    (def.type === 'sk_storage'
      ? `${name} is socket storage: one value per socket, not listable as a map\n`
      : `${rows.length} entries in ${name} (${def.type}, max ${def.maxEntries})${def.type.startsWith('percpu') ? ', summed over CPUs' : ''}\n`)
  );
}

export interface FlowRow {
  proto: 'TCP' | 'UDP';
  /** in the direction of the flow's first packet seen (TCP: its SYN) */
  client: string;
  server: string;
  state: string;
  /** UDP: seconds since the flow's last packet (CLOCK_MONOTONIC) */
  idleSeconds?: number;
  /** UDP: whether the entry still counts (younger than conntrack's timeout for its state) */
  live?: boolean;
}

/** pw_ct and pw_udp_ct: the flows the tc program tracks to tell direct pod-to-pod flows from NATed ones. */
export async function flowRows(dp: Datapath): Promise<FlowRow[]> {
  requirePinned(dp, 'pw_ct');
  requirePinned(dp, 'pw_udp_ct');
  const tuple = (k: Record<string, unknown>) => ({
    client: `${String(k.saddr)}:${Number(k.sport)}`,
    server: `${String(k.daddr)}:${Number(k.dport)}`,
  });
  const tcpState: Record<number, string> = { [CT_STATE.SYN_SEEN]: 'syn-seen', [CT_STATE.ESTABLISHED]: 'established' };
  const udpState: Record<number, string> = { [UDP_CT_STATE.OPENED]: 'opened', [UDP_CT_STATE.ANSWERED]: 'answered' };
  const now = process.hrtime.bigint();
  const tcp: FlowRow[] = (await dp.maps.dump('pw_ct')).map((e) => ({
    proto: 'TCP',
    ...tuple(e.key),
    state: tcpState[Number(e.value.state)] ?? String(e.value.state),
  }));
  const udp: FlowRow[] = (await dp.maps.dump('pw_udp_ct')).map((e) => {
    const st = Number(e.value.state);
    const last = BigInt(e.value.last_ns as bigint);
    const idle = now > last ? now - last : 0n;
    const timeout = BigInt(st === UDP_CT_STATE.ANSWERED ? UDP_CT_TIMEOUT_NS.ANSWERED : UDP_CT_TIMEOUT_NS.OPENED);
    return {
      proto: 'UDP',
      ...tuple(e.key),
      state: udpState[st] ?? String(st),
      idleSeconds: Math.round(Number(idle) / 1e8) / 10,
      live: idle <= timeout,
    };
  });
  return [...tcp, ...udp].sort((a, b) => a.proto.localeCompare(b.proto) || a.client.localeCompare(b.client));
}

export async function dumpFlows(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await flowRows(dp);
  if (isData(fmt)) return data(rows, fmt);
  return (
    table(
      ['PROTO', 'CLIENT', 'SERVER', 'STATE', 'IDLE', 'COUNTS'],
      rows.map((r) => [
        r.proto,
        r.client,
        r.server,
        r.state,
        r.idleSeconds === undefined ? '-' : `${r.idleSeconds}s`,
        r.live === false ? 'expired' : 'yes',
      ]),
    ) + `${rows.filter((r) => r.proto === 'TCP').length} TCP, ${rows.filter((r) => r.proto === 'UDP').length} UDP flows\n`
  );
}
