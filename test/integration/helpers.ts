// Shared set-up for root tests: a sandbox and a datapath with names unique to
// this run, and a check that nothing of either is left on the machine.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Datapath } from '../../loader/datapath.js';
import * as bpftool from '../../loader/bpftool.js';
import type { ResultPromise } from 'execa';
import { onLines, run, spawnLong } from '../../host/exec.js';
import * as ipr from '../../host/ip.js';
import { cgroup2Root, ensureBpffs } from '../../host/mounts.js';
import { kernelReason, testRefused, type PartId } from '../../loader/parts.js';
import { cgroupPath } from '../../host/cgroup.js';
import { ROOT, build } from '../../loader/build.js';
import { statRows } from '../../src/commands/dump.js';
import { CGROUP_HOOKS, STAT_GROUPS, type TcReason } from '../../abi/schema.js';
import { HOOK_PROGS } from '../../loader/cgroupattach.js';
import { ensurePwperf } from '../../devtools/perf.js';
import * as sandbox from '../../devtools/sandbox.js';
import { SLOWDOWN } from '../../devtools/slowdown.js';

export function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error('integration tests need root (real netns, veth, BPF): run them as root, or run `npm run test:unit`');
}

/**
 * Whether this kernel loads `obj` (a file under build/bpf), asked directly
 * with bpftool in a scratch pin directory, independent of the loader: the
 * world a test is in (a kernel may refuse tracing programs). The test switch
 * PODWARP_TEST_REFUSE refuses a part on any kernel; `part` names it.
 */
export async function kernelAllows(obj: string, part: PartId): Promise<{ allowed: boolean; reason: string }> {
  if (testRefused(part)) return { allowed: false, reason: 'PODWARP_TEST_REFUSE' };
  const root = path.join(await ensureBpffs(), `pwtest_probe_${crypto.randomBytes(3).toString('hex')}`);
  fs.mkdirSync(root);
  try {
    await bpftool.progLoadAll(path.join(ROOT, 'build', 'bpf', obj), path.join(root, 'progs'), [], path.join(root, 'maps'));
    return { allowed: true, reason: '' };
  } catch (e) {
    return { allowed: false, reason: kernelReason(e) };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export interface Env {
  id: string;
  dir: string;
  pinName: string;
  m: sandbox.SandboxManifest;
  dp: Datapath;
  objs: string[];
  progIds: number[];
}

export async function setUp(
  opts: { wiring?: sandbox.Wiring; pods?: number; namespaces?: string[]; load?: boolean; kubeLayout?: sandbox.KubeLayout } = {},
): Promise<Env> {
  requireRoot();
  const id = crypto.randomBytes(2).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pwtest-${id}-`));
  const pinName = `pwtest_${id}`;
  let dp: Datapath;
  let m: sandbox.SandboxManifest;
  let objs: string[];
  try {
    objs = await build();
    await ensurePwperf();
    dp = await Datapath.open(pinName);
    m = await sandbox.up({
      dir,
      id,
      pods: opts.pods ?? 4,
      namespaces: opts.namespaces,
      wiring: opts.wiring ?? 'routed',
      kubeLayout: opts.kubeLayout,
    });
  } catch (e) {
    // nothing of a set-up that failed stays behind (sandbox.up removes what it made itself)
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const env = { id, dir, pinName, m, dp, objs, progIds: [] };
  // a failed load leaves no sandbox behind (the caller never gets an env to tear down)
  if (opts.load !== false)
    try {
      await dp.load(objs);
    } catch (e) {
      await tearDown(env);
      throw e;
    }
  return env;
}

/** Tears down, then returns what is still there (must be empty). */
export async function tearDown(env: Env | undefined): Promise<string[]> {
  if (!env) return [];
  // the programs whose freeing leftovers() checks: those the kernel shows by id while they are pinned
  // (a kernel that hides them would make "freed" unknowable; pins, filters and cgroups are checked anyway)
  if (fs.existsSync(env.dp.pins.progsDir))
    for (const p of fs.readdirSync(env.dp.pins.progsDir)) {
      const id = await env.dp.maps.progId(p);
      if (await bpftool.progAlive(id)) env.progIds.push(id);
    }
  await env.dp.uninstall();
  await sandbox.down(env.dir);
  fs.rmSync(env.dir, { recursive: true, force: true });
  return leftovers(env);
}

export async function leftovers(env: Env): Promise<string[]> {
  const left: string[] = [];
  if (fs.existsSync(env.dp.pinRoot)) left.push(`pins ${env.dp.pinRoot}`);
  for (const n of await ipr.netnsList()) if (n.startsWith(`pw-${env.id}-`)) left.push(`netns ${n}`);
  for (const l of await ipr.links()) if (l.ifname.startsWith(`pw${env.id}`)) left.push(`link ${l.ifname}`);
  if (fs.existsSync(path.join(cgroup2Root(), `podwarp-sandbox-${env.id}`))) left.push('cgroup');
  const ipt = await run('iptables', ['iptables', '-w', '-S', 'FORWARD'], { reject: false });
  if (ipt.stdout.includes(`podwarp-sandbox-${env.id}`)) left.push('iptables rules');
  // the kernel frees a program once no pin, fd or attachment holds it: asked id by id (a kernel may refuse to
  // list other processes' programs); one it will not say anything about counts as left
  for (let i = 0; i < 50; i++) {
    const alive = await Promise.all(env.progIds.map(async (id) => [id, await bpftool.progAlive(id)] as const));
    const still = alive.filter(([, a]) => a !== false);
    if (still.length === 0) break;
    if (i === 49) left.push(`programs ${still.map(([id, a]) => (a === undefined ? `${id} (the kernel does not say)` : id)).join(',')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return left;
}

/** Every counter, keyed "program/reason". */
export async function counters(dp: Datapath): Promise<Record<string, bigint>> {
  return Object.fromEntries((await statRows(dp)).map((r) => [`${r.program}/${r.reason}`, r.packets]));
}

/** Growth of one program's counters between two readings, by reason (default: the tc program). */
export function delta(a: Record<string, bigint>, b: Record<string, bigint>): Record<TcReason, number>;
export function delta(a: Record<string, bigint>, b: Record<string, bigint>, prog: string): Record<string, number>;
export function delta(a: Record<string, bigint>, b: Record<string, bigint>, prog = 'pw_tc_egress'): Record<string, number> {
  const g = STAT_GROUPS.find((x) => x.prog === prog);
  if (!g) throw new Error(`no counters for ${prog}`);
  return Object.fromEntries(g.reasons.map((r) => [r, Number((b[`${prog}/${r}`] ?? 0n) - (a[`${prog}/${r}`] ?? 0n))]));
}

export async function podTx(p: sandbox.SandboxPod): Promise<number> {
  return (await ipr.link('eth0', p.netns, true))?.stats64?.tx.packets ?? 0;
}

export async function hostTx(p: sandbox.SandboxPod): Promise<number> {
  return (await ipr.link(p.hostInterface, undefined, true))?.stats64?.tx.packets ?? 0;
}

export { SLOWDOWN };

/** Polls f() until it returns something truthy, at most `ms` (× SLOWDOWN). */
export async function until<T>(what: string, f: () => T | Promise<T>, ms = 15_000): Promise<NonNullable<T>> {
  const end = Date.now() + ms * SLOWDOWN;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const CLI = path.join(ROOT, 'bin', 'podwarp');

export interface Agent {
  child: ResultPromise;
  /** Its pino log lines, parsed (a non-JSON line as { msg }). */
  lines: { msg: string; [k: string]: unknown }[];
}

/** The run directory of the agents a test spawns (their report, agent.json). */
const agentRunDir = (env: Env) => path.join(env.dir, 'run');

/** `podwarp agent ARGS` as a process, on this test's pins and run directory, logging at info. */
export function spawnAgent(env: Env, args: string[]): Agent {
  const child = spawnLong([CLI, 'agent', ...args], {
    env: { ...process.env, PODWARP_PIN_NAME: env.pinName, PODWARP_RUN_DIR: agentRunDir(env), PODWARP_LOG_LEVEL: 'info' } as Record<
      string,
      string
    >,
    // a SIGTERMed agent drains and unlocks before it exits: seconds under emulation, not execa's 5 s
    forceKillAfterMs: 5000 * SLOWDOWN,
  });
  const a: Agent = { child, lines: [] };
  onLines(child.stderr, (line) => {
    try {
      a.lines.push(JSON.parse(line) as Agent['lines'][number]);
    } catch {
      a.lines.push({ msg: line });
    }
  });
  return a;
}

/** GET `p` (/metrics, /readyz, /healthz) from the agent's metrics and health server, at the address its log names. */
export async function agentGet(a: Agent, p: string): Promise<{ status: number; body: string }> {
  const listening = await until('the metrics address in the agent log', () =>
    a.lines.find((l) => l.msg === 'metrics and health endpoints listening'),
  );
  const r = await fetch(`http://${String(listening.addr)}${p}`);
  return { status: r.status, body: await r.text() };
}

/** The sum of the agent's /metrics samples whose line matches `re` (0 when none does). */
export async function agentMetric(a: Agent, re: RegExp): Promise<number> {
  return (await agentGet(a, '/metrics')).body
    .split('\n')
    .filter((l) => re.test(l))
    .reduce((s, l) => s + Number(l.split(' ').pop()), 0);
}

/**
 * Waits until the agent has finished `n` more node-local passes: each one
 * rewrites its report (agent.json) with a new `updated` time, whether or not
 * it changed anything. Passes in between two polls count as one, so this is
 * at least `n`.
 */
export async function nodePasses(env: Env, a: Agent, n: number, ms = 30_000): Promise<void> {
  const file = path.join(agentRunDir(env), 'agent.json');
  const stamp = (): string | undefined => {
    try {
      const r = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid: number; updated: string };
      return r.pid === a.child.pid ? r.updated : undefined;
    } catch {
      return undefined; // not written yet
    }
  };
  let last = stamp();
  for (let i = 1; i <= n; i++) {
    const seen = last;
    last = await until(
      `node-local pass ${i} of ${n} of agent ${a.child.pid} (its report rewritten)`,
      () => {
        const s = stamp();
        return s !== seen ? s : undefined;
      },
      ms,
    );
  }
}

/** `podwarp agent` on the Kubernetes source as the root tests run it: quick resyncs and debounce, metrics on a free port. */
export function spawnKubeAgent(env: Env, kubeconfig: string, node: string, extra: string[] = []): Agent {
  return spawnAgent(env, [
    ...['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--node', node],
    ...['--resync', '1', '--debounce', '10', '--metrics-addr', '127.0.0.1:0'],
    ...extra,
  ]);
}

/** The socket LB's programs (v4 and v4-mapped v6 hooks), as every enabled pod's cgroup gets them, sorted. */
export const LB_PROGS = HOOK_PROGS.filter(([, bit]) => bit === CGROUP_HOOKS.LB)
  .map(([, , prog]) => prog)
  .sort();
/** What an enabled pod without a sidecar has attached, sorted. */
export const POD_PROGS = [...LB_PROGS, 'pw_sockops'].sort();
/** What a meshed pod (podwarp's sidecar capture, no socket LB) has attached, sorted. */
export const MESHED_PROGS = ['pw_proxy_conn4', 'pw_proxy_conn6', 'pw_proxy_odst', 'pw_proxy_peer4', 'pw_proxy_peer6', 'pw_sockops'];
/** Names of the programs attached to a pod cgroup (path below the cgroup2 mount), sorted. */
export async function cgroupProgs(rel: string): Promise<string[]> {
  return (await bpftool.cgroupShow(cgroupPath(rel))).map((x) => x.name ?? '').sort();
}
