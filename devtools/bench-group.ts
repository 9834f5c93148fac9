// One group of the bench result (bench.json): the same figures measured on
// each path, alternating rounds. Built by devtools/bench.ts and
// devtools/bench-flows.ts, drawn by devtools/bench-report.ts.
import type { PathEvidence } from './evidence.js';

export interface Figure {
  key: string;
  label: string;
  unit: string;
  better: 'lower' | 'higher';
}

/** One comparison: the same figures measured on each path, alternating rounds. */
export interface BenchGroup {
  id: string;
  title: string;
  what: string;
  /** the path podwarp replaces; ratios are against it */
  baseline: string;
  paths: { id: string; label: string }[];
  figures: Figure[];
  /** per round: its figures, and how far the path's counters moved (devtools/evidence.ts; the round was refused if they contradict the path) */
  rounds: { round: number; path: string; values: Record<string, number>; evidence: PathEvidence }[];
  /** path → figure → median over the rounds */
  median: Record<string, Record<string, number>>;
  /** path → figure → median / the baseline's median */
  ratio: Record<string, Record<string, number>>;
  /** single measurements that belong to the group (not per round), e.g. map write times */
  extra?: { label: string; value: number; unit: string }[];
}
