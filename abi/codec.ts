// Encoders/decoders for the structs of schema.ts. Host byte order is little
// endian (x86_64, arm64); be16/be32 fields are network order.
import { SCALAR_SIZE, layoutOf, type Field, type StructDef } from './schema.js';

export type FieldValue = number | bigint | string | number[];
export type StructValue = Record<string, FieldValue>;

export function ipv4ToBytes(ip: string): number[] {
  const parts = ip.split('.');
  if (parts.length !== 4) throw new Error(`invalid IPv4 address "${ip}"`);
  return parts.map((p) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new Error(`invalid IPv4 address "${ip}"`);
    return n;
  });
}

export function macToBytes(mac: string): number[] {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`invalid MAC "${mac}"`);
  return parts.map((p) => parseInt(p, 16));
}

const hex2 = (n: number) => n.toString(16).padStart(2, '0');

function writeScalar(buf: Buffer, off: number, f: Field, v: number | bigint): void {
  switch (f.type) {
    case 'u8':
      buf.writeUInt8(Number(v), off);
      break;
    case 'u16':
      buf.writeUInt16LE(Number(v), off);
      break;
    case 'be16':
      buf.writeUInt16BE(Number(v), off);
      break;
    case 'u32':
      buf.writeUInt32LE(Number(v), off);
      break;
    case 'be32':
      buf.writeUInt32BE(Number(v), off);
      break;
    case 'u64':
      buf.writeBigUInt64LE(BigInt(v), off);
      break;
  }
}

function readScalar(buf: Buffer, off: number, f: Field): number | bigint {
  switch (f.type) {
    case 'u8':
      return buf.readUInt8(off);
    case 'u16':
      return buf.readUInt16LE(off);
    case 'be16':
      return buf.readUInt16BE(off);
    case 'u32':
      return buf.readUInt32LE(off);
    case 'be32':
      return buf.readUInt32BE(off);
    case 'u64':
      return buf.readBigUInt64LE(off);
  }
}

export function encode(s: StructDef, value: StructValue): Buffer {
  const { size, fields } = layoutOf(s);
  const buf = Buffer.alloc(size);
  for (const f of fields) {
    const v = value[f.name];
    if (v === undefined) {
      if (f.name.startsWith('_pad')) continue;
      throw new Error(`${s.name}.${f.name}: missing value`);
    }
    if (f.format === 'ipv4' && f.type === 'be32') {
      Buffer.from(ipv4ToBytes(String(v))).copy(buf, f.offset);
    } else if (f.format === 'mac') {
      Buffer.from(macToBytes(String(v))).copy(buf, f.offset);
    } else if (f.format === 'string') {
      const b = Buffer.from(String(v), 'utf8');
      if (b.length >= f.size) throw new Error(`${s.name}.${f.name}: "${String(v)}" longer than ${f.size - 1} bytes`);
      b.copy(buf, f.offset);
    } else if (f.count) {
      const arr = v as number[];
      if (!Array.isArray(arr) || arr.length !== f.count) throw new Error(`${s.name}.${f.name}: need ${f.count} elements`);
      arr.forEach((x, i) => writeScalar(buf, f.offset + i * SCALAR_SIZE[f.type], f, x));
    } else {
      writeScalar(buf, f.offset, f, v as number | bigint);
    }
  }
  return buf;
}

export function decode(s: StructDef, buf: Buffer): StructValue {
  const { size, fields } = layoutOf(s);
  if (buf.length !== size) throw new Error(`${s.name}: expected ${size} bytes, got ${buf.length}`);
  const out: StructValue = {};
  for (const f of fields) {
    if (f.name.startsWith('_pad')) continue;
    const raw = buf.subarray(f.offset, f.offset + f.size);
    if (f.format === 'ipv4' && f.type === 'be32') out[f.name] = [...raw].join('.');
    else if (f.format === 'mac') out[f.name] = [...raw].map(hex2).join(':');
    else if (f.format === 'string') {
      const nul = raw.indexOf(0);
      out[f.name] = raw.subarray(0, nul === -1 ? raw.length : nul).toString('utf8');
    } else if (f.count) {
      out[f.name] = Array.from({ length: f.count }, (_, i) => Number(readScalar(buf, f.offset + i * SCALAR_SIZE[f.type], f)));
    } else out[f.name] = readScalar(buf, f.offset, f);
  }
  return out;
}

/** bpftool's byte notation: ["0x0a", "0x00", …] */
export function toHexBytes(buf: Buffer): string[] {
  return [...buf].map((b) => '0x' + hex2(b));
}

export function fromHexBytes(bytes: string[]): Buffer {
  return Buffer.from(bytes.map((b) => parseInt(b, 16)));
}

/** Render flags as names joined by '|' (for tables). */
export function flagNames(f: Field, v: number): string {
  if (!f.flags) return String(v);
  const names = Object.entries(f.flags)
    .filter(([bit]) => (v & Number(bit)) !== 0)
    .map(([, n]) => n);
  return names.length ? names.join('|') : '-';
}
