// A skip names its reason, and the reason reaches the results file: vitest's
// JSON report keeps a test's meta but not ctx.skip's note, and
// scripts/test-summary.mjs fails a skip that carries no reason. Skipping a
// whole describe block: put the reason in its title as "— skipped: <reason>".
import type { TestContext } from 'vitest';

declare module 'vitest' {
  interface TaskMeta {
    skipReason?: string;
  }
}

/** Skips the running test with `reason` (the kernel's or the tool's words). */
export function skipBecause(ctx: TestContext, reason: string): never {
  ctx.task.meta.skipReason = reason;
  ctx.skip(reason);
  throw new Error('unreachable: ctx.skip throws');
}
