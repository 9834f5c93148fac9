// Passed, failed and skipped tests per suite, and why each skip happened, from
// vitest JSON reports (vitest's json reporter, or devtools/vm/file-results.mjs
// in the kernel matrix): every *.json below the paths given.
//
//   node scripts/test-summary.mjs [--max-skips N] build/results ...
//
// A suite is a report's project: unit, bpf, integration, e2e (from the test
// file's path), prefixed with the report's name (its path below the given
// directory). A skip's reason is the test's meta.skipReason (test/skip.ts) or
// the "— skipped: <reason>" of an enclosing describe title. Exit 1 when a test
// failed, a skip names no reason, or there are more than N skips.
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
let maxSkips = Infinity;
const roots = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--max-skips') maxSkips = Number(args[++i]);
  else roots.push(args[i]);
}
if (!roots.length || Number.isNaN(maxSkips)) {
  console.error('usage: node scripts/test-summary.mjs [--max-skips N] DIR|FILE.json ...');
  process.exit(2);
}

function* reports(p) {
  if (!fs.existsSync(p)) return;
  if (fs.statSync(p).isDirectory()) {
    for (const e of fs.readdirSync(p).sort()) yield* reports(path.join(p, e));
    return;
  }
  if (!p.endsWith('.json')) return;
  try {
    const r = JSON.parse(fs.readFileSync(p, 'utf8'));
    if (Array.isArray(r?.testResults)) yield { file: p, report: r };
  } catch {
    // not a report
  }
}

const project = (file) => /\/test\/(unit|bpf|integration|e2e)\//.exec(file)?.[1] ?? 'other';
const SKIPPED = new Set(['skipped', 'pending', 'todo']);

function reasonOf(t) {
  if (t.meta?.skipReason) return t.meta.skipReason;
  // the describe titles: vitest's json reporter lists them; file-results.mjs has the full name (titles, then the test's)
  const full = t.fullName ?? '';
  const outer = t.ancestorTitles ?? [full.endsWith(` ${t.title}`) ? full.slice(0, -t.title.length - 1) : ''];
  for (const title of [...outer].reverse()) {
    const m = /— skipped: (.*)$/.exec(title);
    if (m) return m[1];
  }
  return undefined;
}

const rows = new Map(); // suite → { passed, failed, skipped }
const why = new Map(); // reason → { count, suites }
const unexplained = [];
const failures = [];
for (const root of roots) {
  const base = fs.existsSync(root) && fs.statSync(root).isDirectory() ? root : path.dirname(root);
  for (const { file, report } of reports(root)) {
    const name = path
      .relative(base, file)
      .replace(/\.json$/, '')
      .replace(/\/results\//, '/');
    for (const tr of report.testResults) {
      const suite = `${name} · ${project(tr.name)}`;
      const row = rows.get(suite) ?? { passed: 0, failed: 0, skipped: 0 };
      rows.set(suite, row);
      // a file that failed outside its tests (import, hook) counts as one failure
      if (tr.status === 'failed' && !tr.assertionResults.some((t) => t.status === 'failed')) {
        row.failed++;
        failures.push(`${suite}: ${path.basename(tr.name)}: ${(tr.message ?? '').split('\n')[0]}`);
      }
      for (const t of tr.assertionResults) {
        if (t.status === 'passed') row.passed++;
        else if (t.status === 'failed') {
          row.failed++;
          failures.push(`${suite}: ${t.fullName ?? t.title}`);
        } else if (SKIPPED.has(t.status)) {
          row.skipped++;
          const r = reasonOf(t);
          if (!r) unexplained.push(`${suite}: ${t.fullName ?? t.title}`);
          else {
            const w = why.get(r) ?? { count: 0, suites: new Set() };
            w.count++;
            w.suites.add(suite);
            why.set(r, w);
          }
        }
      }
    }
  }
}

const width = Math.max(5, ...[...rows.keys()].map((s) => s.length));
console.log(`${'suite'.padEnd(width)}  passed  failed  skipped`);
const total = { passed: 0, failed: 0, skipped: 0 };
for (const [suite, r] of rows) {
  console.log(`${suite.padEnd(width)}  ${String(r.passed).padStart(6)}  ${String(r.failed).padStart(6)}  ${String(r.skipped).padStart(7)}`);
  for (const k of Object.keys(total)) total[k] += r[k];
}
console.log(
  `${'total'.padEnd(width)}  ${String(total.passed).padStart(6)}  ${String(total.failed).padStart(6)}  ${String(total.skipped).padStart(7)}`,
);
if (why.size) {
  console.log('skipped, and why:');
  for (const [r, w] of why) console.log(`  ${w.count} × ${r}  (${[...w.suites].join(', ')})`);
}
let bad = false;
if (failures.length) {
  bad = true;
  console.log(`failed (${failures.length}):`);
  for (const f of failures.slice(0, 40)) console.log(`  ${f}`);
}
if (unexplained.length) {
  bad = true;
  console.log(`skipped without a reason (${unexplained.length}; test/skip.ts says how to give one):`);
  for (const u of unexplained.slice(0, 40)) console.log(`  ${u}`);
}
if (total.skipped > maxSkips) {
  bad = true;
  console.log(`${total.skipped} skips, more than the ${maxSkips} allowed`);
}
if (!rows.size) {
  bad = true;
  console.log(`no test reports under ${roots.join(', ')}`);
}
process.exit(bad ? 1 : 0);
