// One writer per node (the node lock, host/lock.ts): a second agent on the
// same pins waits, not ready and writing nothing, while the first runs; when
// the first is killed it takes over, and a stream across the take-over loses
// no byte. uninstall refuses while an agent runs, and waits with --wait.
import fs from 'node:fs';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResultPromise } from 'execa';
import { MAPS } from '../../abi/schema.js';
import { onLines, run, spawnLong } from '../../host/exec.js';
import { startServer, stream, type Server } from '../../devtools/perf.js';
import { readActual } from '../../src/pods/apply.js';
import { socketRows } from '../../src/commands/dump.js';
import { CLI, counters, delta, setUp, spawnAgent, tearDown, until, type Agent, type Env } from './helpers.js';

const startAgent = (env: Env): Agent => spawnAgent(env, ['--state', env.m.stateFile, '--resync', '1', '--metrics-addr', '127.0.0.1:0']);
// start-up loads 12 objects: seconds here, minutes in a 5.10 VM under TCG
const ready = (a: Agent) => until('agent ready', () => a.lines.find((l) => l.msg === 'ready'), 60_000);
const WAITING = 'another podwarp process writes this datapath: waiting for it to exit, then taking over (nothing is written meanwhile)';

async function http(a: Agent, p: string): Promise<{ status: number; body: string }> {
  const addr = String(
    (await until('metrics address', () => a.lines.find((l) => l.msg === 'metrics and health endpoints listening')))!.addr,
  );
  const r = await fetch(`http://${addr}${p}`);
  return { status: r.status, body: await r.text() };
}
const metric = async (a: Agent, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec((await http(a, '/metrics')).body)?.[1]);

/** Everything a writer would change: map and program ids of every pin, and what the maps and attachments hold. */
async function written(env: Env) {
  const progs: Record<string, number> = {};
  for (const p of env.dp.pins.progs().sort()) progs[p] = await env.dp.maps.progId(p);
  const maps: Record<string, number> = {};
  for (const m of MAPS) maps[m.name] = await env.dp.maps.mapId(m.name);
  return { progs, maps, actual: await readActual(env.dp) };
}

describe('one writer per node', () => {
  let env: Env | undefined;
  let server: Server | undefined;
  const agents: Agent[] = [];
  const others: ResultPromise[] = [];

  beforeAll(async () => {
    env = await setUp({ load: false });
    const st = YAML.parse(fs.readFileSync(env.m.stateFile, 'utf8')) as { namespaces: { accelerate: boolean }[] };
    st.namespaces.forEach((n) => (n.accelerate = true));
    fs.writeFileSync(env.m.stateFile, YAML.stringify(st));
    server = await startServer(env.m.pods[1]!, 7250);
  });

  afterAll(async () => {
    for (const c of [...agents.map((a) => a.child), ...others]) {
      c.kill('SIGKILL');
      await c;
    }
    await server?.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('a second agent waits (not ready, says so, writes nothing), takes over when the first is SIGKILLed; a stream across loses 0 bytes', async () => {
    const t0 = Date.now();
    const a1 = startAgent(env!);
    agents.push(a1);
    await ready(a1);
    const startupMs = Date.now() - t0;
    const before = await written(env!);
    expect(await metric(a1, 'podwarp_lock_held')).toBe(1);
    const passes = () => metric(a1, 'podwarp_sync_duration_seconds_count');

    const a2 = startAgent(env!);
    agents.push(a2);
    // says once that it waits, and for whom
    const said = await until('the second agent waiting', () => a2.lines.find((l) => l.msg === WAITING), 60_000);
    expect(said.holderPid).toBe(a1.child.pid);
    expect(String(said.holder)).toMatch(/^podwarp agent --state /);
    expect(said.pinRoot).toBe(env!.dp.pinRoot);
    const readyz = await http(a2, '/readyz');
    expect(readyz.status).toBe(503);
    expect(readyz.body).toBe(
      `not ready: waiting for the node lock: ${env!.dp.pinRoot} is written by pid ${a1.child.pid} (${String(said.holder)})\n`,
    );
    expect(await metric(a2, 'podwarp_lock_waiting')).toBe(1);
    expect(await metric(a2, 'podwarp_lock_held')).toBe(0);
    expect((await http(a2, '/healthz')).status).toBe(200); // alive: the kubelet must not restart a waiting agent

    // it writes nothing while it waits: through three more passes of the first (resync 1 s; the second's sweep is every 2 s)
    const p0 = await passes();
    await until('three passes of the first agent', async () => (await passes()) >= p0 + 3, 30_000);
    expect(await written(env!)).toEqual(before);
    expect(a2.lines.filter((l) => ['datapath ready', 'ready', 'reconciled', 'node lock acquired: taking over'].includes(l.msg))).toEqual(
      [],
    );
    expect(a2.lines.filter((l) => l.msg === WAITING)).toHaveLength(1);

    // read-only commands neither wait nor take the lock; status names the writer and the waiter
    const st = await run('podwarp status', [CLI, 'status', '-o', 'json'], {
      env: { ...process.env, PODWARP_PIN_NAME: env!.pinName } as Record<string, string>,
    });
    const writer = (JSON.parse(st.stdout) as { writer: { holder?: { pid?: number }; waiters: number } }).writer;
    expect(writer).toMatchObject({ holder: { pid: a1.child.pid }, waiters: 1 });
    // uninstall refuses while an agent runs, naming it, and changes nothing
    const u = await run('podwarp uninstall', [CLI, 'uninstall'], {
      reject: false,
      env: { ...process.env, PODWARP_PIN_NAME: env!.pinName } as Record<string, string>,
    });
    expect(u.exitCode).toBe(1);
    expect(u.stderr).toContain(`uninstall refused: ${env!.dp.pinRoot} is locked by pid ${a1.child.pid} (podwarp agent --state`);
    expect(u.stderr).toContain('--wait');
    expect(await written(env!)).toEqual(before);

    // a checksummed stream through the sockmap, long enough to outlast a second start-up
    const [client, srv] = [env!.m.pods[0]!, env!.m.pods[1]!];
    const running = stream(client, srv.ip, 7250, { seconds: Math.ceil(3 + (3 * startupMs) / 1000), paceUs: 1000 });
    await until('the stream in pw_sock', async () => (await socketRows(env!.dp)).some((r) => r.local.startsWith(`${client.ip}:`)));
    const c0 = await counters(env!.dp);
    a1.child.kill('SIGKILL');
    await a1.child;
    await until('the take-over', () => a2.lines.find((l) => l.msg === 'node lock acquired: taking over'), 60_000);
    await ready(a2);
    const tookOver = Date.now();
    const r = await running;
    const ended = Date.now();
    expect(tookOver, 'the stream ran across the take-over').toBeLessThan(ended);
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.received).toBeGreaterThan(1 << 20);
    expect(server!.lines().at(-1)).toMatchObject({ ok: true, stream_received: r.sent, stream_sent: r.received });
    // on the socket fast path throughout: nothing sent to TCP by the take-over (the unpaced
    // server's side may have been moved by flow control, filling the paced client's queue)
    const d = delta(c0, await counters(env!.dp), 'pw_sk_msg');
    expect(d.redirected).toBeGreaterThan(0);
    expect(d.no_peer! + d.to_tcp_off! + d.to_tcp_bulk!).toBe(0);

    // the pinned maps were reused and nothing needed changing; the second agent is now the writer and ready
    expect(a2.lines.find((l) => l.msg === 'datapath ready')?.reusedMaps).toBe(true);
    expect(a2.lines.filter((l) => l.msg === 'reconciled')).toEqual([]);
    const after = await written(env!);
    expect(after.maps).toEqual(before.maps);
    expect(after.actual).toEqual({ ...before.actual, ifaces: before.actual.ifaces.map((i) => ({ ...i, progId: expect.any(Number) })) });
    await until('/readyz 200', async () => (await http(a2, '/readyz')).status === 200, 30_000);
    expect(await metric(a2, 'podwarp_lock_waiting')).toBe(0);
    expect(await metric(a2, 'podwarp_lock_held')).toBe(1);
  });

  it('uninstall --wait waits for the running agent to exit, then removes everything', async () => {
    const a = agents.at(-1)!;
    expect(a.child.exitCode).toBeNull();
    for (const p of env!.dp.pins.progs()) env!.progIds.push(await env!.dp.maps.progId(p)); // for tearDown's leftover check
    const u = spawnLong([CLI, 'uninstall', '--wait', '--drain-timeout', '5'], {
      env: { ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_LOG_FORMAT: 'json' } as Record<string, string>,
    });
    others.push(u);
    const lines: { msg?: string; holderPid?: number }[] = [];
    onLines(u.stderr, (l) => lines.push(JSON.parse(l) as (typeof lines)[number]));
    const said = await until('uninstall waiting', () =>
      lines.find((l) => l.msg === 'another podwarp process writes this datapath: waiting for it to exit'),
    );
    expect(said.holderPid).toBe(a.child.pid);
    expect(env!.dp.isLoaded()).toBe(true);
    a.child.kill('SIGTERM');
    expect((await a.child).exitCode).toBe(0);
    const r = await u;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toMatch(/, removed pins$/);
    expect(fs.existsSync(env!.dp.pinRoot)).toBe(false);
  });
});
