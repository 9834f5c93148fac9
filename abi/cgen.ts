// Generates the C headers from schema.ts. Pure: returns the text.
//   build/include/pw_types.h  constants, enums and structs only (iterators include it)
//   build/include/pw_maps.h   pw_types.h + the SEC(".maps") definitions (programs include it)
import {
  CGROUP_HOOKS,
  CONFIG_FLAGS,
  CT_STATE,
  EP_FLAGS,
  FLOW_CONTROL,
  FLOW_FLAGS,
  IFACE_FLAGS,
  MAPS,
  PROTO,
  RECORDS,
  STAT_GROUPS,
  UDP_CT_STATE,
  UDP_CT_TIMEOUT_NS,
  UDP_FLOW,
  layoutOf,
  type MapDef,
  type StructDef,
} from './schema.js';

const C_TYPE = { u8: '__u8', u16: '__u16', u32: '__u32', u64: '__u64', be16: '__be16', be32: '__be32' } as const;
const C_MAP_TYPE = {
  hash: 'BPF_MAP_TYPE_HASH',
  lru_hash: 'BPF_MAP_TYPE_LRU_HASH',
  array: 'BPF_MAP_TYPE_ARRAY',
  percpu_array: 'BPF_MAP_TYPE_PERCPU_ARRAY',
  sockhash: 'BPF_MAP_TYPE_SOCKHASH',
  sk_storage: 'BPF_MAP_TYPE_SK_STORAGE',
} as const;

export function maxEntriesMacro(m: MapDef): string {
  return `${m.name.toUpperCase()}_MAX`;
}

function structC(s: StructDef): string {
  const { size } = layoutOf(s);
  const lines = [`/* ${s.doc} */`, `struct ${s.name} {`];
  for (const f of s.fields) {
    lines.push(`\t${C_TYPE[f.type]} ${f.name}${f.count ? `[${f.count}]` : ''}; /* ${f.doc} */`);
  }
  lines.push('};');
  lines.push(`_Static_assert(sizeof(struct ${s.name}) == ${size}, "${s.name} size must match the TS schema");`);
  return lines.join('\n');
}

/** Array and socket storage maps need a plain 4-byte integer key in BTF (the kernel rejects a struct). */
export function keyCType(m: MapDef): string {
  if (m.type === 'array' || m.type === 'percpu_array' || m.type === 'sk_storage') {
    const f = m.key.fields;
    if (f.length !== 1 || f[0]?.type !== 'u32' || f[0]?.count) throw new Error(`${m.name}: array map key must be one u32`);
    return '__u32';
  }
  return `struct ${m.key.name}`;
}

function mapC(m: MapDef, size: number): string {
  return [
    `/* ${m.name}: ${m.doc}`,
    ` *   writer: ${m.writer}`,
    ` *   reader: ${m.reader}`,
    ` *   key: struct ${m.key.name}; value: struct ${m.value.name}; ${m.maxEntries} entries by default. */`,
    `#define ${maxEntriesMacro(m)} ${size}`,
    'struct {',
    `\t__uint(type, ${C_MAP_TYPE[m.type]});`,
    `\t__uint(max_entries, ${maxEntriesMacro(m)});`,
    // socket storage is allocated per socket on demand; the kernel requires no preallocation
    ...(m.type === 'sk_storage' ? ['\t__uint(map_flags, BPF_F_NO_PREALLOC);'] : []),
    `\t__type(key, ${keyCType(m)});`,
    // a sockhash holds sockets; its BTF value is the u64 cookie user space reads back
    m.type === 'sockhash' ? '\t__type(value, __u64);' : `\t__type(value, struct ${m.value.name});`,
    `} ${m.name} SEC(".maps");`,
  ].join('\n');
}

const HEADER = [
  '/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */',
  '/* GENERATED from abi/schema.ts by `podwarp build` — do not edit. */',
];

/** Constants, enums and structs: no maps (an object that includes it declares none). */
export function generateTypesHeader(): string {
  const structs = new Map<string, StructDef>();
  for (const m of MAPS) {
    if (keyCType(m).startsWith('struct ')) structs.set(m.key.name, m.key);
    if (m.type !== 'sockhash') structs.set(m.value.name, m.value);
  }
  for (const r of RECORDS) structs.set(r.name, r);
  return [
    ...HEADER,
    '#ifndef PW_TYPES_H',
    '#define PW_TYPES_H',
    '',
    '#include <linux/types.h>',
    '',
    ...Object.entries(EP_FLAGS).map(([k, v]) => `#define PW_EP_${k} ${v}u`),
    ...Object.entries(IFACE_FLAGS).map(([k, v]) => `#define PW_IFACE_${k} ${v}u`),
    ...Object.entries(FLOW_FLAGS).map(([k, v]) => `#define PW_FLOW_${k} ${v}u`),
    ...Object.entries(CONFIG_FLAGS).map(([k, v]) => `#define PW_CONFIG_${k} ${v}u`),
    ...Object.entries(CGROUP_HOOKS).map(([k, v]) => `#define PW_HOOK_${k} ${v}u`),
    ...Object.entries(CT_STATE).map(([k, v]) => `#define PW_CT_${k} ${v}u`),
    ...Object.entries(UDP_CT_STATE).map(([k, v]) => `#define PW_UDP_CT_${k} ${v}u`),
    ...Object.entries(UDP_CT_TIMEOUT_NS).map(([k, v]) => `#define PW_UDP_CT_TIMEOUT_${k}_NS ${v}ull`),
    ...Object.entries(UDP_FLOW).map(([k, v]) => `#define PW_UDP_FLOW_${k} ${v}ull`),
    ...Object.entries(PROTO).map(([k, v]) => `#define PW_IPPROTO_${k} ${v}`),
    ...Object.entries(FLOW_CONTROL).map(([k, v]) => `#define PW_${k} ${v}ull`),
    '',
    '/* pw_stats slots: PW_<PROG>_<REASON> (abi/schema.ts STAT_GROUPS) */',
    'enum pw_stat_reason {',
    ...STAT_GROUPS.flatMap((g) => g.reasons.map((r, i) => `\tPW_${g.prefix}_${r.toUpperCase()} = ${g.base + i}, /* ${g.prog} */`)),
    '};',
    '',
    ...[...structs.values()].map(structC).flatMap((s) => [s, '']),
    '#endif /* PW_TYPES_H */',
    '',
  ].join('\n');
}

/** `sizes` overrides maps' max entries by name (PODWARP_MAP_SIZES at build time). */
export function generateHeader(sizes: Record<string, number> = {}): string {
  for (const [name, n] of Object.entries(sizes)) {
    if (!MAPS.some((m) => m.name === name)) throw new Error(`map size for unknown map ${name}`);
    if (!Number.isInteger(n) || n < 1 || n > 1 << 26) throw new Error(`map size for ${name} must be 1..${1 << 26}`);
  }
  return [
    ...HEADER,
    '#ifndef PW_MAPS_H',
    '#define PW_MAPS_H',
    '',
    '#include "pw_types.h"',
    '#include <linux/bpf.h>',
    '#include <bpf/bpf_helpers.h>',
    '',
    ...MAPS.map((m) => mapC(m, sizes[m.name] ?? m.maxEntries)).flatMap((s) => [s, '']),
    '#endif /* PW_MAPS_H */',
    '',
  ].join('\n');
}
