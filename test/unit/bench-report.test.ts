// The bench report (devtools/bench-report.ts) rendered in headless Chromium
// (Debian's chromium, driven by playwright-core): one chart per group and
// figure holding the medians and every round, one ratio chart per group, all
// painted, no console errors, no request beyond the file itself. Renders a
// committed result of a real `podwarp-dev bench --quick` run
// (test/unit/fixtures/bench-quick.json), or the result PODWARP_BENCH_JSON names
// (CI: the one its bench smoke just wrote). The screenshot goes to
// build/bench-report-test.png.
// Chromium is installed by scripts/setup-browser.sh (run by scripts/test.sh);
// without it the browser test is skipped, saying so.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BENCH_FORMAT, type BenchReport } from '../../devtools/bench.js';
import { CHROMIUM, hasChromium, visitReport, type PageVisit } from '../../devtools/browser.js';
import { contradictions, expectedFor } from '../../devtools/evidence.js';
import { readBenchReport, renderHtml, writeBenchReport } from '../../devtools/bench-report.js';
import { ROOT } from '../../loader/build.js';

const source = process.env.PODWARP_BENCH_JSON ?? path.join(ROOT, 'test/unit/fixtures/bench-quick.json');
const report: BenchReport = readBenchReport(source);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'podwarp-report-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe(`bench report of ${path.relative(ROOT, source)}`, () => {
  it('the result holds every round, medians equal to the rounds, ratios against the baseline, machine facts', () => {
    expect(report.format).toBe(BENCH_FORMAT);
    expect(report.machine.kernel).toMatch(/^\d+\.\d+/);
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(Date.parse(report.started)).toBeLessThanOrEqual(Date.parse(report.finished));
    expect(report.groups.map((g) => g.id)).toEqual(
      expect.arrayContaining(['pod-pod-routed', 'sidecar', 'conn-pod-pod', 'conn-clusterip', 'long-transfer', 'slow-reader']),
    );
    for (const g of report.groups) {
      expect(g.paths.map((p) => p.id)).toContain(g.baseline);
      for (const p of g.paths)
        for (const f of g.figures) {
          const xs = g.rounds
            .filter((r) => r.path === p.id)
            .map((r) => r.values[f.key]!)
            .sort((a, b) => a - b);
          expect(xs, `${g.id} ${p.id} ${f.key}`).toHaveLength(report.options.rounds);
          const mid = xs.length >> 1;
          expect(g.median[p.id]![f.key]).toBeCloseTo(xs.length % 2 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2, 6);
          expect(g.ratio[p.id]![f.key]).toBeCloseTo(g.median[p.id]![f.key]! / g.median[g.baseline]![f.key]!, 6);
        }
    }
  });

  it('every round took the path it names: the counters of that path moved, those of the others did not', () => {
    for (const g of report.groups)
      for (const r of g.rounds) {
        const want = expectedFor(g.id, r.path);
        expect(want, `${g.id} ${r.path}: a path without an expectation`).toBeDefined();
        expect(contradictions(r.evidence, want!), `${g.id} round ${r.round} ${r.path}`).toEqual([]);
      }
  });

  it("every group's figures stand next to the machine's facts, and the page says hosts compare by ratios", () => {
    const html = renderHtml(report);
    const m = report.machine;
    const sections = html.split('<section id=').slice(1);
    expect(sections).toHaveLength(report.groups.length);
    for (const [i, s] of sections.entries()) {
      const facts = /<p class="facts">([^<]*)<\/p>/.exec(s)?.[1];
      expect(facts, report.groups[i]!.id).toBeDefined();
      for (const want of [
        m.hostname,
        `kernel ${m.kernel}`,
        `${m.cores} cores`,
        `load ${m.loadavg[0]}`,
        'compare another host by the ratios',
      ])
        expect(facts, `${report.groups[i]!.id}: ${want}`).toContain(want);
    }
    expect(html).toContain('a figure from another host is compared by its ratios, never as an absolute');
  });

  it('the HTML is one self-contained file: data, Chart.js and the page script inline, nothing loaded from elsewhere', () => {
    const html = renderHtml(report);
    // the markup around the inline scripts (Chart.js's own source names URLs in comments and strings)
    const markup = html.replace(/(<script[^>]*>)[^]*?<\/script>/g, '$1</script>');
    expect(markup.match(/\b(src|href)\s*=|https?:\/\/|url\(/gi)).toBeNull();
    expect(markup).toContain("default-src 'none'");
    expect((markup.match(/<script/g) ?? []).length).toBe(3);
    const data = /<script id="bench-data" type="application\/json">([^<]*)<\/script>/.exec(html);
    expect(JSON.parse(data![1]!)).toEqual(report);
    expect(html).toContain('Chart.js v4');
  });

  describe.skipIf(!hasChromium())(
    `in headless Chromium (${CHROMIUM})${hasChromium() ? '' : ' — skipped: Chromium is not installed (bash scripts/setup-browser.sh)'}`,
    () => {
      let visit: PageVisit;
      const png = path.join(ROOT, 'build', 'bench-report-test.png');
      beforeAll(async () => {
        fs.mkdirSync(path.dirname(png), { recursive: true });
        const { html } = writeBenchReport(report, dir);
        visit = await visitReport(html, { png });
      }, 120_000);

      it('no console errors, no network requests', () => {
        expect(visit.errors).toEqual([]);
        expect(visit.requests).toEqual([]);
      });

      it('per group and figure: a drawn chart with the median of each path and a dot for every round', () => {
        for (const g of report.groups)
          for (const f of g.figures) {
            const c = visit.charts.find((x) => x.group === g.id && x.figure === f.key);
            expect(c, `${g.id} ${f.key}`).toBeDefined();
            expect(c!.datasets).toEqual([
              { label: 'median', type: 'bar', points: g.paths.length },
              { label: 'each round', type: 'scatter', points: g.rounds.filter((r) => r.values[f.key] !== undefined).length },
            ]);
            // axes, labels, bars and dots: well above an empty or axes-only canvas
            expect(c!.paintedPixels / c!.totalPixels, c!.canvas).toBeGreaterThan(0.1);
          }
      });

      it('per group: a drawn chart of the ratios against the baseline path', () => {
        for (const g of report.groups) {
          const c = visit.charts.find((x) => x.group === g.id && x.kind === 'ratio');
          expect(c, g.id).toBeDefined();
          expect(c!.datasets.map((d) => d.label)).toEqual(g.paths.map((p) => p.label));
          for (const d of c!.datasets) expect(d.points).toBe(g.figures.length);
          expect(c!.paintedPixels / c!.totalPixels, c!.canvas).toBeGreaterThan(0.1);
        }
        const figures = report.groups.reduce((n, g) => n + g.figures.length + 1, 0);
        expect(visit.charts).toHaveLength(figures);
        expect(visit.canvases).toBe(figures);
      });

      it('a full-page screenshot', () => {
        const head = fs.readFileSync(png).subarray(0, 8);
        expect(head.toString('hex')).toBe('89504e470d0a1a0a');
        expect(fs.statSync(png).size).toBeGreaterThan(50_000);
      });
    },
  );
});
