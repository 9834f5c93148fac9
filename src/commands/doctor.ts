// `podwarp doctor`: every prerequisite of the agent on this node, pass / warn
// / fail with how to fix it. The checks are src/doctor/ (probed by
// probe.ts, judged by checks.ts); this file adds the kubelet's pod cgroups
// (src/facts/cgroups.ts) and renders.
import { findMount } from '../../host/mounts.js';
import { errorMessage } from '../../host/errors.js';
import { failed, type Check } from '../doctor/checks.js';
import { doctor } from '../doctor/probe.js';
import { scanPodCgroups } from '../facts/cgroups.js';
import { data, fitTable, isData, table, wrap, type OutputFormat } from '../table.js';

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

/** Width of doctor's table and text (-o table); -o wide prints every cell in full. */
export const DOCTOR_WIDTH = 100;

export function render(r: DoctorReport, fmt: OutputFormat): string {
  if (isData(fmt)) return data(r, fmt);
  const count = (x: Check['result']) => r.checks.filter((c) => c.result === x).length;
  if (fmt === 'wide')
    return (
      table(
        ['CHECK', 'RESULT', 'DETAIL', 'FIX'],
        r.checks.map((c) => [c.check, c.result, c.detail, c.fix || '-']),
      ) + summary(r, count)
    );
  // DETAIL cut to fit; a failed check and a warning (what podwarp does without something) follow in full, with the fix
  const fit = fitTable(
    ['CHECK', 'RESULT', 'DETAIL'],
    r.checks.map((c) => [c.check, c.result, c.detail]),
    { width: DOCTOR_WIDTH, shrink: [2], min: 24 },
  );
  let out = fit.text;
  r.checks.forEach((c) => {
    if (c.result !== 'fail' && c.result !== 'warn') return;
    out += `\n${wrap(`${c.result.toUpperCase()} ${c.check}: ${c.detail}`, DOCTOR_WIDTH)}\n`;
    if (c.fix) out += `${wrap(`  fix: ${c.fix}`, DOCTOR_WIDTH, '    ')}\n`;
  });
  if (fit.cut.size) out += '\n(-o wide: every column in full, and the FIX column)\n';
  return out + summary(r, count);
}

/** One line, never wrapped (scripts look for it): the verdict. */
function summary(r: DoctorReport, count: (x: Check['result']) => number): string {
  let out = `\n${count('pass')} pass, ${count('warn')} warn, ${count('fail')} fail, ${count('skip')} skipped: `;
  out += r.ok
    ? `the agent can run on this node${count('warn') ? `, with the ${count('warn')} warnings above` : ''}\n`
    : `the agent cannot run on this node (${r.failed.join(', ')})\n`;
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
