// The API server double's PATCH logic (test/k8s/patch.ts) as pure functions:
// which Content-Types it takes, merge patch, JSON patch operation by operation,
// and the failures a client sees (4xx with the reason), the input never changed.
import { describe, expect, it } from 'vitest';
import { HttpError } from '../k8s/http.js';
import { applyPatch, jsonPatch, mergePatch, patchType } from '../k8s/patch.js';

/** an HttpError with this code and reason whose message contains text */
const refused = (code: number, reason: string, text: string) =>
  expect.objectContaining({ code, reason, message: expect.stringContaining(text) });

const ns = () => ({
  metadata: { name: 'a', labels: { x: '1', y: '2' }, annotations: { 'a/b': 'c', 'd~e': 'f' } },
  spec: { finalizers: ['kubernetes', 'other'] },
});

describe('patch Content-Type', () => {
  it('takes the three patch types, ignoring parameters and case', () => {
    expect(patchType('application/merge-patch+json')).toBe('application/merge-patch+json');
    expect(patchType('Application/Strategic-Merge-Patch+JSON; charset=utf-8')).toBe('application/strategic-merge-patch+json');
    expect(patchType(' application/json-patch+json ;x=y')).toBe('application/json-patch+json');
  });

  it('answers any other type with 415 listing the accepted ones', () => {
    for (const ct of ['application/json', 'application/apply-patch+yaml', '']) {
      expect(() => patchType(ct), ct).toThrow(HttpError);
      expect(() => patchType(ct), ct).toThrow(
        refused(415, 'UnsupportedMediaType', 'application/json-patch+json, application/merge-patch+json'),
      );
    }
  });
});

describe('merge patch', () => {
  it('merges objects key by key, null removes, anything else replaces', () => {
    const doc = ns();
    const out = mergePatch(doc, { metadata: { labels: { x: null, z: '3' } }, spec: { finalizers: ['only'] }, status: { phase: 'Active' } });
    expect(out).toEqual({
      metadata: { name: 'a', labels: { y: '2', z: '3' }, annotations: { 'a/b': 'c', 'd~e': 'f' } },
      spec: { finalizers: ['only'] },
      status: { phase: 'Active' },
    });
    expect(doc).toEqual(ns());
  });

  it('replaces a non-object target and copies the values it takes from the patch', () => {
    const patch = { spec: { ports: [{ port: 80 }] } };
    const out = mergePatch({ spec: 'string' }, patch) as typeof patch;
    expect(out).toEqual({ spec: { ports: [{ port: 80 }] } });
    out.spec.ports[0]!.port = 81;
    expect(patch.spec.ports[0]!.port).toBe(80);
    expect(mergePatch({ a: 1 }, 'x')).toBe('x');
  });

  it('applies strategic merge patch as a merge patch (a list is replaced whole) and refuses a body that is not an object', () => {
    expect(applyPatch('application/strategic-merge-patch+json', ns(), { spec: { finalizers: ['kubernetes'] } })).toMatchObject({
      spec: { finalizers: ['kubernetes'] },
    });
    for (const t of ['application/merge-patch+json', 'application/strategic-merge-patch+json'] as const) {
      expect(() => applyPatch(t, ns(), [{ op: 'remove', path: '/spec' }]), t).toThrow(refused(400, 'BadRequest', 'must be a JSON object'));
    }
  });
});

describe('JSON patch', () => {
  it('adds to objects and arrays (index, "-"), removes, replaces, in order', () => {
    const doc = ns();
    const out = jsonPatch(doc, [
      { op: 'add', path: '/metadata/labels/z', value: '3' },
      { op: 'add', path: '/spec/finalizers/1', value: 'mid' },
      { op: 'add', path: '/spec/finalizers/-', value: 'last' },
      { op: 'remove', path: '/metadata/labels/x' },
      { op: 'replace', path: '/spec/finalizers/0', value: 'first' },
      { op: 'replace', path: '/metadata/labels/y', value: '20' },
    ]);
    expect(out).toEqual({
      metadata: { name: 'a', labels: { y: '20', z: '3' }, annotations: { 'a/b': 'c', 'd~e': 'f' } },
      spec: { finalizers: ['first', 'mid', 'other', 'last'] },
    });
    expect(doc).toEqual(ns());
  });

  it('decodes ~1 and ~0 in pointers and replaces the root with the empty path', () => {
    const out = jsonPatch(ns(), [
      { op: 'remove', path: '/metadata/annotations/a~1b' },
      { op: 'replace', path: '/metadata/annotations/d~0e', value: 'g' },
    ]) as ReturnType<typeof ns>;
    expect(out.metadata.annotations).toEqual({ 'd~e': 'g' });
    expect(jsonPatch(ns(), [{ op: 'replace', path: '', value: { kind: 'Other' } }])).toEqual({ kind: 'Other' });
  });

  it('moves and copies; a copy is not shared with its source', () => {
    expect(jsonPatch(ns(), [{ op: 'move', from: '/metadata/labels', path: '/spec/labels' }])).toEqual({
      metadata: { name: 'a', annotations: { 'a/b': 'c', 'd~e': 'f' } },
      spec: { finalizers: ['kubernetes', 'other'], labels: { x: '1', y: '2' } },
    });
    const out = jsonPatch(ns(), [
      { op: 'copy', from: '/metadata/labels', path: '/spec/labels' },
      { op: 'replace', path: '/metadata/labels/x', value: 'changed' },
    ]) as { metadata: { labels: object }; spec: { labels: object } };
    expect(out.metadata.labels).toEqual({ x: 'changed', y: '2' });
    expect(out.spec.labels).toEqual({ x: '1', y: '2' });
  });

  it('test passes on a deep-equal value and fails the whole patch otherwise, the document unchanged', () => {
    const ok = [
      { op: 'test', path: '/spec/finalizers', value: ['kubernetes', 'other'] },
      { op: 'test', path: '/metadata/labels', value: { y: '2', x: '1' } },
      { op: 'add', path: '/metadata/labels/t', value: 'yes' },
    ];
    expect(jsonPatch(ns(), ok)).toMatchObject({ metadata: { labels: { t: 'yes' } } });
    const doc = ns();
    const failing = [
      { op: 'remove', path: '/metadata/labels/x' },
      { op: 'test', path: '/metadata/labels/y', value: '3' },
    ];
    expect(() => jsonPatch(doc, failing)).toThrow(refused(422, 'Invalid', 'json patch: test failed at /metadata/labels/y'));
    expect(doc).toEqual(ns());
  });

  it('refuses what does not apply with 422 (400 when the body is not a list), saying why', () => {
    const cases: [unknown, ReturnType<typeof refused>][] = [
      [{ op: 'add', path: '/a' }, refused(400, 'BadRequest', 'must be an array of operations')],
      [[{ op: 'remove', path: '/metadata/labels/nope' }], refused(422, 'Invalid', 'path not found: /metadata/labels/nope')],
      [[{ op: 'replace', path: '/spec/finalizers/2', value: 'x' }], refused(422, 'Invalid', 'path not found: /spec/finalizers/2')],
      [[{ op: 'add', path: '/spec/finalizers/3', value: 'x' }], refused(422, 'Invalid', 'invalid array index: 3')],
      [[{ op: 'add', path: '/no/such', value: 'x' }], refused(422, 'Invalid', 'path not found: /no')],
      [[{ op: 'add', path: '/metadata/name/x', value: 'x' }], refused(422, 'Invalid', 'cannot add to non-container at /metadata/name/x')],
      [[{ op: 'add', path: '/a' }], refused(422, 'Invalid', 'add requires "value"')],
      [[{ op: 'replace', path: '/metadata' }], refused(422, 'Invalid', 'replace requires "value"')],
      [[{ op: 'remove', path: '' }], refused(422, 'Invalid', 'cannot remove the root')],
      [[{ op: 'remove', path: 'metadata' }], refused(422, 'Invalid', 'invalid JSON pointer: "metadata"')],
      [[{ op: 'copy', from: 7, path: '/a' }], refused(422, 'Invalid', 'invalid JSON pointer: 7')],
      [[{ op: 'merge', path: '/a' }], refused(422, 'Invalid', 'unsupported op merge')],
      [[{ path: '/a' }], refused(422, 'Invalid', 'operation must be an object with "op"')],
      [['remove'], refused(422, 'Invalid', 'operation must be an object with "op"')],
    ];
    for (const [ops, want] of cases) {
      const doc = ns();
      expect(() => applyPatch('application/json-patch+json', doc, ops), JSON.stringify(ops)).toThrow(want);
      expect(doc).toEqual(ns());
    }
  });
});
