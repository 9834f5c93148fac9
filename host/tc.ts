// tc (iproute2) for clsact qdiscs and cls_bpf filters; the 5.10 attach path.
import { ToolError } from './errors.js';
import { run } from './exec.js';
import { checks } from './validate.js';

const check = checks({ allowUnionTypes: true });

export interface TcFilter {
  kind?: string;
  pref?: number;
  options?: { handle?: number | string; bpf_name?: string; 'direct-action'?: boolean; prog?: { id: number; name?: string; tag?: string } };
}
const filtersOk = check<TcFilter[]>({ type: 'array', items: { type: 'object' } });
const qdiscsOk = check<{ kind: string; handle?: string }[]>({
  type: 'array',
  items: { type: 'object', required: ['kind'], properties: { kind: { type: 'string' } } },
});

async function tcJson<T>(what: string, args: string[], ok: (x: unknown) => x is T): Promise<T> {
  const argv = ['tc', '-j', ...args];
  const r = await run(what, argv);
  const text = r.stdout.trim();
  const parsed: unknown = text === '' ? [] : JSON.parse(text);
  if (!ok(parsed)) throw new ToolError(`${what}: unexpected tc JSON`, argv, r.exitCode, text.slice(0, 300));
  return parsed;
}

export async function hasClsact(dev: string): Promise<boolean> {
  const q = await tcJson(`list qdiscs of ${dev}`, ['qdisc', 'show', 'dev', dev], qdiscsOk);
  return q.some((x) => x.kind === 'clsact');
}

/** Adds a clsact qdisc if none is there. Returns true when this call created it. */
export async function ensureClsact(dev: string): Promise<boolean> {
  if (await hasClsact(dev)) return false;
  const r = await run(`add clsact qdisc to ${dev}`, ['tc', 'qdisc', 'add', 'dev', dev, 'clsact'], { reject: false });
  if (r.exitCode === 0) return true;
  if (await hasClsact(dev)) return false; // raced with another tool
  throw new ToolError(`add clsact qdisc to ${dev}`, r.argv, r.exitCode, r.stderr);
}

export async function deleteClsact(dev: string): Promise<void> {
  await run(`delete clsact qdisc of ${dev}`, ['tc', 'qdisc', 'del', 'dev', dev, 'clsact']);
}

export type Direction = 'ingress' | 'egress';

export async function listFilters(dev: string, dir: Direction): Promise<TcFilter[]> {
  return tcJson(`list ${dir} filters of ${dev}`, ['filter', 'show', 'dev', dev, dir], filtersOk);
}

/** Atomically installs or replaces the filter at (prio, handle) with a pinned program. */
export async function replaceBpfFilter(dev: string, dir: Direction, prio: number, handle: number, progPin: string): Promise<void> {
  await run(`attach ${progPin} to ${dev} ${dir}`, [
    'tc',
    'filter',
    'replace',
    'dev',
    dev,
    dir,
    'protocol',
    'all',
    'prio',
    String(prio),
    'handle',
    '0x' + handle.toString(16),
    'bpf',
    'object-pinned',
    progPin,
    'direct-action',
  ]);
}

export async function deleteBpfFilter(dev: string, dir: Direction, prio: number, handle: number): Promise<void> {
  await run(`detach filter from ${dev} ${dir}`, [
    'tc',
    'filter',
    'del',
    'dev',
    dev,
    dir,
    'protocol',
    'all',
    'prio',
    String(prio),
    'handle',
    '0x' + handle.toString(16),
    'bpf',
  ]);
}

/** Our filter on a device: the one at our prio and handle. */
export function findFilter(filters: TcFilter[], prio: number, handle: number): TcFilter | undefined {
  return filters.find((f) => f.kind === 'bpf' && f.pref === prio && f.options?.handle !== undefined && Number(f.options.handle) === handle);
}
