// iproute2 `ip` (always -j where it prints), sysctl files, network namespaces.
import fs from 'node:fs';
import { Ajv } from 'ajv';
import { ToolError } from './errors.js';
import { run, type RunResult } from './exec.js';

const ajv = new Ajv({ allowUnionTypes: true });

export interface Link {
  ifindex: number;
  ifname: string;
  address?: string;
  master?: string;
  link_type?: string;
  operstate?: string;
  link_netnsid?: number;
  stats64?: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
}
const linksOk = ajv.compile<Link[]>({
  type: 'array',
  items: { type: 'object', required: ['ifindex', 'ifname'], properties: { ifindex: { type: 'integer' }, ifname: { type: 'string' } } },
});

function nsArgs(netns?: string): string[] {
  return netns ? ['-n', netns] : [];
}

export async function ip(what: string, args: string[], netns?: string): Promise<RunResult> {
  return run(what, ['ip', ...nsArgs(netns), ...args]);
}

export async function links(netns?: string, stats = false): Promise<Link[]> {
  const argv = ['ip', ...nsArgs(netns), '-j', ...(stats ? ['-s'] : []), 'link', 'show'];
  const r = await run('list links', argv);
  const parsed: unknown = JSON.parse(r.stdout || '[]');
  if (!linksOk(parsed)) throw new ToolError('list links: unexpected ip JSON', argv, r.exitCode, r.stdout.slice(0, 300));
  return parsed;
}

export async function link(name: string, netns?: string, stats = false): Promise<Link | undefined> {
  return (await links(netns, stats)).find((l) => l.ifname === name);
}

export async function netnsList(): Promise<string[]> {
  const r = await run('list netns', ['ip', '-j', 'netns', 'list']);
  const t = r.stdout.trim();
  if (!t) return [];
  return (JSON.parse(t) as { name: string }[]).map((x) => x.name);
}

export interface Neighbor {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}
export async function neighbors(dev: string): Promise<Neighbor[]> {
  const r = await run(`list neighbours of ${dev}`, ['ip', '-j', '-4', 'neigh', 'show', 'dev', dev]);
  const t = r.stdout.trim();
  return t ? (JSON.parse(t) as Neighbor[]).map((n) => ({ ...n, dev })) : [];
}

export interface Route {
  dst: string;
  dev?: string;
  gateway?: string;
}
export async function routes(netns?: string): Promise<Route[]> {
  const r = await run('list routes', ['ip', ...nsArgs(netns), '-j', '-4', 'route', 'show', 'table', 'all']);
  const t = r.stdout.trim();
  return t ? (JSON.parse(t) as Route[]) : [];
}

/** Write a sysctl through /proc/sys (no process). Returns the previous value. */
export function sysctl(key: string, value: string): string {
  const path = '/proc/sys/' + key.replace(/\./g, '/');
  const prev = fs.readFileSync(path, 'utf8').trim();
  if (prev !== value) fs.writeFileSync(path, value);
  return prev;
}

/** argv that runs `argv` inside network namespace `netns` and cgroup dir `cgroupDir`. */
export function podArgv(netns: string, cgroupDir: string | undefined, argv: string[]): string[] {
  const inNs = ['ip', 'netns', 'exec', netns, ...argv];
  if (!cgroupDir) return inNs;
  // join the pod's cgroup first, then exec into the netns: the whole process tree stays in the pod's cgroup
  return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroupDir, ...inNs];
}

/** Several `ip` commands in one process (`ip -batch -`), optionally inside a netns. */
export async function batch(what: string, lines: string[][], netns?: string): Promise<void> {
  if (lines.length === 0) return;
  await run(what, ['ip', ...nsArgs(netns), '-batch', '-'], { input: lines.map((l) => l.join(' ')).join('\n') + '\n' });
}

export async function netnsAdd(name: string): Promise<void> {
  await run(`create netns ${name}`, ['ip', 'netns', 'add', name]);
}

export async function netnsDel(name: string): Promise<void> {
  await run(`delete netns ${name}`, ['ip', 'netns', 'del', name]);
}
