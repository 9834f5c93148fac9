// No byte lost when sockets leave acceleration, in both worlds: with the
// drain iterator (bpf/iter/pw_sock_iter.c) as the kernel gives it, and with
// it refused (PODWARP_TEST_REFUSE=drain, as a kernel refusing BPF tracing
// programs does). A checksummed stream whose reader is slow (so redirected
// data waits in its psock queue) runs through disable → enable → agent
// SIGKILL → restart → uninstall; both ends must see every byte the other
// sent. The designed fallback (loader/sockdrain.ts): without the iterator a
// drained socket stays in pw_sock on passthrough until it closes, and
// uninstall refuses while accelerated sockets are open.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { startServer, stream, type Server } from '../../devtools/perf.js';
import { socketRows } from '../../src/commands/dump.js';
import { readActual } from '../../src/pods/apply.js';
import { CLI, SLOWDOWN, counters, delta, kernelAllows, setUp, spawnAgent, tearDown, until, type Agent, type Env } from './helpers.js';

const WORLDS = [
  { name: 'the drain iterator as this kernel gives it', refuse: undefined },
  { name: 'the drain iterator refused (PODWARP_TEST_REFUSE=drain)', refuse: 'drain' },
] as const;

describe.each(WORLDS)('drain with $name', ({ refuse }) => {
  let env: Env | undefined;
  let server: Server | undefined;
  const agents: Agent[] = [];
  const saved = process.env.PODWARP_TEST_REFUSE;
  const cliEnv = () =>
    ({ ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_RUN_DIR: path.join(env!.dir, 'run'), PODWARP_LOG_LEVEL: 'warn' }) as Record<
      string,
      string
    >;
  const startAgent = () => {
    const a = spawnAgent(env!, ['--state', env!.m.stateFile, '--resync', '1', '--metrics-addr', '']);
    agents.push(a);
    return a;
  };
  const ready = (a: Agent) => until('agent ready', () => a.lines.find((l) => l.msg === 'ready'), 60_000);

  beforeAll(async () => {
    if (refuse) process.env.PODWARP_TEST_REFUSE = refuse;
    env = await setUp({ load: false, pods: 2, namespaces: ['team-a'] });
    await run('enable', [CLI, 'enable', 'team-a', '--state', env.m.stateFile]);
    server = await startServer(env.m.pods[1]!, 7500);
  });

  afterAll(async () => {
    if (saved === undefined) delete process.env.PODWARP_TEST_REFUSE;
    else process.env.PODWARP_TEST_REFUSE = saved;
    for (const a of agents) if (a.child.exitCode === null) a.child.kill('SIGKILL');
    for (const a of agents) await a.child.catch(() => undefined);
    await server?.stop();
    expect(await tearDown(env)).toEqual([]);
  });

  it('a slow reader loses 0 bytes through disable → enable → agent SIGKILL → restart → uninstall', async () => {
    const [client, srv] = [env!.m.pods[0]!, env!.m.pods[1]!];
    const a1 = startAgent();
    await ready(a1);
    // the world this run is in, from the loader's pins and from the kernel asked directly
    const seeing = env!.dp.sockets.canSeeQueues();
    const kernel = await kernelAllows('iter/pw_sock_iter.o', 'drain');
    expect(seeing, `kernel: ${kernel.allowed ? 'loads' : `refuses (${kernel.reason})`} the drain iterator`).toBe(kernel.allowed);
    if (refuse) expect(seeing).toBe(false);

    // the client reads a little every 2 ms, the server writes as fast as it can: redirected data waits in the client's psock
    const c0 = await counters(env!.dp);
    // it runs until the steps are done (the stop file), at most 10 minutes × the slowdown
    const stopFile = path.join(env!.dir, `stop-stream-${refuse ?? 'kernel'}`);
    const t0 = Date.now();
    const running = stream(client, srv.ip, 7500, { seconds: 600 * SLOWDOWN, paceUs: 2000, stopFile });
    const ofStream = async () =>
      (await socketRows(env!.dp)).filter((r) => r.local.startsWith(`${client.ip}:`) || r.remote.startsWith(`${client.ip}:`));
    await until('both ends of the stream in pw_sock, redirecting', async () => {
      const rows = await ofStream();
      return rows.length === 2 && rows.some((r) => r.flow === 'redirect' && r.bytes > 0);
    });
    expect(delta(c0, await counters(env!.dp), 'pw_sk_msg').redirected).toBeGreaterThan(0);

    // disable: the sockets leave acceleration (drained out, or kept on passthrough until they close)
    await run('disable', [CLI, 'disable', 'team-a', '--state', env!.m.stateFile]);
    await until('team-a disabled in pw_endpoints', async () =>
      [...(await readActual(env!.dp)).endpoints.values()].every((e) => e.flags === 0),
    );
    const afterDisable = await until('the stream sockets out of the fast path', async () => {
      const rows = await ofStream();
      const out = seeing ? rows.length === 0 : rows.length === 2 && rows.every((r) => r.flow === 'passthrough');
      return out ? rows : undefined;
    });
    if (!seeing) expect(afterDisable.map((r) => r.pending)).toEqual([null, null]); // unknown, and said so

    // enable again, then the agent dies and a new one takes over
    await run('enable', [CLI, 'enable', 'team-a', '--state', env!.m.stateFile]);
    await until('team-a enabled in pw_endpoints', async () =>
      [...(await readActual(env!.dp)).endpoints.values()].every((e) => e.flags !== 0),
    );
    a1.child.kill('SIGKILL');
    await a1.child.catch(() => undefined);
    const a2 = startAgent();
    await ready(a2);
    a2.child.kill('SIGTERM');
    await a2.child;

    const u1 = await run('uninstall', [CLI, 'uninstall', '--drain-timeout', '1'], { reject: false, env: cliEnv() });
    if (seeing) {
      expect(u1.exitCode, u1.stderr).toBe(0);
      expect(u1.stdout).toContain('removed pins');
    } else {
      // it cannot see the queues: it refuses while the stream's sockets are open, and loses nothing
      expect(u1.exitCode).not.toBe(0);
      expect(u1.stderr).toContain('accelerated sockets are still open');
      expect(u1.stderr).toContain('refused the drain iterator');
      expect((await ofStream()).length).toBe(2);
    }
    const stoppedAfter = Date.now() - t0;
    fs.writeFileSync(stopFile, '');
    const r = await running;
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    // it ran through every step (it ended on the stop file, not before)
    expect(r.seconds * 1000).toBeGreaterThanOrEqual(stoppedAfter - 1000);
    expect(r.received).toBeGreaterThan(1 << 20);
    // both ends saw every byte the other sent
    expect(server!.lines().at(-1)!).toMatchObject({ ok: true, stream_received: r.sent, stream_sent: r.received });
    if (!seeing) {
      // closed now: the kernel dropped them from pw_sock, and uninstall goes through
      const u2 = await run('uninstall', [CLI, 'uninstall', '--drain-timeout', String(5 * SLOWDOWN)], { reject: false, env: cliEnv() });
      expect(u2.exitCode, u2.stderr).toBe(0);
      expect(u2.stdout).toContain('removed pins');
    }
  });
});
