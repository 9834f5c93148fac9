// deploy/grafana/podwarp-dashboard.json: every query names only series the
// agent exports (the list comes from src/metrics.ts' registry, instantiated
// here), with labels those series have; histogram_quantile reads _bucket
// series of real histograms. A broken fixture proves the check fails.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { STAT_GROUPS } from '../../abi/schema.js';
import { agentFamilies as exported, checkDashboard, checkExpr, type Family } from './promql.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const readJson = (rel: string) => JSON.parse(fs.readFileSync(path.join(ROOT, rel), 'utf8')) as Record<string, unknown>;

let families: Map<string, Family>;
beforeAll(async () => {
  families = await exported();
});

describe('the metrics the check knows', () => {
  it('come from the registry: histograms, counters, the datapath gauges with every program and reason', () => {
    expect(families.get('podwarp_change_to_maps_seconds')?.type).toBe('histogram');
    expect(families.get('podwarp_errors_total')?.labels).toEqual(['reason']);
    const programs = families.get('podwarp_datapath_bytes_total')?.values.get('program');
    expect([...(programs ?? [])].sort()).toEqual(STAT_GROUPS.map((g) => g.prog).sort());
  });
});

describe('deploy/grafana/podwarp-dashboard.json', () => {
  const dash = readJson('deploy/grafana/podwarp-dashboard.json');

  it('queries only exported series and labels', () => {
    expect(checkDashboard(dash, families)).toEqual([]);
  });

  it('uses a ${datasource} variable everywhere and the node variable (the ServiceMonitor sets node) in every query', () => {
    const vars = (dash.templating as { list: { name: string; type: string; query: unknown }[] }).list;
    expect(vars.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.find((v) => v.name === 'node')?.type).toBe('query');
    expect(vars.map((v) => v.name)).not.toContain('instance');
    type P = { type: string; title: string; datasource?: { uid: string }; targets?: { expr: string; datasource?: { uid: string } }[] };
    const panels = (dash.panels as P[]).filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThan(10);
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      for (const t of p.targets ?? []) {
        expect(t.datasource?.uid, p.title).toBe('${datasource}');
        expect(t.expr, p.title).toContain('node=~"$node"');
        expect(t.expr, p.title).not.toContain('instance');
      }
    }
  });

  it("has a panel for every metric of the agent's own (the process and runtime ones aside)", () => {
    const exprs = (dash.panels as { targets?: { expr: string }[] }[]).flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    const own = [...families.keys()].filter((n) => !/^podwarp_(process_|nodejs_)/.test(n));
    expect(own.length).toBeGreaterThan(15);
    expect(own.filter((n) => !new RegExp(`\\b${n}(_bucket|_sum|_count)?\\b`).test(exprs))).toEqual([]);
  });

  it('has unique panel ids and a fixed uid (import twice = the same dashboard)', () => {
    const ids = (dash.panels as { id: number }[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dash.uid).toBe('podwarp-agent');
  });

  it('is the file the Helm chart ships (a symlink, not a copy)', () => {
    const chartCopy = path.join(ROOT, 'deploy/helm/podwarp/dashboards/podwarp-dashboard.json');
    expect(fs.lstatSync(chartCopy).isSymbolicLink()).toBe(true);
    expect(fs.realpathSync(chartCopy)).toBe(fs.realpathSync(path.join(ROOT, 'deploy/grafana/podwarp-dashboard.json')));
  });
});

describe('the check fails on mistakes', () => {
  it('finds every mistake of the broken fixture, and passes its one good panel', () => {
    const problems = checkDashboard(readJson('test/unit/fixtures/dashboard-broken.json'), families);
    const about = (title: string) => problems.filter((p) => p.startsWith(`panel "${title}"`));
    expect(about('misspelled metric')).toEqual(['panel "misspelled metric": podwarp_datapth_events: not a series the agent exports']);
    expect(about('misspelled label')).toEqual(['panel "misspelled label": sum by (reasn): the series aggregated have no label reasn']);
    expect(about('misspelled matcher')[0]).toMatch(/podwarp_endpoints: no label sate/);
    expect(about('unknown program')).toEqual(['panel "unknown program": podwarp_datapath_events_total: program="pw_tc" is never exported']);
    expect(about('quantile of a counter')).toContain(
      'panel "quantile of a counter": histogram_quantile reads podwarp_errors_total, not the _bucket series of a histogram',
    );
    expect(about('quantile without le')).toEqual(['panel "quantile without le": histogram_quantile: its argument drops the le label']);
    expect(about('bucket of a gauge')).toEqual(['panel "bucket of a gauge": podwarp_endpoints_bucket: not a series the agent exports']);
    expect(about('legend label dropped')).toEqual(['panel "legend label dropped": legend {{reason}} is not a label of the result']);
    expect(about('fine')).toEqual([]);
    expect(problems).toContain('variable node: podwarp_sync_duration_seconds_count has no label nodename');
  });

  it('rejects what it cannot read instead of passing it', () => {
    expect(checkExpr('label_replace(podwarp_endpoints, "a", "$1", "state", "(.*)")', families).problems[0]).toMatch(
      /not one this check knows/,
    );
    expect(checkExpr('sum(podwarp_endpoints', families).problems[0]).toMatch(/cannot parse/);
  });
});
