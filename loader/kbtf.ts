// The running kernel's BTF (/sys/kernel/btf/vmlinux), read directly: which
// struct members exist decides code paths (flow control: psock msg_tot_len).
// Parsed here rather than through `bpftool btf dump … format raw`, whose
// 12 MB of text would cost the agent (and an in-pod `podwarp doctor`) tens
// of MB of memory for one answer. Format: the kernel's Documentation/bpf/btf.rst.
import fs from 'node:fs';

const BTF_MAGIC = 0xeb9f;
const KIND_STRUCT = 4;
const KIND_UNION = 5;

/** Bytes that follow a btf_type's 12-byte header, by kind (vlen = items of the kind's array). */
function trailing(kind: number, vlen: number): number {
  switch (kind) {
    case 1: // INT
      return 4;
    case 3: // ARRAY
      return 12;
    case 4: // STRUCT
    case 5: // UNION
      return 12 * vlen;
    case 6: // ENUM
      return 8 * vlen;
    case 13: // FUNC_PROTO
      return 8 * vlen;
    case 14: // VAR
      return 4;
    case 15: // DATASEC
      return 12 * vlen;
    case 17: // DECL_TAG
      return 4;
    case 19: // ENUM64
      return 12 * vlen;
    default: // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
      return 0;
  }
}

/** Direct member names of every struct/union called `name` in a BTF blob (empty: no such type; members of anonymous inner unions are not listed). */
export function structMembers(blob: Buffer, name: string): Set<string> {
  if (blob.readUInt16LE(0) !== BTF_MAGIC) throw new Error('not little-endian BTF (bad magic)');
  const hdrLen = blob.readUInt32LE(4);
  const typeOff = hdrLen + blob.readUInt32LE(8);
  const typeEnd = typeOff + blob.readUInt32LE(12);
  const strOff = hdrLen + blob.readUInt32LE(16);
  const str = (off: number) => blob.toString('latin1', strOff + off, blob.indexOf(0, strOff + off));
  const out = new Set<string>();
  for (let p = typeOff; p < typeEnd;) {
    const info = blob.readUInt32LE(p + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    if ((kind === KIND_STRUCT || kind === KIND_UNION) && str(blob.readUInt32LE(p)) === name)
      for (let i = 0; i < vlen; i++) out.add(str(blob.readUInt32LE(p + 12 + i * 12)));
    p += 12 + trailing(kind, vlen);
  }
  return out;
}

/** Whether the running kernel's struct has a member (false when the kernel has no BTF). */
export function kernelStructHasMember(struct: string, member: string, file = '/sys/kernel/btf/vmlinux'): boolean {
  if (!fs.existsSync(file)) return false;
  return structMembers(fs.readFileSync(file), struct).has(member);
}
