import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateHeader, generateTypesHeader, keyCType } from '../../abi/cgen.js';
import { ROOT, mapSizes } from '../../loader/build.js';
import { decode, encode, fromHexBytes, ipv4ToBytes, macToBytes, toHexBytes } from '../../abi/codec.js';
import { MAPS, RECORDS, TC_REASONS, layoutOf, mapDef, type StructDef } from '../../abi/schema.js';

describe('layout schema', () => {
  it('rejects implicit padding inside and at the end of a struct', () => {
    const inner: StructDef = {
      name: 'x',
      doc: '',
      fields: [
        { name: 'a', type: 'u8', doc: '' },
        { name: 'b', type: 'u32', doc: '' },
      ],
    };
    expect(() => layoutOf(inner)).toThrow(/implicit padding before field at offset 1/);
    const tail: StructDef = {
      name: 'y',
      doc: '',
      fields: [
        { name: 'a', type: 'u64', doc: '' },
        { name: 'b', type: 'u32', doc: '' },
      ],
    };
    expect(() => layoutOf(tail)).toThrow(/implicit tail padding/);
  });

  it('gives every map a pw_ name of at most 15 characters and padding-free structs', () => {
    for (const m of MAPS) {
      expect(m.name).toMatch(/^pw_[a-z0-9_]{1,12}$/);
      expect(() => layoutOf(m.key)).not.toThrow();
      expect(() => layoutOf(m.value)).not.toThrow();
    }
  });

  it('computes the sizes the C side asserts', () => {
    expect(layoutOf(MAPS.find((m) => m.name === 'pw_endpoints')!.value).size).toBe(20);
    expect(layoutOf(MAPS.find((m) => m.name === 'pw_ifaces')!.value).size).toBe(24);
    expect(layoutOf(MAPS.find((m) => m.name === 'pw_stats')!.value).size).toBe(16);
  });
});

describe('C header generation', () => {
  const h = generateHeader();
  const types = generateTypesHeader();
  it('declares every struct with a size assertion in the types-only header, which defines no map', () => {
    expect(h).toContain('#include "pw_types.h"');
    expect(types).not.toContain('SEC(".maps")');
    for (const s of RECORDS) expect(types).toContain(`_Static_assert(sizeof(struct ${s.name}) == ${layoutOf(s).size},`);
    for (const m of MAPS) {
      for (const s of [m.key, m.value]) {
        if (s === m.key && keyCType(m) === '__u32') continue;
        if (s === m.value && m.type === 'sockhash') continue; // the kernel keeps sockets; user space reads a u64 cookie
        expect(types).toContain(`struct ${s.name} {`);
        expect(types).toContain(`_Static_assert(sizeof(struct ${s.name}) == ${layoutOf(s).size},`);
      }
    }
  });
  it('defines every map in .maps with its writer and reader documented', () => {
    for (const m of MAPS) {
      expect(h).toMatch(new RegExp(`} ${m.name} SEC\\("\\.maps"\\);`));
      expect(h).toContain(`writer: ${m.writer}`);
      expect(h).toContain(`reader: ${m.reader}`);
    }
  });
  it('uses a plain u32 key for array maps (the kernel rejects struct keys there)', () => {
    expect(h).toMatch(/BPF_MAP_TYPE_PERCPU_ARRAY\);\n\t__uint\(max_entries, PW_STATS_MAX\);\n\t__type\(key, __u32\);/);
  });
  it('takes map sizes from the build environment, and rejects bad ones', () => {
    expect(generateHeader({ pw_svc: 1000 })).toContain('#define PW_SVC_MAX 1000');
    expect(generateHeader()).toContain('#define PW_SVC_MAX 262144');
    expect(() => generateHeader({ pw_nope: 1 })).toThrow(/unknown map pw_nope/);
    expect(mapSizes('pw_svc=5, pw_backends=7')).toEqual({ pw_svc: 5, pw_backends: 7 });
    expect(() => mapSizes('pw_svc=lots')).toThrow(/not map=entries/);
  });

  it('numbers the tc reasons in schema order', () => {
    TC_REASONS.forEach((r, i) => expect(types).toContain(`PW_TC_${r.toUpperCase()} = ${i},`));
  });
});

describe('codecs', () => {
  it('round-trips every map struct with arbitrary values', () => {
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    for (const m of MAPS) {
      for (const s of [m.key, m.value]) {
        for (let iter = 0; iter < 50; iter++) {
          const v: Record<string, unknown> = {};
          for (const f of s.fields) {
            if (f.name.startsWith('_pad')) continue;
            if (f.format === 'ipv4') v[f.name] = [rnd(256), rnd(256), rnd(256), rnd(256)].join('.');
            else if (f.format === 'mac') v[f.name] = Array.from({ length: 6 }, () => rnd(256).toString(16).padStart(2, '0')).join(':');
            else if (f.format === 'string') v[f.name] = 'if' + rnd(1000);
            else if (f.count)
              v[f.name] = Array.from({ length: f.count }, () =>
                rnd(2 ** (8 * Math.min(4, { u8: 1, u16: 2, u32: 4, be16: 2, be32: 4 }[f.type as 'u8'])) - 1),
              );
            else if (f.type === 'u64') v[f.name] = BigInt(rnd(2 ** 30)) * 4096n + 5n;
            else v[f.name] = rnd(2 ** (8 * Math.min(4, { u8: 1, u16: 2, u32: 4, be16: 2, be32: 4 }[f.type as 'u8'])) - 1);
          }
          const buf = encode(s, v as never);
          expect(buf.length).toBe(layoutOf(s).size);
          expect(decode(s, buf)).toEqual(v);
          expect(fromHexBytes(toHexBytes(buf))).toEqual(buf);
        }
      }
    }
  });
  it('stores IPv4 addresses in network order and integers little endian', () => {
    const m = MAPS.find((x) => x.name === 'pw_endpoints')!;
    expect([...encode(m.key, { ip: '10.1.2.3' })]).toEqual([10, 1, 2, 3]);
    const v = encode(m.value, { ifindex: 0x01020304, flags: 1, mac: '02:00:00:00:00:01', gw_mac: 'aa:bb:cc:dd:ee:ff' });
    expect([...v.subarray(0, 8)]).toEqual([4, 3, 2, 1, 1, 0, 0, 0]);
    expect([...v.subarray(14, 20)]).toEqual([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
  });
  it('rejects malformed input with the field named', () => {
    const m = MAPS.find((x) => x.name === 'pw_endpoints')!;
    expect(() => ipv4ToBytes('10.0.0.256')).toThrow(/invalid IPv4/);
    expect(() => macToBytes('02:00:00:00:00')).toThrow(/invalid MAC/);
    expect(() => encode(m.value, { ifindex: 1, flags: 1, mac: '02:00:00:00:00:01' })).toThrow(/pw_endpoint\.gw_mac: missing value/);
    expect(() => decode(m.value, Buffer.alloc(19))).toThrow(/expected 20 bytes, got 19/);
  });
});

describe('map-dump iterators (bpf/iter/*_iter.c using PW_MAP_DUMP_ITER)', () => {
  it('write records of exactly the schema key and value structs', () => {
    const dir = path.join(ROOT, 'bpf', 'iter');
    const uses = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.c'))
      .flatMap((f) => [
        ...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/^PW_MAP_DUMP_ITER\((\w+)_iter, struct (\w+), struct (\w+)\)/gm),
      ]);
    expect(uses.map((u) => u[1]).sort()).toEqual(['pw_backends', 'pw_svc']);
    for (const [, name, k, v] of uses) {
      const m = mapDef(name!);
      expect([k, v], name).toEqual([m.key.name, m.value.name]);
    }
  });
});
