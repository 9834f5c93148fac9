// Reads a VM's serial console (OUT/<kernel>/console.log) after the VM died
// without a status, and says why: a guest kernel panic (its first Oops or
// BUG line), or nothing found.
//
// One kind of panic is the emulator's, not the kernel's or podwarp's: under
// multi-threaded TCG, a vCPU can run a stale translation of kernel text that
// another vCPU has just re-patched (a static key flip: text_poke_bp writes an
// int3, then the new bytes, then syncs every CPU). The vCPU traps on the int3
// after the patch has finished, the kernel no longer knows that address and
// oopses with "Oops: int3". The Oops' "Code:" line shows memory as it is now,
// the byte at RIP-1 being where the int3 was: when that byte is no longer
// 0xcc, the CPU executed an instruction that memory did not hold at the time,
// which real hardware and KVM do not do after the kernel's cross-CPU sync.
// Seen once in 98 TCG boots here (6.12, CI of 2026-11-30); scripts/kernel-matrix.sh
// re-runs a kernel once after such a fault, never after any other panic.
//
//   node devtools/vm/console-fault.mjs CONSOLE_LOG
//     prints "emulator: …", "panic: …" or "none"; exit 0 only for "emulator"
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const strip = (l) => l.replace(/^\[\s*[\d.]+\]\s*/, '').trim();

/** @param {string} text the console log @returns {{kind: 'emulator'|'panic'|'none', line: string}} */
export function consoleFault(text) {
  const lines = text.split('\n');
  // kernel lines only (a timestamp first): test output on the same console does not count
  const oops = lines.findIndex((l) => /^\[\s*[\d.]+\]\s*(Oops:|BUG:|kernel BUG at|Kernel panic)/.test(l));
  if (oops < 0) return { kind: 'none', line: '' };
  const first = strip(lines[oops]);
  if (/Oops: int3\b/.test(lines[oops])) {
    const rip = lines.slice(oops, oops + 12).find((l) => /\bRIP: 0010:/.test(l));
    const code = lines.slice(oops, oops + 12).find((l) => /\bCode: /.test(l) && /<[0-9a-f]{2}>/.test(l));
    const m = code && /([0-9a-f]{2}) <[0-9a-f]{2}>/.exec(code);
    if (m && m[1] !== 'cc')
      return {
        kind: 'emulator',
        line: `${first} at ${rip ? strip(rip).replace(/^RIP: 0010:/, '') : '?'}, where memory holds ${m[1]}, not the int3 (stale TCG translation of re-patched kernel text)`,
      };
  }
  return { kind: 'panic', line: first };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  const f = fs.existsSync(file ?? '') ? consoleFault(fs.readFileSync(file, 'utf8')) : { kind: 'none', line: '' };
  console.log(f.kind === 'none' ? 'none' : `${f.kind}: ${f.line}`);
  process.exitCode = f.kind === 'emulator' ? 0 : 1;
}
