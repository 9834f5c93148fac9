// deploy/prometheus/podwarp-alerts.yaml: every alert reads only series the
// agent exports (or Prometheus' own `up` of its scrape), with labels those
// series have; every annotation's {{ $labels.x }} is a label of the alert's
// result; each alert has a severity, a summary and a description, and the
// chart ships this very file.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { COUNTED_MAPS } from '../../loader/maps.js';
import { agentFamilies, checkExpr, type Family } from './promql.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FILE = 'deploy/prometheus/podwarp-alerts.yaml';

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (YAML.parse(fs.readFileSync(path.join(ROOT, FILE), 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap(
  (g) => g.rules,
);

let families: Map<string, Family>;
beforeAll(async () => {
  families = await agentFamilies();
  // Prometheus writes `up` for every target it scrapes
  families.set('up', { name: 'up', type: 'gauge', labels: [], values: new Map() });
});

/** Problems of one alert (empty: fine). */
function check(r: Rule): string[] {
  const { problems, labels } = checkExpr(r.expr, families);
  const out = problems.map((p) => `${r.alert}: ${p}`);
  // the operator adds namespace to every series of a ServiceMonitor's targets
  for (const [k, text] of Object.entries(r.annotations ?? {}))
    for (const m of text.matchAll(/\$labels\.(\w+)/g))
      if (!labels.has(m[1]!) && !(m[1] === 'namespace' && !/\b(sum|max|min|avg|count) by \(/.test(r.expr)))
        out.push(`${r.alert}: annotation ${k} names $labels.${m[1]}, not a label of the result`);
  if (!r.labels?.severity || !['info', 'warning', 'critical'].includes(r.labels.severity)) out.push(`${r.alert}: no severity`);
  if (!r.annotations?.summary || !r.annotations.description) out.push(`${r.alert}: summary and description wanted`);
  if (!r.for) out.push(`${r.alert}: no for: a single scrape would page`);
  return out;
}

describe(FILE, () => {
  it('has the alerts users act on, each named once', () => {
    const names = rules.map((r) => r.alert);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(
      expect.arrayContaining([
        'PodwarpAgentDown',
        'PodwarpPolicyApiUnavailable',
        'PodwarpPodsFailingToAttach',
        'PodwarpDatapathDegraded',
        'PodwarpServiceMapsFull',
        'PodwarpMapNearCapacity',
        'PodwarpReverseTranslationLost',
      ]),
    );
  });

  it('map fill: an alert per LRU map near its size, and one when a live connection lost its reverse translation', () => {
    const near = rules.find((r) => r.alert === 'PodwarpMapNearCapacity')!;
    expect(near.expr).toMatch(/^max by \(node, map\) \(podwarp_map_entries \/ podwarp_map_max_entries\) > 0\.\d+$/);
    expect(families.get('podwarp_map_entries')!.values.get('map')).toEqual(new Set(COUNTED_MAPS));
    const lost = rules.find((r) => r.alert === 'PodwarpReverseTranslationLost')!;
    expect(lost.expr).toContain('reason="revnat_evicted"');
  });

  it('reads only exported series and labels; annotations name only labels the result keeps', () => {
    expect(rules.flatMap(check)).toEqual([]);
  });

  it('the check fails on mistakes', () => {
    const bad: Rule[] = [
      {
        alert: 'Typo',
        expr: 'max by (node) (podwarp_lock_hold) == 0',
        for: '5m',
        labels: { severity: 'warning' },
        annotations: { summary: 's', description: 'd' },
      },
      {
        alert: 'Dropped',
        expr: 'max by (node) (podwarp_services_dropped) > 0',
        for: '5m',
        labels: { severity: 'warning' },
        annotations: { summary: '{{ $labels.reason }}', description: 'd' },
      },
      { alert: 'Bare', expr: 'podwarp_lock_held == 0' },
      {
        alert: 'NoSuchMap',
        expr: 'max by (node) (podwarp_map_entries{map="pw_nope"} / podwarp_map_max_entries) > 0.9',
        for: '5m',
        labels: { severity: 'warning' },
        annotations: { summary: '{{ $labels.map }}', description: 'd' },
      },
    ];
    const problems = bad.flatMap(check);
    expect(problems).toContain('Typo: podwarp_lock_hold: not a series the agent exports');
    expect(problems).toContain('Dropped: annotation summary names $labels.reason, not a label of the result');
    expect(problems).toContain('NoSuchMap: podwarp_map_entries: map="pw_nope" is never exported');
    expect(problems).toContain('NoSuchMap: annotation summary names $labels.map, not a label of the result');
    expect(problems).toEqual(
      expect.arrayContaining(['Bare: no severity', 'Bare: summary and description wanted', 'Bare: no for: a single scrape would page']),
    );
  });

  it('is the file the Helm chart ships (a symlink, not a copy)', () => {
    const chartCopy = path.join(ROOT, 'deploy/helm/podwarp/prometheus/podwarp-alerts.yaml');
    expect(fs.lstatSync(chartCopy).isSymbolicLink()).toBe(true);
    expect(fs.realpathSync(chartCopy)).toBe(fs.realpathSync(path.join(ROOT, FILE)));
  });
});
