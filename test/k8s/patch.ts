/**
 * PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic
 * merge patch, which the double applies as a merge patch (it knows no patch
 * strategies: a list in the patch replaces the list). Pure functions; a patch
 * that does not apply is a 4xx `HttpError`.
 */
import { HttpError } from './http.js';
import { clone, deepEqual, isPlainObject } from './json.js';

export type PatchType = 'application/merge-patch+json' | 'application/strategic-merge-patch+json' | 'application/json-patch+json';
const PATCH_TYPES: readonly string[] = [
  'application/merge-patch+json',
  'application/strategic-merge-patch+json',
  'application/json-patch+json',
];

/** the patch type a Content-Type header names (parameters and case ignored); anything else is a 415 */
export function patchType(contentType: string): PatchType {
  const ct = contentType.split(';')[0]!.trim().toLowerCase();
  if (!PATCH_TYPES.includes(ct)) {
    throw new HttpError(
      415,
      'UnsupportedMediaType',
      `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`,
    );
  }
  return ct as PatchType;
}

/** doc with the patch applied; doc itself is not changed */
export function applyPatch(type: PatchType, doc: unknown, body: unknown): unknown {
  if (type === 'application/json-patch+json') return jsonPatch(doc, body);
  if (!isPlainObject(body)) throw new HttpError(400, 'BadRequest', 'merge patch body must be a JSON object');
  return mergePatch(doc, body);
}

/** RFC 7386: objects merge key by key, null removes a key, anything else replaces */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return clone(patch);
  const result: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else result[k] = mergePatch(result[k], v);
  }
  return result;
}

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string' || (p !== '' && !p.startsWith('/'))) {
    throw new HttpError(422, 'Invalid', `invalid JSON pointer: ${JSON.stringify(p)}`);
  }
  if (p === '') return [];
  return p
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** RFC 6902: add, remove, replace, test, move, copy, in order, on a copy of doc; the first that fails fails the patch */
export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) {
    throw new HttpError(400, 'BadRequest', 'json patch must be an array of operations');
  }
  let root: unknown = clone(doc);
  const fail = (msg: string) => new HttpError(422, 'Invalid', `json patch: ${msg}`);

  const getAt = (tokens: string[]): unknown => {
    let cur: unknown = root;
    for (const t of tokens) {
      if (Array.isArray(cur)) {
        const i = Number(t);
        if (!/^\d+$/.test(t) || i >= cur.length) throw fail(`path not found: /${tokens.join('/')}`);
        cur = cur[i];
      } else if (isPlainObject(cur)) {
        if (!Object.prototype.hasOwnProperty.call(cur, t)) throw fail(`path not found: /${tokens.join('/')}`);
        cur = cur[t];
      } else throw fail(`path not found: /${tokens.join('/')}`);
    }
    return cur;
  };
  const add = (tokens: string[], value: unknown) => {
    if (tokens.length === 0) {
      root = clone(value);
      return;
    }
    const parent = getAt(tokens.slice(0, -1));
    const last = tokens[tokens.length - 1]!;
    if (Array.isArray(parent)) {
      if (last === '-') parent.push(clone(value));
      else {
        const i = Number(last);
        if (!/^\d+$/.test(last) || i > parent.length) throw fail(`invalid array index: ${last}`);
        parent.splice(i, 0, clone(value));
      }
    } else if (isPlainObject(parent)) parent[last] = clone(value);
    else throw fail(`cannot add to non-container at /${tokens.join('/')}`);
  };
  const remove = (tokens: string[]): unknown => {
    if (tokens.length === 0) throw fail('cannot remove the root');
    const value = getAt(tokens);
    const parent = getAt(tokens.slice(0, -1));
    const last = tokens[tokens.length - 1]!;
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else if (isPlainObject(parent)) delete parent[last];
    return value;
  };

  for (const op of ops) {
    if (!isPlainObject(op) || typeof op.op !== 'string') throw fail('operation must be an object with "op"');
    const p = parsePointer(op.path);
    switch (op.op) {
      case 'add':
        if (!('value' in op)) throw fail('add requires "value"');
        add(p, op.value);
        break;
      case 'remove':
        remove(p);
        break;
      case 'replace':
        if (!('value' in op)) throw fail('replace requires "value"');
        getAt(p);
        if (p.length === 0) root = clone(op.value);
        else {
          remove(p);
          add(p, op.value);
        }
        break;
      case 'test':
        if (!deepEqual(getAt(p), op.value)) throw fail(`test failed at ${String(op.path)}`);
        break;
      case 'move': {
        const v = remove(parsePointer(op.from));
        add(p, v);
        break;
      }
      case 'copy':
        add(p, getAt(parsePointer(op.from)));
        break;
      default:
        throw fail(`unsupported op ${op.op}`);
    }
  }
  return root;
}
