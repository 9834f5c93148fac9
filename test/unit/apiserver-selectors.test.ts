// The API server double's label and field selectors (test/k8s/selectors.ts) as
// pure functions: what each syntax parses to, what it refuses, what it matches.
import { describe, expect, it } from 'vitest';
import { HttpError } from '../k8s/http.js';
import type { ApiObject } from '../k8s/resources.js';
import { matches, parseFieldSelector, parseLabelSelector, requestSelectors, type Selectors } from '../k8s/selectors.js';

const pod = (ns: string, labels: Record<string, string> | undefined, spec: Record<string, unknown> = {}): ApiObject => ({
  metadata: { name: 'p', namespace: ns, ...(labels ? { labels } : {}) },
  spec,
});
/** an HttpError with this status code whose message matches (a string: contains) */
const bad = (code: number, message: RegExp | string) =>
  expect.objectContaining({
    code,
    reason: 'BadRequest',
    message: typeof message === 'string' ? expect.stringContaining(message) : expect.stringMatching(message),
  });
const sel = (labels: string | null, fields: string | null = null, ns?: string): Selectors => ({
  ns,
  labels: parseLabelSelector(labels),
  fields: parseFieldSelector(fields),
});

describe('label selector parser', () => {
  it('parses every operator, with or without spaces', () => {
    expect(parseLabelSelector('a=1, b == 2,c!=3')).toEqual([
      { key: 'a', op: '=', values: ['1'] },
      { key: 'b', op: '=', values: ['2'] },
      { key: 'c', op: '!=', values: ['3'] },
    ]);
    expect(parseLabelSelector('app.kubernetes.io/name,! podwarp.io/off')).toEqual([
      { key: 'app.kubernetes.io/name', op: 'exists', values: [] },
      { key: 'podwarp.io/off', op: '!exists', values: [] },
    ]);
    expect(parseLabelSelector('a=')).toEqual([{ key: 'a', op: '=', values: [''] }]);
  });

  it('keeps the commas of a set inside its term', () => {
    expect(parseLabelSelector('env in (prod, staging ,),tier notin(web),x')).toEqual([
      { key: 'env', op: 'in', values: ['prod', 'staging'] },
      { key: 'tier', op: 'notin', values: ['web'] },
      { key: 'x', op: 'exists', values: [] },
    ]);
  });

  it('selects everything when absent or empty', () => {
    expect(parseLabelSelector(null)).toEqual([]);
    expect(parseLabelSelector('')).toEqual([]);
    expect(parseLabelSelector(' , ')).toEqual([]);
  });

  it('refuses a malformed requirement with 400, naming the selector', () => {
    for (const s of ['-a=b', 'a=b,-c', '!-x', 'env in (prod', 'a b', 'a in (x),.b notin (y)']) {
      expect(() => parseLabelSelector(s), s).toThrow(HttpError);
      expect(() => parseLabelSelector(s), s).toThrow(bad(400, `invalid label selector "${s}"`));
    }
  });
});

describe('field selector parser', () => {
  it('parses =, == and != with dotted fields and trimmed values', () => {
    expect(parseFieldSelector('spec.nodeName= n1 ,metadata.name!=x,status.phase==Running')).toEqual([
      { field: 'spec.nodeName', op: '=', value: 'n1' },
      { field: 'metadata.name', op: '!=', value: 'x' },
      { field: 'status.phase', op: '=', value: 'Running' },
    ]);
    expect(parseFieldSelector(null)).toEqual([]);
  });

  it('refuses a term without an operator with 400', () => {
    expect(() => parseFieldSelector('spec.nodeName=n1,bad')).toThrow(bad(400, /^invalid field selector: 'bad'$/));
    expect(() => parseFieldSelector('spec/x=1')).toThrow(bad(400, /invalid field selector/));
  });
});

describe('selector matching', () => {
  const a = pod('ns1', { app: 'web', tier: 'front' }, { nodeName: 'n1', replicas: 3 });
  const b = pod('ns2', undefined, {});

  it('restricts to the namespace of a namespaced path', () => {
    expect(matches(a, sel(null, null, 'ns1'))).toBe(true);
    expect(matches(a, sel(null, null, 'ns2'))).toBe(false);
    expect(matches(b, sel(null, null))).toBe(true);
  });

  it('compares fields as strings, an absent field as the empty string', () => {
    expect(matches(a, sel(null, 'spec.nodeName=n1'))).toBe(true);
    expect(matches(a, sel(null, 'spec.nodeName!=n1'))).toBe(false);
    expect(matches(a, sel(null, 'spec.replicas=3'))).toBe(true);
    expect(matches(a, sel(null, 'metadata.namespace=ns1,metadata.name=p'))).toBe(true);
    expect(matches(b, sel(null, 'spec.nodeName='))).toBe(true);
    expect(matches(b, sel(null, 'spec.nodeName!='))).toBe(false);
    expect(matches(b, sel(null, 'spec.nodeName.x=1'))).toBe(false);
  });

  it('applies each label operator, an absent label included', () => {
    const cases: [string, boolean, boolean][] = [
      // selector, matches a (app=web, tier=front), matches b (no labels)
      ['app=web', true, false],
      ['app=db', false, false],
      ['app!=db', true, true],
      ['app!=web', false, true],
      ['app', true, false],
      ['!app', false, true],
      ['app in (db,web)', true, false],
      ['app in (db)', false, false],
      ['app notin (db)', true, true],
      ['app notin (web)', false, true],
      ['app=web,tier=back', false, false],
      ['app=web,tier in (front)', true, false],
    ];
    for (const [s, wantA, wantB] of cases) {
      expect([matches(a, sel(s)), matches(b, sel(s))], s).toEqual([wantA, wantB]);
    }
  });

  it('reads a request: the path namespace and both query selectors', () => {
    const q = new URLSearchParams({ labelSelector: 'app=web', fieldSelector: 'spec.nodeName=n1' });
    const s = requestSelectors('ns1', q);
    expect(s).toEqual({
      ns: 'ns1',
      labels: [{ key: 'app', op: '=', values: ['web'] }],
      fields: [{ field: 'spec.nodeName', op: '=', value: 'n1' }],
    });
    expect(matches(a, s)).toBe(true);
    expect(matches(pod('ns1', { app: 'web' }, { nodeName: 'n2' }), s)).toBe(false);
    expect(() => requestSelectors(undefined, new URLSearchParams({ labelSelector: '-x' }))).toThrow(bad(400, /label selector/));
  });
});
