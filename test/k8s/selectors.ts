/**
 * Label and field selectors: parsed from a request's query, matched against stored objects.
 * Pure functions; a selector that does not parse is a 400 `HttpError`.
 */
import { HttpError } from './http.js';
import { isPlainObject } from './json.js';
import type { ApiObject } from './resources.js';

export interface FieldReq {
  field: string;
  op: '=' | '!=';
  value: string;
}
export interface LabelReq {
  key: string;
  op: '=' | '!=' | 'exists' | '!exists' | 'in' | 'notin';
  values: string[];
}
/** what a list or watch selects: a namespace (a namespaced path), field and label requirements */
export interface Selectors {
  ns?: string;
  fields: FieldReq[];
  labels: LabelReq[];
}

/** split on commas that are not inside parentheses */
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

export function parseLabelSelector(s: string | null): LabelReq[] {
  if (!s) return [];
  return splitTerms(s).map((term) => {
    const bad = () => new HttpError(400, 'BadRequest', `unable to parse requirement: invalid label selector "${s}"`);
    let m = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(term);
    if (m) {
      const values = m[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      if (!LABEL_KEY.test(m[1]!)) throw bad();
      return { key: m[1]!, op: m[2] as 'in' | 'notin', values };
    }
    if (term.startsWith('!')) {
      const key = term.slice(1).trim();
      if (!LABEL_KEY.test(key)) throw bad();
      return { key, op: '!exists', values: [] };
    }
    m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term);
    if (m) {
      if (!LABEL_KEY.test(m[1]!)) throw bad();
      return { key: m[1]!, op: m[2] === '!=' ? '!=' : '=', values: [m[3]!] };
    }
    if (!LABEL_KEY.test(term)) throw bad();
    return { key: term, op: 'exists', values: [] };
  });
}

export function parseFieldSelector(s: string | null): FieldReq[] {
  if (!s) return [];
  return splitTerms(s).map((term) => {
    const m = /^([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector: '${term}'`);
    return { field: m[1]!, op: m[2] === '!=' ? '!=' : '=', value: m[3]!.trim() };
  });
}

/** the selectors of a list or watch request: its path's namespace, `fieldSelector` and `labelSelector` */
export function requestSelectors(ns: string | undefined, q: URLSearchParams): Selectors {
  return {
    ns,
    fields: parseFieldSelector(q.get('fieldSelector')),
    labels: parseLabelSelector(q.get('labelSelector')),
  };
}

/** a field's value as a field selector compares it: a string, '' when absent */
function fieldValue(obj: ApiObject, field: string): string {
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (!isPlainObject(cur)) return '';
    cur = cur[part];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'string' ? cur : String(cur);
}

export function matches(obj: ApiObject, sel: Selectors): boolean {
  if (sel.ns !== undefined && obj.metadata.namespace !== sel.ns) return false;
  for (const f of sel.fields) {
    const v = fieldValue(obj, f.field);
    if ((v === f.value) !== (f.op === '=')) return false;
  }
  if (sel.labels.length > 0) {
    const labels = obj.metadata.labels ?? {};
    for (const l of sel.labels) {
      const has = Object.prototype.hasOwnProperty.call(labels, l.key);
      const v = labels[l.key];
      switch (l.op) {
        case '=':
          if (v !== l.values[0]) return false;
          break;
        case '!=':
          if (v === l.values[0]) return false;
          break;
        case 'exists':
          if (!has) return false;
          break;
        case '!exists':
          if (has) return false;
          break;
        case 'in':
          if (v === undefined || !l.values.includes(v)) return false;
          break;
        case 'notin':
          if (v !== undefined && l.values.includes(v)) return false;
          break;
      }
    }
  }
  return true;
}
