// mediansAndRatios (devtools/perf.ts): every bench and demo table compares
// paths by the ratio of medians over interleaved rounds.
import { describe, expect, it } from 'vitest';
import { mediansAndRatios } from '../../devtools/perf.js';

describe('mediansAndRatios()', () => {
  const rounds = [
    { mode: 'normal', gbps: 10, p50: 4 },
    { mode: 'fast', gbps: 30, p50: 1 },
    { mode: 'normal', gbps: 14, p50: 6 },
    { mode: 'fast', gbps: 10, p50: 3 },
    { mode: 'normal', gbps: 12, p50: 100 },
    { mode: 'fast', gbps: 18, p50: 2 },
  ] as const;
  it('the median per path and figure (an outlier round does not move it), ratios of medians to the baseline', () => {
    const r = mediansAndRatios(
      rounds,
      (x) => x.mode,
      ['normal', 'fast'] as const,
      ['gbps', 'p50'] as const,
      (x, k) => x[k],
      'normal',
    );
    expect(r.median).toEqual({ normal: { gbps: 12, p50: 6 }, fast: { gbps: 18, p50: 2 } });
    expect(r.ratio).toEqual({ normal: { gbps: 1, p50: 1 }, fast: { gbps: 1.5, p50: 2 / 6 } });
  });
  it('an even number of rounds takes the mean of the middle two', () => {
    const r = mediansAndRatios(
      rounds.slice(0, 4),
      (x) => x.mode,
      ['normal', 'fast'] as const,
      ['gbps'] as const,
      (x) => x.gbps,
      'fast',
    );
    expect(r.median).toEqual({ normal: { gbps: 12 }, fast: { gbps: 20 } });
    expect(r.ratio.normal.gbps).toBe(0.6);
  });
});
