// A small PromQL reader for checking dashboards against the metrics the agent
// exports: which series an expression selects, with which label matchers,
// what `by (…)` keeps, what histogram_quantile reads. Not a full PromQL
// parser: it knows the subset a dashboard uses and reports anything else as
// an error, so an unsupported expression fails the check instead of passing.
import { AgentMetrics } from '../../src/metrics.js';
import type { Datapath } from '../../loader/datapath.js';

/** One exported metric family: name, type, label names, label values seen. */
export interface Family {
  name: string;
  type: string;
  labels: string[];
  /** label → values seen in a scrape (only labels whose values are a fixed set) */
  values: Map<string, Set<string>>;
}

/**
 * Labels every scraped series carries: Prometheus' instance and job, and the
 * node name the chart's ServiceMonitor writes from __meta_kubernetes_pod_node_name.
 */
export const TARGET_LABELS = ['instance', 'job', 'node'];

type Node =
  | { k: 'sel'; metric: string; matchers: { label: string; op: string; value: string }[] }
  | { k: 'num' }
  | { k: 'str' }
  | { k: 'call'; fn: string; args: Node[] }
  | { k: 'agg'; fn: string; mode: 'by' | 'without' | undefined; labels: string[]; args: Node[] }
  | { k: 'bin'; items: Node[] };

const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'group']);
/** functions whose output keeps the labels of their (last) vector argument */
const FUNCTIONS = new Set([
  'rate',
  'irate',
  'increase',
  'delta',
  'idelta',
  'deriv',
  'abs',
  'ceil',
  'floor',
  'round',
  'clamp_min',
  'clamp_max',
  'max_over_time',
  'min_over_time',
  'avg_over_time',
  'last_over_time',
  'resets',
  'changes',
  'histogram_quantile',
]);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless']);

/** Grafana's interval variables, replaced by a duration before parsing. */
export function expandGrafanaVars(expr: string): string {
  return expr.replace(/\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g, '5m');
}

function tokenize(expr: string): string[] {
  const re =
    /\s+|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)|(\[[^\]]*\])|([a-zA-Z_:][a-zA-Z0-9_:]*)|(\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(==|!=|=~|!~|>=|<=|[-+*/%^(){},=<>])/gy;
  const out: string[] = [];
  let m: RegExpExecArray | null;
  while (re.lastIndex < expr.length && (m = re.exec(expr))) if (m[0].trim()) out.push(m[0]);
  if (re.lastIndex < expr.length) throw new Error(`cannot read ${JSON.stringify(expr.slice(re.lastIndex, re.lastIndex + 20))}`);
  return out;
}

class Parser {
  private i = 0;
  constructor(private readonly t: string[]) {}
  private peek(o = 0): string | undefined {
    return this.t[this.i + o];
  }
  private next(): string {
    const v = this.t[this.i++];
    if (v === undefined) throw new Error('unexpected end of expression');
    return v;
  }
  private expect(v: string): void {
    const got = this.next();
    if (got !== v) throw new Error(`expected ${v}, found ${got}`);
  }
  parse(): Node {
    const n = this.seq();
    if (this.i < this.t.length) throw new Error(`unexpected ${this.peek()}`);
    return n;
  }
  /** `( item, item, … )`, each item read by `item`. */
  private list<T>(item: () => T): T[] {
    this.expect('(');
    const out: T[] = [];
    while (this.peek() !== ')') {
      out.push(item());
      if (this.peek() === ',') this.next();
    }
    this.next();
    return out;
  }
  private labelList(): string[] {
    return this.list(() => this.next());
  }
  private seq(): Node {
    const items = [this.atom()];
    for (;;) {
      const p = this.peek();
      if (p === undefined || p === ')' || p === ',') break;
      if (!/^(==|!=|>=|<=|[-+*/%^<>]|and|or|unless)$/.test(p)) throw new Error(`unexpected ${p}`);
      this.next();
      if (this.peek() === 'bool') this.next();
      while (['on', 'ignoring', 'group_left', 'group_right'].includes(this.peek() ?? '')) {
        this.next();
        if (this.peek() === '(') this.labelList();
      }
      items.push(this.atom());
    }
    return items.length === 1 ? items[0]! : { k: 'bin', items };
  }
  private args(): Node[] {
    return this.list(() => this.seq());
  }
  private suffix(): void {
    if (this.peek()?.startsWith('[')) this.next();
    if (this.peek() === 'offset') {
      this.next();
      this.next();
    }
  }
  private atom(): Node {
    const t = this.next();
    if (t === '-' || t === '+') return this.atom();
    if (t === '(') {
      const n = this.seq();
      this.expect(')');
      this.suffix();
      return n;
    }
    if (/^\d/.test(t)) return { k: 'num' };
    if (/^["'`]/.test(t)) return { k: 'str' };
    if (!/^[a-zA-Z_:]/.test(t)) throw new Error(`unexpected ${t}`);
    if (AGGREGATIONS.has(t)) {
      let mode: 'by' | 'without' | undefined;
      let labels: string[] = [];
      if (this.peek() === 'by' || this.peek() === 'without') {
        mode = this.next() as 'by' | 'without';
        labels = this.labelList();
      }
      const args = this.args();
      if (!mode && (this.peek() === 'by' || this.peek() === 'without')) {
        mode = this.next() as 'by' | 'without';
        labels = this.labelList();
      }
      return { k: 'agg', fn: t, mode, labels, args };
    }
    if (this.peek() === '(') {
      if (!FUNCTIONS.has(t)) throw new Error(`function ${t} is not one this check knows`);
      return { k: 'call', fn: t, args: this.args() };
    }
    if (KEYWORDS.has(t)) throw new Error(`unexpected ${t}`);
    const matchers: { label: string; op: string; value: string }[] = [];
    if (this.peek() === '{') {
      this.next();
      while (this.peek() !== '}') {
        const label = this.next();
        const op = this.next();
        if (!['=', '!=', '=~', '!~'].includes(op)) throw new Error(`bad matcher operator ${op}`);
        const raw = this.next();
        if (!/^["'`]/.test(raw)) throw new Error(`matcher value of ${label} is not a string`);
        matchers.push({ label, op, value: raw.slice(1, -1) });
        if (this.peek() === ',') this.next();
      }
      this.next();
    }
    this.suffix();
    return { k: 'sel', metric: t, matchers };
  }
}

export function parsePromQL(expr: string): Node {
  return new Parser(tokenize(expandGrafanaVars(expr))).parse();
}

/** What a series name refers to: a family, and the labels its series carry. */
function resolve(families: Map<string, Family>, series: string): { fam: Family; labels: Set<string>; bucket: boolean } | undefined {
  const direct = families.get(series);
  if (direct && direct.type !== 'histogram' && direct.type !== 'summary')
    return { fam: direct, labels: new Set(direct.labels), bucket: false };
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  const fam = m ? families.get(m[1]!) : undefined;
  if (!m || !fam || (fam.type !== 'histogram' && fam.type !== 'summary')) return undefined;
  if (m[2] === 'bucket' && fam.type !== 'histogram') return undefined;
  const labels = new Set(fam.labels);
  if (m[2] === 'bucket') labels.add('le');
  return { fam, labels, bucket: m[2] === 'bucket' };
}

function selectors(n: Node): Extract<Node, { k: 'sel' }>[] {
  if (n.k === 'sel') return [n];
  if (n.k === 'call' || n.k === 'agg') return n.args.flatMap(selectors);
  if (n.k === 'bin') return n.items.flatMap(selectors);
  return [];
}

/**
 * Problems of one expression (empty: fine), and the labels its result
 * carries (for legend `{{label}}` checks).
 */
export function checkExpr(expr: string, families: Map<string, Family>): { problems: string[]; labels: Set<string> } {
  const problems: string[] = [];
  let root: Node;
  try {
    root = parsePromQL(expr);
  } catch (e) {
    return { problems: [`cannot parse: ${(e as Error).message}`], labels: new Set() };
  }
  const withTarget = (s: Set<string>) => new Set([...s, ...TARGET_LABELS]);
  const out = (n: Node): Set<string> => {
    switch (n.k) {
      case 'num':
      case 'str':
        return new Set();
      case 'sel': {
        const r = resolve(families, n.metric);
        if (!r) {
          problems.push(`${n.metric}: not a series the agent exports`);
          return new Set();
        }
        const labels = withTarget(r.labels);
        for (const m of n.matchers) {
          if (!labels.has(m.label)) {
            problems.push(`${n.metric}: no label ${m.label} (has ${[...labels].sort().join(', ')})`);
            continue;
          }
          const known = r.fam.values.get(m.label);
          const words = m.op === '=' || m.op === '!=' ? [m.value] : /^[\w|]+$/.test(m.value) ? m.value.split('|') : [];
          if (known) for (const w of words) if (!known.has(w)) problems.push(`${n.metric}: ${m.label}="${w}" is never exported`);
        }
        return labels;
      }
      case 'call': {
        const vecs = n.args.filter((a) => a.k !== 'num' && a.k !== 'str');
        if (vecs.length !== 1) problems.push(`${n.fn}(): expected one vector argument`);
        const labels = vecs.length ? out(vecs[vecs.length - 1]!) : new Set<string>();
        if (n.fn !== 'histogram_quantile') return labels;
        for (const s of selectors(vecs[0] ?? { k: 'num' }))
          if (!resolve(families, s.metric)?.bucket)
            problems.push(`histogram_quantile reads ${s.metric}, not the _bucket series of a histogram`);
        if (!labels.has('le')) problems.push('histogram_quantile: its argument drops the le label');
        labels.delete('le');
        return labels;
      }
      case 'agg': {
        const vecs = n.args.filter((a) => a.k !== 'num' && a.k !== 'str');
        if (vecs.length !== 1) problems.push(`${n.fn}: expected one vector argument`);
        const inner = vecs.length ? out(vecs[0]!) : new Set<string>();
        for (const l of n.labels) if (!inner.has(l)) problems.push(`${n.fn} ${n.mode} (${l}): the series aggregated have no label ${l}`);
        if (n.mode === 'by') return new Set(n.labels);
        if (n.mode === 'without') return new Set([...inner].filter((l) => !n.labels.includes(l)));
        return new Set();
      }
      case 'bin': {
        const all = new Set<string>();
        for (const i of n.items) for (const l of out(i)) all.add(l);
        return all;
      }
    }
  };
  const labels = out(root);
  return { problems, labels };
}

/** Every problem of a Grafana dashboard's queries, prefixed by where it is. */
export function checkDashboard(dash: Record<string, unknown>, families: Map<string, Family>): string[] {
  const problems: string[] = [];
  type Panel = { title?: string; targets?: { expr?: string; legendFormat?: string }[]; panels?: Panel[] };
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      if (p.panels) walk(p.panels);
      for (const t of p.targets ?? []) {
        if (!t.expr) {
          problems.push(`panel "${p.title}": a target without expr`);
          continue;
        }
        const r = checkExpr(t.expr, families);
        for (const x of r.problems) problems.push(`panel "${p.title}": ${x}`);
        for (const [, l] of (t.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g))
          if (!r.labels.has(l!)) problems.push(`panel "${p.title}": legend {{${l}}} is not a label of the result`);
      }
    }
  };
  walk((dash.panels ?? []) as Panel[]);
  const vars = ((dash.templating as { list?: Record<string, unknown>[] } | undefined)?.list ?? []) as Record<string, unknown>[];
  for (const v of vars) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string }).query;
    const m = /^label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)$/.exec(q ?? '');
    if (!m) {
      problems.push(`variable ${String(v.name)}: only label_values(series, label) is checked, found ${q}`);
      continue;
    }
    const r = checkExpr(m[1]!, families);
    for (const x of r.problems) problems.push(`variable ${String(v.name)}: ${x}`);
    if (!r.labels.has(m[2]!)) problems.push(`variable ${String(v.name)}: ${m[1]} has no label ${m[2]}`);
  }
  return problems;
}

/** The agent's metric families, from a registry with a datapath double whose pw_stats is empty. */
export async function agentFamilies(): Promise<Map<string, Family>> {
  // every counted map pinned, empty: the map fill gauges export a series per map
  const maps = {
    counters: () => Promise.resolve(new Map()),
    pins: { hasMap: () => true },
    countByIter: () => 0,
    show: () => Promise.resolve({ max_entries: 1 }),
  };
  const dp = { maps } as unknown as Datapath;
  const m = new AgentMetrics(dp);
  const out = new Map<string, Family>();
  const names = new Map(m.registry.getMetricsAsArray().map((x) => [x.name, (x as unknown as { labelNames?: string[] }).labelNames ?? []]));
  for (const j of await m.registry.getMetricsAsJSON()) {
    const values = new Map<string, Set<string>>();
    for (const v of j.values)
      for (const [k, val] of Object.entries(v.labels ?? {}))
        if (k !== 'le') (values.get(k) ?? values.set(k, new Set()).get(k)!).add(String(val));
    out.set(j.name, { name: j.name, type: String(j.type), labels: names.get(j.name) ?? [], values });
  }
  return out;
}
