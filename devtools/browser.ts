// The bench report in headless Chromium (Debian's chromium package, driven by
// playwright-core): what the page drew, what it complained about, whether it
// asked the network for anything, and a screenshot. Used by the report test
// and `podwarp-dev bench --png`.
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import { scaled } from './slowdown.js';

export const CHROMIUM = process.env.PODWARP_CHROMIUM ?? '/usr/bin/chromium';

export const hasChromium = (): boolean => fs.existsSync(CHROMIUM);

/** What one chart holds and how much of its canvas is painted. */
export interface DrawnChart {
  group: string;
  figure: string;
  kind: 'rounds' | 'ratio';
  canvas: string;
  datasets: { label: string; type: string; points: number }[];
  /** canvas pixels that are not transparent */
  paintedPixels: number;
  totalPixels: number;
}

export interface PageVisit {
  charts: DrawnChart[];
  /** console messages of type error, and uncaught page errors */
  errors: string[];
  /** every request other than the report file itself */
  requests: string[];
  /** canvas elements on the page (with or without a chart) */
  canvases: number;
}

/** Opens `htmlFile`, waits until the page script marked it ready, collects, optionally screenshots; the browser is always closed. */
export async function visitReport(htmlFile: string, o: { png?: string; width?: number } = {}): Promise<PageVisit> {
  if (!hasChromium())
    throw new Error(`no Chromium at ${CHROMIUM}: bash scripts/setup-browser.sh installs Debian's (or set PODWARP_CHROMIUM)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: scaled(180_000),
    // root without a user namespace sandbox; and no background traffic to hosts this machine cannot reach
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: o.width ?? 1280, height: 900 } });
    // playwright's 30 s for navigation and waits: × PODWARP_TEST_SLOWDOWN (Chromium under TCG loaded the page in more)
    page.setDefaultTimeout(scaled(30_000));
    const url = pathToFileURL(htmlFile).href;
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (r) => {
      if (r.url() !== url) requests.push(r.url());
    });
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForSelector('body[data-ready="true"]', { timeout: scaled(15_000) });
    const visit: PageVisit = { charts: await drawnCharts(page), errors, requests, canvases: await page.locator('canvas').count() };
    if (o.png) await page.screenshot({ path: o.png, fullPage: true });
    return visit;
  } finally {
    await browser.close();
  }
}

function drawnCharts(page: Page): Promise<DrawnChart[]> {
  return page.evaluate(() => {
    interface Entry {
      group: string;
      figure: string;
      kind: 'rounds' | 'ratio';
      canvas: string;
      chart: { data: { datasets: { label: string; type?: string; data: unknown[] }[] }; config: { type: string } };
    }
    const charts = (window as unknown as { podwarpCharts: Entry[] }).podwarpCharts;
    return charts.map((c) => {
      const el = document.getElementById(c.canvas) as HTMLCanvasElement;
      const px = el.getContext('2d')!.getImageData(0, 0, el.width, el.height).data;
      let painted = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) painted++;
      return {
        group: c.group,
        figure: c.figure,
        kind: c.kind,
        canvas: c.canvas,
        datasets: c.chart.data.datasets.map((d) => ({ label: d.label, type: d.type ?? c.chart.config.type, points: d.data.length })),
        paintedPixels: painted,
        totalPixels: el.width * el.height,
      };
    });
  });
}
