// The bench result as files: <dir>/bench.json (every round, medians, ratios,
// machine facts) and <dir>/bench.html, one self-contained page: the result,
// Chart.js's UMD bundle and the page script (bench-report-page.js) all inline, so
// it opens from disk or as a CI artifact without network access.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { InputError } from '../host/errors.js';
import { BENCH_FORMAT, type BenchGroup, type BenchReport } from './bench.js';

/** Chart.js's minified UMD bundle (devDependency chart.js; the package exports only its ESM/CJS entries). */
function chartJs(): string {
  const cjs = createRequire(import.meta.url).resolve('chart.js');
  return fs.readFileSync(path.join(path.dirname(cjs), 'chart.umd.min.js'), 'utf8');
}

const PAGE_SCRIPT = new URL('./bench-report-page.js', import.meta.url);

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** JSON inside <script>: no '<' at all, so nothing in it can close the element */
const jsonText = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
/** code inside <script>: checked rather than rewritten (a rewrite could change what it means) */
function scriptText(name: string, code: string): string {
  if (/<\/script|<!--/i.test(code)) throw new Error(`${name} cannot be inlined: it contains </script or <!--`);
  return code;
}
const fmt = (v: number | undefined) =>
  v === undefined ? '—' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);

/** The facts that make a figure mean something: shown next to every group's figures and in every chart. */
function machineFacts(m: BenchReport['machine']): string {
  return `host ${m.hostname}: kernel ${m.kernel}, ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, load ${m.loadavg[0]} at the start`;
}

function groupSection(g: BenchGroup, rounds: number, m: BenchReport['machine']): string {
  const others = g.paths.filter((p) => p.id !== g.baseline);
  const base = g.paths.find((p) => p.id === g.baseline)!;
  const head = `<tr><th>figure (median of ${rounds})</th>${g.paths.map((p) => `<th>${esc(p.label)}</th>`).join('')}${others
    .map((p) => `<th>${esc(p.label)} / ${esc(base.label)}</th>`)
    .join('')}<th></th></tr>`;
  const rows = g.figures
    .map(
      (f) =>
        `<tr><td>${esc(f.label)}</td>${g.paths.map((p) => `<td>${fmt(g.median[p.id]?.[f.key])} ${esc(f.unit)}</td>`).join('')}${others
          .map((p) => `<td><b>${fmt(g.ratio[p.id]?.[f.key])}×</b></td>`)
          .join('')}<td class="note">${f.better} is better</td></tr>`,
    )
    .join('\n');
  const extra = (g.extra ?? []).map((e) => `<li>${esc(e.label)}: <b>${fmt(e.value)} ${esc(e.unit)}</b></li>`).join('');
  const canvases = [...g.figures.map((f) => f.key), 'ratio']
    .map((k) => `<div class="chart${k === 'ratio' ? ' ratio' : ''}"><canvas id="chart-${esc(g.id)}-${esc(k)}"></canvas></div>`)
    .join('\n');
  return `<section id="${esc(g.id)}">
<h2>${esc(g.title)}</h2>
<p class="note">${esc(g.what)}</p>
<table>${head}\n${rows}</table>
<p class="facts">Measured on ${esc(machineFacts(m))}. Absolute figures hold for this machine only: compare another host by the ratios.</p>
${extra ? `<ul>${extra}</ul>` : ''}
<div class="charts">
${canvases}
</div>
</section>`;
}

export function renderHtml(r: BenchReport): string {
  const m = r.machine;
  const busy = m.loadavg[0]! > m.cores;
  const opts = r.options;
  const long = opts.longSeconds === undefined ? '' : `, the long transfer ${opts.longSeconds} s`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>podwarp bench ${esc(r.started)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1320px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 4px; }
.note { color: #555; } .facts { color: #555; font-size: 13px; margin: 2px 0 8px; } .warn { background: #fff4e0; border-left: 4px solid #e67e22; padding: 6px 10px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
.chart { position: relative; height: 260px; border: 1px solid #eee; padding: 4px; }
.chart.ratio { grid-column: span 2; }
</style>
</head>
<body>
<h1>podwarp bench</h1>
<p>${esc(r.started)} – ${esc(r.finished)} · kernel ${esc(m.kernel)} · ${m.cores} cores (${esc(m.cpu)}) · ${m.memoryGiB} GiB · node ${esc(m.node)} · host ${esc(m.hostname)}</p>
<p>${opts.rounds} alternating rounds × ${opts.seconds} s per measurement${long}${opts.quick ? ' (--quick)' : ''}; client and server ${
    opts.cpu === null ? 'unpinned' : `pinned to CPU ${opts.cpu}`
  }. Bars: medians; dots: every round; ratios are medians against the path podwarp replaces.
The absolute figures depend on this machine (its kernel, CPU, memory and load): a figure from another host is compared by its ratios, never as an absolute.</p>
${
  busy
    ? `<p class="warn">The machine was busy when the run started (load average ${m.loadavg.join(' / ')} on ${m.cores} cores): these timings are not representative.</p>`
    : `<p class="note">load average at the start: ${m.loadavg.join(' / ')}</p>`
}
${r.groups.map((g) => groupSection(g, opts.rounds, m)).join('\n')}
<script id="bench-data" type="application/json">${jsonText(r)}</script>
<script>${scriptText('chart.umd.min.js', chartJs())}</script>
<script>${scriptText('bench-report-page.js', fs.readFileSync(PAGE_SCRIPT, 'utf8'))}</script>
</body>
</html>
`;
}

/** Writes <dir>/bench.json and <dir>/bench.html; returns their paths. */
export function writeBenchReport(r: BenchReport, dir: string): { json: string; html: string } {
  fs.mkdirSync(dir, { recursive: true });
  const json = path.join(dir, 'bench.json');
  const html = path.join(dir, 'bench.html');
  fs.writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  fs.writeFileSync(html, renderHtml(r));
  return { json, html };
}

export function readBenchReport(file: string): BenchReport {
  const r = JSON.parse(fs.readFileSync(file, 'utf8')) as BenchReport;
  if (r.format !== BENCH_FORMAT)
    throw new InputError(`${file}: not a podwarp bench result (format ${String(r.format)}, expected ${BENCH_FORMAT})`);
  return r;
}
