// `podwarp doctor`: every prerequisite of the agent on this node, pass / warn
// / fail with how to fix it. The checks are src/doctor/ (probed by
// probe.ts, judged by checks.ts); this file adds the kubelet's pod cgroups
// (src/facts/cgroups.ts) and renders.
import { findMount } from '../../host/mounts.js';
import { errorMessage } from '../../host/errors.js';
import { failed, type Check } from '../doctor/checks.js';
import { doctor } from '../doctor/probe.js';
import { scanPodCgroups } from '../facts/cgroups.js';
import { json, table } from '../table.js';
import type { OutputFormat } from './dump.js';

export interface DoctorReport {
  ok: boolean;
  failed: string[];
  checks: Check[];
}

/** Pod cgroups below the cgroup2 mount: what the agent will find pods by (info only: a plain host has none). */
export function podCgroupCheck(mount: string | undefined): Check | undefined {
  if (!mount) return undefined;
  try {
    const scan = scanPodCgroups(mount, { maxDirs: 20_000 });
    const n = scan.pods.size;
    return {
      check: 'pod cgroups',
      result: 'info',
      detail: `${n} below ${mount}${scan.truncated ? ' (walk truncated)' : ''}${scan.duplicates.size ? `, ${scan.duplicates.size} UIDs at two places` : ''}${n ? '' : ' (no kubelet, or pods outside cgroup2)'}`,
      fix: '',
    };
  } catch (e) {
    return { check: 'pod cgroups', result: 'warn', detail: `cannot read ${mount}: ${errorMessage(e)}`, fix: '' };
  }
}

export function report(checks: Check[]): DoctorReport {
  const bad = failed(checks);
  return { ok: bad.length === 0, failed: bad.map((c) => c.check), checks };
}

/** Exit status of `podwarp doctor`: 1 when the agent cannot run (a fail), 0 otherwise (warnings included). */
export function exitCode(r: DoctorReport): number {
  return r.ok ? 0 : 1;
}

/** Table cells longer than this are cut; the failed checks follow the table in full. */
const DETAIL_WIDTH = 90;

export function render(r: DoctorReport, fmt: OutputFormat): string {
  if (fmt === 'json') return json(r);
  const cut = (s: string) => (s.length > DETAIL_WIDTH ? s.slice(0, DETAIL_WIDTH - 1) + '…' : s);
  const count = (x: Check['result']) => r.checks.filter((c) => c.result === x).length;
  let out = table(
    ['CHECK', 'RESULT', 'DETAIL', 'FIX'],
    r.checks.map((c) => [c.check, c.result, cut(c.detail), c.fix || '-']),
  );
  for (const c of r.checks.filter((x) => x.result === 'fail' && (x.detail.length > DETAIL_WIDTH || x.fix)))
    out += `\nFAIL ${c.check}: ${c.detail}\n  fix: ${c.fix || '-'}\n`;
  // a warning says what podwarp does without something: in full, never cut
  for (const c of r.checks.filter((x) => x.result === 'warn' && x.detail.length > DETAIL_WIDTH)) out += `\nWARN ${c.check}: ${c.detail}\n`;
  out += `\n${count('pass')} pass, ${count('warn')} warn, ${count('fail')} fail, ${count('skip')} skipped: `;
  out += r.ok
    ? `the agent can run on this node${count('warn') ? `, with the ${count('warn')} warnings above` : ''}\n`
    : `the agent cannot run on this node (${r.failed.join(', ')}); fix the failed checks\n`;
  return out;
}

export async function runDoctor(fmt: OutputFormat): Promise<{ text: string; code: number }> {
  const checks = await doctor({ load: true });
  const pods = podCgroupCheck(findMount('cgroup2'));
  // next to the cgroup2 mount check
  if (pods) checks.splice(checks.findIndex((c) => c.check === 'cgroup2 mount') + 1, 0, pods);
  const r = report(checks);
  return { text: render(r, fmt), code: exitCode(r) };
}
