// The agent as a process: restart under traffic, live state-file changes,
// invalid input rejected without touching the maps.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { partsOf } from '../../loader/datapath.js';
import { kernelStructHasMember } from '../../loader/kbtf.js';
import { rr, startServer, type Server } from '../../devtools/perf.js';
import { readActual } from '../../src/pods/apply.js';
import { socketRows } from '../../src/commands/dump.js';
import {
  CLI,
  POD_PROGS,
  agentGet,
  agentMetric,
  counters,
  delta,
  setUp,
  spawnAgent,
  tearDown,
  until,
  type Agent,
  type Env,
} from './helpers.js';

const startAgent = (env: Env, stateFile: string): Agent =>
  spawnAgent(env, ['--state', stateFile, '--resync', '1', '--metrics-addr', '127.0.0.1:0']);

// start-up builds nothing but loads 12 objects: seconds here, many minutes in a 5.10 VM under TCG
const ready = (a: Agent) => until('agent ready', () => a.lines.find((l) => l.msg === 'ready'), 60_000);

describe('agent process', () => {
  let env: Env | undefined;
  let server: Server | undefined;
  const agents: Agent[] = [];

  beforeAll(async () => {
    env = await setUp({ load: false });
    const st = YAML.parse(fs.readFileSync(env.m.stateFile, 'utf8')) as { namespaces: { accelerate: boolean }[] };
    st.namespaces.forEach((n) => (n.accelerate = true));
    fs.writeFileSync(env.m.stateFile, YAML.stringify(st));
    server = await startServer(env.m.pods[1]!, 7200);
  });

  afterAll(async () => {
    for (const a of agents) {
      a.child.kill('SIGKILL');
      await a.child;
    }
    await server?.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('survives SIGKILL and restart with a TCP connection open: maps reused, connection intact', async () => {
    const a1 = startAgent(env!, env!.m.stateFile);
    agents.push(a1);
    await ready(a1);
    const mapIds = { ep: await env!.dp.maps.mapId('pw_endpoints'), st: await env!.dp.maps.mapId('pw_stats') };
    const prog1 = await env!.dp.maps.progId('pw_tc_egress');
    const sockops1 = await env!.dp.maps.progId('pw_sockops');
    const before = await readActual(env!.dp);

    // 300 verified exchanges, 10 ms apart, on one connection, across the restart
    const client = env!.m.pods[0]!;
    const cUp = await counters(env!.dp);
    let connDone = false;
    const conn = rr(client, env!.m.pods[1]!.ip, 7200, { n: 300, paceUs: 10_000, size: 256 }).finally(() => (connDone = true));
    // the connection is up and on the socket fast path before the agent is killed
    await until(
      'the connection in pw_sock with its messages redirected',
      async () =>
        (await socketRows(env!.dp)).some((r) => r.local.startsWith(`${client.ip}:`)) &&
        delta(cUp, await counters(env!.dp), 'pw_sk_msg').redirected! > 0,
    );
    expect(connDone, 'the connection still open when the agent is killed').toBe(false);
    a1.child.kill('SIGKILL');
    await a1.child;
    const c0 = await counters(env!.dp);
    const a2 = startAgent(env!, env!.m.stateFile);
    agents.push(a2);
    await ready(a2);
    const res = await conn; // throws if pwperf saw an error or a wrong byte
    expect(res.n).toBe(300);
    const c1 = await counters(env!.dp);
    // still on the fast path after the restart (the socket one: both pods are enabled and have cgroups)
    expect(delta(c0, c1, 'pw_sk_msg').redirected).toBeGreaterThan(0);
    expect(delta(c0, c1, 'pw_sk_msg').passthrough! + delta(c0, c1, 'pw_sk_msg').no_peer!).toBe(0);

    expect(await env!.dp.maps.mapId('pw_endpoints')).toBe(mapIds.ep);
    expect(await env!.dp.maps.mapId('pw_stats')).toBe(mapIds.st);
    expect(a2.lines.find((l) => l.msg === 'datapath ready')?.reusedMaps).toBe(true);
    // the restarted agent found nothing to change
    expect(a2.lines.filter((l) => l.msg === 'reconciled')).toEqual([]);
    expect(await readActual(env!.dp)).toEqual({
      ...before,
      ifaces: before.ifaces.map((i) => ({ ...i, progId: expect.any(Number) })),
    });
    expect(before.cgroups).toHaveLength(env!.m.pods.length);
    // cgroups moved to the new sock_ops program, the old one is gone from them
    const sockops2 = await env!.dp.maps.progId('pw_sockops');
    for (const c of await env!.dp.cgroups.status()) expect(c.attached.sort()).toEqual(POD_PROGS);
    expect(sockops2).not.toBe(sockops1);
    // filters moved to the newly loaded program
    const prog2 = await env!.dp.maps.progId('pw_tc_egress');
    expect(prog2).not.toBe(prog1);
    for (const att of await env!.dp.tc.status()) expect(att.progId).toBe(prog2);
  });

  it('serves /readyz, /healthz and /metrics with the maps and datapath counters', async () => {
    const a = agents[agents.length - 1]!;
    const get = (p: string) => agentGet(a, p);
    expect(await get('/healthz')).toEqual({ status: 200, body: 'ok\n' });
    // ready once its first pass is done (minutes on 5.10 under TCG emulation)
    await until('/readyz 200', async () => (await get('/readyz')).status === 200, 30_000);
    const m = (await get('/metrics')).body;
    expect(m).toContain(`podwarp_endpoints{state="enabled"} ${env!.m.pods.length}`);
    expect(m).toMatch(/podwarp_datapath_events_total\{program="pw_sk_msg",reason="redirected"\} [1-9]\d*/);
    expect(m).toMatch(/podwarp_sync_duration_seconds_count [1-9]/);
    expect(m).toContain('podwarp_services_dropped 0');
    // one gauge per part, in the state the pins show (the kernel's reason on refused ones, as the log has it)
    const shown = partsOf(env!.dp.pins, kernelStructHasMember('sk_psock', 'msg_tot_len'));
    expect(shown).toHaveLength(6);
    for (const p of shown) {
      const line = new RegExp(`^podwarp_optional_part\\{part="${p.part}",state="${p.state}",reason="([^"]*)"\\} 1$`, 'm').exec(m);
      expect(line, `${p.part} ${p.state}`).not.toBeNull();
      if (p.state === 'refused') {
        const logged = a.lines.find((l) => l.part === p.part && String(l.msg).startsWith(`${p.part}: off`));
        expect(line![1], p.part).toBe(String(logged?.reason));
      } else expect(line![1]).toBe('');
    }
  });

  it('follows `podwarp disable` (a state-file edit) and keeps the last good state on an invalid file', async () => {
    const a = agents[agents.length - 1]!;
    const d = await run('podwarp disable', [CLI, 'disable', 'team-a', '--state', env!.m.stateFile]);
    expect(d.stdout).toBe('namespace team-a: acceleration off\n');
    const unknown = await run('podwarp enable', [CLI, 'enable', 'nope', '--state', env!.m.stateFile], { reject: false });
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain('namespace "nope" is not in');
    const teamA = env!.m.pods.filter((p) => p.namespace === 'team-a').map((p) => p.ip);
    const teamACg = env!.m.pods.filter((p) => p.namespace === 'team-a').map((p) => p.cgroup);
    await until('team-a disabled in the maps and detached from its cgroups', async () => {
      const a = await readActual(env!.dp);
      return teamA.every((ip) => a.endpoints.get(ip)?.flags === 0) && a.cgroups.every((c) => !teamACg.includes(c.path));
    });
    const good = await readActual(env!.dp);

    fs.writeFileSync(env!.m.stateFile, 'apiVersion: podwarp.io/v1alpha1\nkind: NodeState\nnamespaces: []\npods: [{namespace: x}]\n');
    await until('rejection logged', () => a.lines.find((l) => l.msg === 'state file rejected; keeping previous state'));
    const rejected = a.lines.find((l) => l.msg === 'state file rejected; keeping previous state')!;
    expect(String(rejected.err)).toContain("/pods/0: must have required property 'name'");
    // every resync (--resync 1) reads the file again and rejects it: two more of them, and the maps are as they were
    const rejections = () => agentMetric(a, /^podwarp_errors_total\{reason="state_rejected"\} /);
    const r0 = await rejections();
    expect(r0).toBeGreaterThanOrEqual(1);
    await until('two more resyncs rejecting the state file', async () => (await rejections()) >= r0 + 2);
    expect(await readActual(env!.dp)).toEqual(good);
    expect(a.child.exitCode).toBeNull();
  });

  it('refuses to start on an invalid state file and touches nothing', async () => {
    const bad = path.join(env!.dir, 'bad.yaml');
    fs.writeFileSync(bad, 'apiVersion: podwarp.io/v1alpha1\nkind: NodeState\nnamespaces: [{name: Bad_NS}]\npods: []\n');
    const pinName = `${env!.pinName}_bad`;
    const r = await run('agent', [CLI, 'agent', '--state', bad, '--once'], {
      reject: false,
      env: { ...process.env, PODWARP_PIN_NAME: pinName, PODWARP_RUN_DIR: path.join(env!.dir, 'run') } as Record<string, string>,
    });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('/namespaces/0/name: must match pattern');
    expect(fs.existsSync(path.join(path.dirname(env!.dp.pinRoot), pinName))).toBe(false);
  });

  it('stops on SIGTERM and leaves the datapath in place', async () => {
    const a = agents.pop()!;
    a.child.kill('SIGTERM');
    const r = await a.child;
    expect(r.exitCode).toBe(0);
    expect(env!.dp.isLoaded()).toBe(true);
    expect((await env!.dp.tc.status()).every((x) => x.attached)).toBe(true);
  });
});
