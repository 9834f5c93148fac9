// `podwarp dump …`: read the pinned maps through bpftool and decode them with
// the schema. Works whether or not the agent runs.
import fs from 'node:fs';
import type { Datapath } from '../../loader/datapath.js';
import { InputError } from '../../loader/errors.js';
import * as ipr from '../../loader/ip.js';
import { flagNames } from '../layout/codec.js';
import { STAT_GROUPS, mapDef } from '../layout/schema.js';
import { json, table } from '../table.js';

export type OutputFormat = 'table' | 'json';

export function checkFormat(f: string): OutputFormat {
  if (f !== 'table' && f !== 'json') throw new InputError(`unknown output format "${f}" (table, json)`);
  return f;
}

function requirePinned(dp: Datapath, map: string): void {
  if (!fs.existsSync(dp.mapPin(map))) {
    throw new InputError(`map ${map} is not pinned at ${dp.mapPin(map)}: podwarp is not loaded (start the agent, or check PODWARP_PIN_NAME)`);
  }
}

export interface EndpointRow {
  ip: string;
  ifindex: number;
  iface: string;
  flags: string;
  mac: string;
  gwMac: string;
}

export async function endpointRows(dp: Datapath): Promise<EndpointRow[]> {
  requirePinned(dp, 'pw_endpoints');
  const names = new Map((await ipr.links()).map((l) => [l.ifindex, l.ifname]));
  const flagsField = mapDef('pw_endpoints').value.fields.find((f) => f.name === 'flags')!;
  return (await dp.dump('pw_endpoints'))
    .map((e) => ({
      ip: String(e.key.ip),
      ifindex: Number(e.value.ifindex),
      iface: names.get(Number(e.value.ifindex)) ?? '?',
      flags: flagNames(flagsField, Number(e.value.flags)),
      mac: String(e.value.mac),
      gwMac: String(e.value.gw_mac),
    }))
    .sort((a, b) => ipNum(a.ip) - ipNum(b.ip));
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
  const c = await dp.counters('pw_stats');
  return STAT_GROUPS.flatMap((g) =>
    g.reasons.map((reason, i) => ({ program: g.prog, reason, packets: c.get(g.base + i)?.packets ?? 0n, bytes: c.get(g.base + i)?.bytes ?? 0n })),
  );
}

export async function dumpEndpoints(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await endpointRows(dp);
  if (fmt === 'json') return json(rows);
  return (
    table(
      ['IP', 'IFINDEX', 'HOST-IFACE', 'FLAGS', 'POD-MAC', 'GW-MAC'],
      rows.map((r) => [r.ip, r.ifindex, r.iface, r.flags, r.mac, r.gwMac]),
    ) + `${rows.length} endpoints\n`
  );
}

export async function dumpStats(dp: Datapath, fmt: OutputFormat): Promise<string> {
  const rows = await statRows(dp);
  if (fmt === 'json') return json(rows);
  // packets for tc, messages for sk_msg, events for the socket and cgroup hooks
  return table(['PROGRAM', 'REASON', 'COUNT', 'BYTES'], rows.map((r) => [r.program, r.reason, r.packets, r.bytes]));
}
