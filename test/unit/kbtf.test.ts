// loader/kbtf.ts: struct members from raw BTF, on a blob built here (every
// kind with trailing data before the struct, so a wrong size would misread
// it) and on the running kernel's own BTF.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { kernelStructHasMember, structMembers } from '../../loader/kbtf.js';

/** A BTF blob: strings, then types given as [name, kind, vlen, trailing words]. */
function blob(types: [string, number, number, number[]][]): Buffer {
  const strs = ['', ...new Set(types.flatMap(([n]) => n.split(',')))];
  const strOff = new Map<string, number>();
  let off = 0;
  for (const s of strs) {
    strOff.set(s, off);
    off += Buffer.byteLength(s) + 1;
  }
  const str = Buffer.concat(strs.map((s) => Buffer.from(s + '\0')));
  const words: number[] = [];
  for (const [names, kind, vlen, rest] of types) {
    const [name = '', ...members] = names.split(',');
    words.push(strOff.get(name)!, (kind << 24) | vlen, 8);
    if (members.length) for (const m of members) words.push(strOff.get(m)!, 1, 0);
    else words.push(...rest);
  }
  const type = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => type.writeUInt32LE(w >>> 0, i * 4));
  const hdr = Buffer.alloc(24);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr.writeUInt8(1, 2);
  hdr.writeUInt32LE(24, 4);
  hdr.writeUInt32LE(0, 8);
  hdr.writeUInt32LE(type.length, 12);
  hdr.writeUInt32LE(type.length, 16);
  hdr.writeUInt32LE(str.length, 20);
  return Buffer.concat([hdr, type, str]);
}

describe('kernel BTF members', () => {
  it('walks every kind with trailing data to reach the struct', () => {
    const b = blob([
      ['int', 1, 0, [32]], // INT: 1 word
      ['', 3, 0, [1, 1, 4]], // ARRAY: 3 words
      ['e', 6, 2, [0, 0, 0, 0]], // ENUM, 2 values: 4 words
      ['', 13, 1, [0, 1]], // FUNC_PROTO, 1 param: 2 words
      ['v', 14, 0, [1]], // VAR: 1 word
      ['.data', 15, 1, [1, 0, 4]], // DATASEC, 1 var: 3 words
      ['t', 17, 0, [0]], // DECL_TAG: 1 word
      ['e64', 19, 1, [0, 0, 0]], // ENUM64, 1 value: 3 words
      ['sk_psock,ingress_msg,msg_tot_len', 4, 2, []],
      ['other,x', 5, 1, []],
    ]);
    expect([...structMembers(b, 'sk_psock')]).toEqual(['ingress_msg', 'msg_tot_len']);
    expect([...structMembers(b, 'other')]).toEqual(['x']);
    expect(structMembers(b, 'missing').size).toBe(0);
  });

  it('rejects what is not BTF', () => {
    expect(() => structMembers(Buffer.alloc(64), 'x')).toThrow(/magic/);
  });

  it('reads the running kernel: sk_psock has ingress_msg (every kernel ≥ 5.10)', () => {
    // podwarp needs BTF (doctor fails without it): a machine without it cannot run this suite either
    expect(fs.existsSync('/sys/kernel/btf/vmlinux'), '/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)').toBe(true);
    expect(kernelStructHasMember('sk_psock', 'ingress_msg')).toBe(true);
    expect(kernelStructHasMember('sk_psock', 'no_such_member')).toBe(false);
    expect(kernelStructHasMember('no_such_struct_pw', 'x')).toBe(false);
  });
});
