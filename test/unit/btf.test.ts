// The compiled objects' BTF must equal the TS layout schema, field by field,
// and the objects must only use what kernel 5.10 offers.
// Needs clang, llvm and bpftool (not root).
import { beforeAll, describe, expect, it } from 'vitest';
import { btfDumpFile, type BtfType } from '../../loader/bpftool.js';
import { objectCalls } from '../../loader/clang.js';
import { build } from '../../loader/build.js';
import { keyCType } from '../../abi/cgen.js';
import { MAPS, SCALAR_SIZE, layoutOf, type StructDef } from '../../abi/schema.js';

const MAP_TYPE_ID = { hash: 1, array: 2, percpu_array: 6, lru_hash: 9, sockhash: 18, sk_storage: 24 } as const;
/** Highest helper id in Linux 5.10 (bpf_redirect_peer = 155). */
const MAX_HELPER_5_10 = 155;
/** Disassembles every object: ~2 s here, 80-170 s in a kernel-matrix VM under TCG on a loaded host. */
const DISASSEMBLY_MS = 30_000 * Math.max(1, Number(process.env.PODWARP_TEST_SLOWDOWN) || 1);
/** libbpf section prefixes whose program and attach types exist in 5.10. */
const SECTIONS_5_10 = [
  /^\.text$/,
  /^tc$/,
  /^iter\/(sockmap|bpf_map_elem)$/,
  /^sockops$/,
  /^sk_msg$/,
  /^fexit\/\w+$/, // fentry/fexit: 5.5
  /^cgroup\/(connect4|sendmsg4|recvmsg4|getpeername4|connect6|recvmsg6|getpeername6|getsockopt)$/,
];

let objs: string[] = [];
const btf = new Map<string, BtfType[]>();

beforeAll(async () => {
  objs = await build();
  // the iterator object is standalone (no podwarp maps): floor check only
  for (const o of objs.filter((x) => !x.includes('/iter/'))) btf.set(o, await btfDumpFile(o));
}, 60_000);

function resolve(types: BtfType[], id: number): BtfType {
  let t = types.find((x) => x.id === id)!;
  while (t.kind === 'TYPEDEF' || t.kind === 'VOLATILE' || t.kind === 'CONST') t = types.find((x) => x.id === t.type_id)!;
  return t;
}

function checkStruct(types: BtfType[], s: StructDef): void {
  const t = types.find((x) => x.kind === 'STRUCT' && x.name === s.name);
  expect(t, `struct ${s.name} in BTF`).toBeDefined();
  const { size, fields } = layoutOf(s);
  expect(t!.size, `${s.name} size`).toBe(size);
  expect(t!.members!.map((m) => m.name)).toEqual(fields.map((f) => f.name));
  t!.members!.forEach((m, i) => {
    const f = fields[i]!;
    expect(m.bits_offset / 8, `${s.name}.${f.name} offset`).toBe(f.offset);
    const mt = resolve(types, m.type_id);
    if (f.count) {
      expect(mt.kind, `${s.name}.${f.name} kind`).toBe('ARRAY');
      expect(mt.nr_elems).toBe(f.count);
      expect(resolve(types, mt.type_id!).size).toBe(SCALAR_SIZE[f.type]);
    } else {
      expect(mt.kind, `${s.name}.${f.name} kind`).toBe('INT');
      expect(mt.size, `${s.name}.${f.name} size`).toBe(SCALAR_SIZE[f.type]);
    }
  });
}

describe('compiled BTF matches the layout schema', () => {
  it('has every schema struct with identical size, member names and offsets', () => {
    expect(objs.length).toBeGreaterThan(0);
    for (const [, types] of btf) {
      for (const m of MAPS) {
        if (keyCType(m).startsWith('struct ')) checkStruct(types, m.key);
        if (m.type !== 'sockhash') checkStruct(types, m.value);
      }
    }
  });

  it('defines every map with the schema type, key, value and size', () => {
    for (const [, types] of btf) {
      const sec = types.find((t) => t.kind === 'DATASEC' && t.name === '.maps')!;
      const vars = sec.vars!.map((v) => types.find((t) => t.id === v.type_id)!);
      for (const m of MAPS) {
        const v = vars.find((x) => x.name === m.name);
        expect(v, `map ${m.name}`).toBeDefined();
        const def = resolve(types, v!.type_id!);
        const member = (n: string) => resolve(types, resolve(types, def.members!.find((x) => x.name === n)!.type_id).type_id!);
        expect(member('type').nr_elems, `${m.name} type`).toBe(MAP_TYPE_ID[m.type]);
        expect(member('max_entries').nr_elems, `${m.name} max_entries`).toBe(m.maxEntries);
        const key = member('key');
        if (keyCType(m) === '__u32') expect([key.kind, key.size]).toEqual(['INT', 4]);
        else expect(key.name).toBe(m.key.name);
        if (m.type === 'sockhash') expect([member('value').kind, member('value').size]).toEqual(['INT', 8]);
        else expect(member('value').name).toBe(m.value.name);
      }
    }
  });
});

describe('kernel floor 5.10', () => {
  it(
    'calls only helpers that 5.10 has, from program sections 5.10 can load',
    async () => {
      for (const o of objs) {
        const { helperIds, programSections: progSections } = await objectCalls(o);
        expect(helperIds.length).toBeGreaterThan(0);
        expect(Math.max(...helperIds), `${o} helper ids`).toBeLessThanOrEqual(MAX_HELPER_5_10);
        expect(progSections.length).toBeGreaterThan(0);
        for (const s of progSections)
          expect(
            SECTIONS_5_10.some((re) => re.test(s)),
            `section ${s}`,
          ).toBe(true);
      }
    },
    DISASSEMBLY_MS,
  );

  it('uses only map types 5.10 has', () => {
    for (const m of MAPS) expect(Object.keys(MAP_TYPE_ID)).toContain(m.type);
  });
});
