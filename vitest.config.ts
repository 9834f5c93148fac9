import { defineConfig } from 'vitest/config';

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
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'silent' },
        },
      },
      {
        test: {
          // BPF_PROG_TEST_RUN on crafted inputs (root; skipped with the reason otherwise): seconds, no netns
          name: 'bpf',
          include: ['test/bpf/**/*.test.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'warn' },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          env: { PODWARP_LOG_LEVEL: process.env.PODWARP_LOG_LEVEL ?? 'warn' },
        },
      },
    ],
  },
});
