// A refused core feature switches off that feature only (loader/parts.ts):
// with sock_ops/sk_msg refused the tc fast path still carries pod↔pod
// traffic; with the socket LB refused the pods keep sockmap; status and the
// agent's /metrics name each part and the reason. A refused tc program is
// the one thing podwarp cannot run without: the agent stays up, not ready,
// saying why. Parts are refused through the test switch PODWARP_TEST_REFUSE,
// so this runs on any kernel.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { MSG_PROG } from '../../loader/pins.js';
import type { Part } from '../../loader/parts.js';
import { readConntrackMax, sizeFromConntrackMax, type MapSizing } from '../../loader/mapsize.js';
import { sink, startServer, type Server } from '../../devtools/perf.js';
import { socketRows } from '../../src/commands/dump.js';
import { reconcile } from '../../src/reconciler.js';
import { loadStateFile } from '../../src/state/load.js';
import type { Snapshot } from '../../src/model.js';
import { CLI, LB_PROGS, cgroupProgs, counters, delta, setUp, spawnAgent, tearDown, until, type Agent, type Env } from './helpers.js';

const allOn = (s: Snapshot): Snapshot => ({ ...s, namespaces: s.namespaces.map((n) => ({ ...n, accelerate: true })) });

/** Sets PODWARP_TEST_REFUSE for this file's loads; restores it after. */
function refusing(parts: string) {
  const saved = process.env.PODWARP_TEST_REFUSE;
  return {
    on: () => void (process.env.PODWARP_TEST_REFUSE = parts),
    off: () => (saved === undefined ? delete process.env.PODWARP_TEST_REFUSE : void (process.env.PODWARP_TEST_REFUSE = saved)),
  };
}

const statusJson = async (env: Env) => {
  const r = await run('status', [CLI, 'status', '-o', 'json'], {
    env: { ...process.env, PODWARP_PIN_NAME: env.pinName, PODWARP_RUN_DIR: path.join(env.dir, 'run'), PODWARP_LOG_LEVEL: 'warn' } as Record<
      string,
      string
    >,
  });
  return JSON.parse(r.stdout) as { parts: Part[]; testRefuse?: string; mapSizing: MapSizing[] };
};

describe('sock_ops and sk_msg refused: the tc fast path stays on', () => {
  let env: Env | undefined;
  let server: Server | undefined;
  const sw = refusing('sockmap');

  beforeAll(async () => {
    sw.on();
    env = await setUp({ pods: 2, namespaces: ['team-a'] });
    await reconcile(env.dp, allOn(loadStateFile(env.m.stateFile).snapshot));
    server = await startServer(env.m.pods[1]!, 7600);
  });
  afterAll(async () => {
    sw.off();
    await server?.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('records sockmap and sidecar off with the reason, pins neither, attaches only the socket LB', async () => {
    const parts = new Map(env!.dp.parts.map((p) => [p.part, p]));
    expect(parts.get('sockmap')).toMatchObject({ state: 'refused', objects: ['pw_sk_msg.o', 'pw_sockops.o'] });
    expect(parts.get('sockmap')!.reason).toContain('PODWARP_TEST_REFUSE');
    expect(parts.get('sidecar')).toMatchObject({ state: 'refused', reason: expect.stringContaining('needs sockmap, which is off') });
    expect(parts.get('socket-lb')!.state).toBe('active');
    expect(env!.dp.pins.hasProg('pw_sockops') || env!.dp.pins.hasProg(MSG_PROG)).toBe(false);
    expect(env!.dp.pins.progs().filter((p) => p.startsWith('pw_proxy_'))).toEqual([]);
    for (const p of env!.m.pods) expect(await cgroupProgs(p.cgroup)).toEqual(LB_PROGS);
  });

  it('pod↔pod bytes arrive intact through the tc redirect, and no socket enters pw_sock', async () => {
    const c0 = await counters(env!.dp);
    const r = await sink(env!.m.pods[0]!, env!.m.pods[1]!.ip, 7600, { bytes: 8 << 20, verify: true });
    expect(r).toMatchObject({ ok: true, bytes: 8 << 20, received: 8 << 20 });
    expect(r.hash).toBe(r.server_hash);
    const d = delta(c0, await counters(env!.dp));
    expect(d.redirected).toBeGreaterThan(100);
    expect(delta(c0, await counters(env!.dp), 'pw_sockops').added_pod).toBe(0);
    expect(await socketRows(env!.dp)).toEqual([]);
  });

  it('status names each part, the reason and what podwarp does instead', async () => {
    const s = await statusJson(env!);
    // no agent runs here: status reads the pins
    expect(s.parts.find((p) => p.part === 'sockmap')).toMatchObject({ state: 'refused' });
    expect(s.parts.find((p) => p.part === 'socket-lb')).toMatchObject({ state: 'active' });
    expect(s.testRefuse).toBe('sockmap');
    const text = await run('status', [CLI, 'status'], {
      env: { ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_RUN_DIR: path.join(env!.dir, 'run') } as Record<string, string>,
    });
    expect(text.stdout).toMatch(/^sockmap\s+off\s+pod↔pod TCP takes the tc fast path without socket redirection/m);
    expect(text.stdout).toContain('warning: sockmap: off — pw_sockops.o, pw_sk_msg.o not pinned by the last load');
    // the conntrack-sized maps: where their size came from, read by status itself (no agent report needed)
    const want = sizeFromConntrackMax(readConntrackMax());
    expect(s.mapSizing.map((z) => [z.map, z.entries, z.source, z.pinned])).toEqual([
      ['pw_revnat', want.entries, want.source, undefined],
      ['pw_udp_flow', want.entries, want.source, undefined],
    ]);
    expect(text.stdout).toContain(`map size: pw_revnat ${want.entries} entries (${want.detail})`);
  });
});

describe('lockdown (PODWARP_TEST_REFUSE=lockdown): no kernel reads, sockmap stays on through its fallback', () => {
  let env: Env | undefined;
  let server: Server | undefined;
  const sw = refusing('lockdown');

  beforeAll(async () => {
    sw.on();
    env = await setUp({ pods: 2, namespaces: ['team-a'] });
    await reconcile(env.dp, allOn(loadStateFile(env.m.stateFile).snapshot));
    server = await startServer(env.m.pods[1]!, 7601);
  });
  afterAll(async () => {
    sw.off();
    await server?.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('bpf/fallback/pw_sk_msg.o runs; flow control counts every redirected byte; bytes arrive intact through the sockmap', async () => {
    const parts = new Map(env!.dp.parts.map((p) => [p.part, p]));
    expect(parts.get('sockmap')).toMatchObject({ state: 'active', effect: expect.stringContaining('fallback/pw_sk_msg.o loaded') });
    expect(parts.get('sidecar')!.state).toBe('active');
    expect(parts.get('drain')!.state).toBe('refused');
    expect(parts.get('read-counter')).toMatchObject({ state: 'refused', reason: expect.stringContaining('psock msg_tot_len read') });
    expect(env!.dp.flowControl.source).toBe('none');
    const c0 = await counters(env!.dp);
    const r = await sink(env!.m.pods[0]!, env!.m.pods[1]!.ip, 7601, { bytes: 4 << 20, verify: true });
    expect(r).toMatchObject({ ok: true, bytes: 4 << 20, received: 4 << 20 });
    expect(r.hash).toBe(r.server_hash);
    const msg = delta(c0, await counters(env!.dp), 'pw_sk_msg');
    expect(msg.redirected).toBeGreaterThan(10);
    expect(delta(c0, await counters(env!.dp), 'pw_sockops').added_pod).toBe(2);
  });
});

describe('the socket LB refused: sockmap stays on', () => {
  let env: Env | undefined;
  const sw = refusing('socket-lb');

  beforeAll(async () => {
    sw.on();
    env = await setUp({ pods: 2, namespaces: ['team-a'] });
    await reconcile(env.dp, allOn(loadStateFile(env.m.stateFile).snapshot));
  });
  afterAll(async () => {
    sw.off();
    expect(await tearDown(env)).toEqual([]);
  });

  it('pods get sock_ops only; sk_msg is attached; the LB programs are not pinned', async () => {
    expect(env!.dp.parts.find((p) => p.part === 'socket-lb')).toMatchObject({ state: 'refused' });
    expect(env!.dp.parts.find((p) => p.part === 'sockmap')).toMatchObject({ state: 'active' });
    expect(env!.dp.pins.progs().filter((p) => p.startsWith('pw_lb_'))).toEqual([]);
    expect(env!.dp.pins.hasProg(MSG_PROG)).toBe(true);
    for (const p of env!.m.pods) expect(await cgroupProgs(p.cgroup)).toEqual(['pw_sockops']);
  });
});

describe('the tc program refused: the agent cannot run, stays up, not ready, and says why', () => {
  let env: Env | undefined;
  let agent: Agent | undefined;
  const sw = refusing('tc');

  beforeAll(async () => {
    sw.on();
    env = await setUp({ pods: 2, load: false });
  });
  afterAll(async () => {
    sw.off();
    if (agent && agent.child.exitCode === null) agent.child.kill('SIGKILL');
    await agent?.child.catch(() => undefined);
    expect(await tearDown(env)).toEqual([]);
  });

  it('/readyz is 503 with the reason, /metrics counts it, it retries, SIGTERM stops it', async () => {
    process.env.PODWARP_LOAD_RETRY_MS = '500';
    agent = spawnAgent(env!, ['--state', env!.m.stateFile, '--metrics-addr', '127.0.0.1:0']);
    delete process.env.PODWARP_LOAD_RETRY_MS;
    const refused = (l: { msg: string }) => l.msg.startsWith('cannot run on this node');
    await until('two load attempts refused', () => agent!.lines.filter(refused).length >= 2);
    expect(String(agent.lines.find(refused)!.err)).toContain('the kernel refused pw_tc_egress.o');
    const addr = String(agent.lines.find((l) => l.msg === 'metrics and health endpoints listening')!.addr);
    const ready = await fetch(`http://${addr}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toContain('the kernel refused pw_tc_egress.o');
    expect(await (await fetch(`http://${addr}/metrics`)).text()).toMatch(/podwarp_errors_total\{reason="datapath_load"\} [1-9]/);
    expect(agent.child.exitCode).toBeNull();
    agent.child.kill('SIGTERM');
    await agent.child.catch(() => undefined);
    expect(env!.dp.isLoaded()).toBe(false);
    expect(fs.existsSync(env!.dp.pins.prog('pw_tc_egress'))).toBe(false);
  });
});
