import { defineConfig } from 'vitest/config';

// PODWARP_TEST_SLOWDOWN: how much slower than a real machine this one is (the
// kernel-matrix VMs under TCG emulation set it); time budgets scale by it
const slowdown = Math.max(1, Number(process.env.PODWARP_TEST_SLOWDOWN) || 1);

export default defineConfig({
  test: {
    // root tests use real netns/veth/BPF on one shared machine: one file at a time
    fileParallelism: false,
    projects: [
      {
        test: {
          // no root needed (npm run test:unit); quiet: the tests assert, the logs would only flood
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 5_000 * slowdown,
          hookTimeout: 10_000 * slowdown,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'silent' },
        },
      },
      {
        test: {
          // BPF_PROG_TEST_RUN on crafted inputs (root; skipped with the reason otherwise): seconds, no netns
          name: 'bpf',
          include: ['test/bpf/**/*.test.ts'],
          testTimeout: 30_000 * slowdown,
          hookTimeout: 60_000 * slowdown,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'warn' },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000 * slowdown,
          hookTimeout: 120_000 * slowdown,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'warn' },
        },
      },
      {
        test: {
          // real clusters (scripts/e2e-cluster.sh, scripts/e2e-kind.sh): run only when asked for;
          // asked for with a prerequisite missing, a file fails rather than skips
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 120_000 * slowdown,
          hookTimeout: 120_000 * slowdown,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'warn' },
        },
      },
    ],
  },
});
