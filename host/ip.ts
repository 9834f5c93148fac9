// iproute2 `ip` (always -j where it prints), sysctl files, network namespaces.
import fs from 'node:fs';
import { ToolError } from './errors.js';
import { run, type RunResult } from './exec.js';
import { checks } from './validate.js';

const check = checks({ allowUnionTypes: true });

export interface Link {
  ifindex: number;
  ifname: string;
  address?: string;
  master?: string;
  link_type?: string;
  operstate?: string;
  /** veth (with -d): the peer's ifindex, in the peer's netns. */
  link_index?: number;
  /** Present when the peer is in another netns. */
  link_netnsid?: number;
  /** With -d: the device kind (veth, bridge…). */
  linkinfo?: { info_kind?: string };
  /** `addr show` only. */
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
  stats64?: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
}
const linksOk = check<Link[]>({
  type: 'array',
  items: {
    type: 'object',
    required: ['ifindex', 'ifname'],
    properties: {
      ifindex: { type: 'integer' },
      ifname: { type: 'string' },
      address: { type: 'string' },
      master: { type: 'string' },
      link_index: { type: 'integer' },
      link_netnsid: { type: 'integer' },
      linkinfo: { type: 'object', properties: { info_kind: { type: 'string' } } },
      addr_info: { type: 'array', items: { type: 'object', properties: { family: { type: 'string' }, local: { type: 'string' } } } },
    },
  },
});

function parseLinks(what: string, argv: string[], r: RunResult): Link[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout.trim() || '[]');
  } catch {
    parsed = undefined;
  }
  if (!linksOk(parsed)) throw new ToolError(`${what}: unexpected ip JSON`, argv, r.exitCode, r.stdout.slice(0, 300));
  return parsed;
}

function nsArgs(netns?: string): string[] {
  return netns ? ['-n', netns] : [];
}

export async function ip(what: string, args: string[], netns?: string): Promise<RunResult> {
  return run(what, ['ip', ...nsArgs(netns), ...args]);
}

export async function links(netns?: string, stats = false): Promise<Link[]> {
  const argv = ['ip', ...nsArgs(netns), '-j', ...(stats ? ['-s'] : []), 'link', 'show'];
  return parseLinks('list links', argv, await run('list links', argv));
}

/** Links with their kind and veth peer (`ip -j -d link show`), in the host netns. */
export async function detailedLinks(): Promise<Link[]> {
  const argv = ['ip', '-j', '-d', 'link', 'show'];
  return parseLinks('list host links', argv, await run('list host links', argv));
}

/**
 * Links with their kind, veth peer and addresses in the network namespace of
 * process `pid` (`nsenter --net=/proc/PID/ns/net ip -j -d addr show`): a pod's
 * netns entered through one of its processes, no `ip netns` name needed.
 */
export async function linksOfPid(pid: number): Promise<Link[]> {
  const argv = ['nsenter', `--net=/proc/${pid}/ns/net`, 'ip', '-j', '-d', 'addr', 'show'];
  const what = `list addresses of pid ${pid}`;
  return parseLinks(what, argv, await run(what, argv, { timeoutMs: 10_000 }));
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
  scope?: string;
}
/**
 * IPv4 routes: every table (default), or the main table only, optionally just
 * those to one prefix (`to`: "10.1.2.3/32").
 */
export async function routes(netns?: string, opts: { table?: 'all' | 'main'; to?: string } = {}): Promise<Route[]> {
  const table = opts.table === 'main' ? [] : ['table', 'all'];
  const r = await run('list routes', ['ip', ...nsArgs(netns), '-j', '-4', 'route', 'show', ...table, ...(opts.to ? [opts.to] : [])]);
  const t = r.stdout.trim();
  const parsed: unknown = t ? JSON.parse(t) : [];
  return Array.isArray(parsed) ? (parsed as Route[]).filter((x) => x && typeof x.dst === 'string') : [];
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
