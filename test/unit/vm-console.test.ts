// devtools/vm/console-fault.mjs: why a matrix VM died, from its serial
// console. Only the emulator's stale-int3 fault lets scripts/kernel-matrix.sh
// run a kernel once more; every other panic must stay a failure.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { consoleFault } from '../../devtools/vm/console-fault.mjs';

// the 6.12 VM of CI on 2026-11-30 (qemu 7.2 TCG, -smp 2), its last lines
const int3 = fs.readFileSync(path.join(import.meta.dirname, 'fixtures/vm-console-int3.txt'), 'utf8');

describe('consoleFault', () => {
  it('names an int3 trap on bytes that no longer hold the int3 an emulator fault', () => {
    const f = consoleFault(int3);
    expect(f.kind).toBe('emulator');
    expect(f.line).toContain('Oops: int3');
    expect(f.line).toContain('__alloc_pages_noprof+0xe2/0x310');
    expect(f.line).toContain('holds 0f');
  });
  it('keeps an int3 trap a panic while the int3 is still in memory (a real breakpoint or a bug)', () => {
    const still = int3.replaceAll('0f <1f> 44 00 00', 'cc <1f> 44 00 00');
    expect(still).not.toBe(int3);
    expect(consoleFault(still)).toEqual({ kind: 'panic', line: 'Oops: int3: 0000 [#1] PREEMPT SMP NOPTI' });
  });
  it('keeps any other oops a panic', () => {
    const nul = [
      'pwvm-tests: 1 files in one vitest run',
      '[   41.100000] BUG: kernel NULL pointer dereference, address: 0000000000000008',
      '[   41.100100] Oops: 0000 [#1] PREEMPT SMP NOPTI',
      '[   41.100200] RIP: 0010:sk_psock_verdict_apply+0x21/0x1f0',
      '[   41.100300] Code: 90 90 0f 1f 44 00 00 55 48 89 e5 <48> 8b 47 08 00 00 00',
      '[   41.200000] Kernel panic - not syncing: Fatal exception in interrupt',
    ].join('\n');
    expect(consoleFault(nul)).toEqual({ kind: 'panic', line: 'BUG: kernel NULL pointer dereference, address: 0000000000000008' });
  });
  it('finds nothing in a console without a kernel panic, whatever the tests printed', () => {
    expect(consoleFault('pwvm: stage2 at uptime 9.5 s\n  expected BUG: Oops: int3 in a message\npwvm-tests: vitest exited 1\n')).toEqual({
      kind: 'none',
      line: '',
    });
  });
});
