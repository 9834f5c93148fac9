// `podwarp demo`: the whole story on a local sandbox, in one run.
//  1. build the programs and pwperf; bring up a sandbox (2 namespaces, 4 pods)
//  2. alternate rounds: normal path, then accelerated, measuring pod→pod TCP
//     request/response latency and bulk throughput; report medians and ratios
//  3. dump the endpoints map
//  4. disable one namespace; show its traffic back on the normal path (counters)
//  5. tear everything down (datapath and sandbox), also on failure
import fs from 'node:fs';
import * as ipr from '../host/ip.js';
import { log } from '../host/log.js';
import { compare, compareSidecar, comparisonTable, roundLine, sidecarTable, withAccel } from './compare.js';
import { hasIperf3, prepareTools, scratchDatapath, sink, startIperf3Server, startProxy, startServer, stream, type Server } from './perf.js';
import { reconcile } from '../src/reconciler.js';
import * as sandbox from './sandbox.js';
import { loadStateFile } from '../src/state/load.js';
import { table } from '../src/table.js';
import { dumpEndpoints, dumpSockets, statRows } from '../src/commands/dump.js';

export interface DemoOptions {
  seconds: number;
  rounds: number;
  wiring: sandbox.Wiring;
  /** Pin client and server to this CPU (undefined: let the scheduler place them). */
  cpu?: number;
}

let stdoutGone = false;
const say = (s: string) => {
  if (!stdoutGone) process.stdout.write(s);
};

async function txPackets(dev: string): Promise<number> {
  return (await ipr.link(dev, undefined, true))?.stats64?.tx.packets ?? 0;
}

export async function demo(o: DemoOptions): Promise<void> {
  const objs = await prepareTools();
  const { id, dir, dp } = await scratchDatapath('demo');
  const servers: Server[] = [];
  let failed = false;
  // a closed pipe (`| head`) or Ctrl-C must still end in the teardown below
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') stdoutGone = true;
  });
  let stopSignal: string | undefined;
  const onSignal = (sig: string) => {
    stopSignal = sig;
    log.warn({ signal: sig }, 'demo interrupted; tearing down');
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal).on('SIGHUP', onSignal);
  const checkStop = () => {
    if (stopSignal) throw new Error(`interrupted by ${stopSignal}`);
  };
  try {
    say(
      `== podwarp demo: ${o.wiring} sandbox, ${o.rounds} rounds × ${o.seconds}s per measurement, ${o.cpu === undefined ? 'unpinned' : `client and server pinned to CPU ${o.cpu}`}\n`,
    );
    const m = await sandbox.up({ dir, id, pods: 4, namespaces: ['team-a', 'team-b'], wiring: o.wiring });
    const [client, server] = [m.pods[0]!, m.pods[1]!]; // team-a/pod-0 → team-b/pod-1
    say(`sandbox ${m.id}: ${m.pods.map((p) => `${p.namespace}/${p.name}=${p.ip}`).join(' ')}\n`);
    say(`client ${client.namespace}/${client.name} → server ${server.namespace}/${server.name} (${server.ip}:7000)\n\n`);
    // team-a/pod-2 runs an Istio-style sidecar (the pwproxy fixture, uid 1337, port 15001)
    const snap = loadStateFile(m.stateFile).snapshot;
    const app = m.pods[2]!;
    const base = { ...snap, pods: snap.pods.map((p) => (p.name === app.name ? { ...p, sidecar: true } : p)) };
    await dp.load(objs);
    servers.push(await startServer(server, 7000, o.cpu));

    const iperf3Port = (await hasIperf3()) ? 7001 : undefined;
    if (iperf3Port) servers.push(await startIperf3Server(server, iperf3Port));
    const c = await compare({
      dp,
      base,
      client,
      server,
      port: 7000,
      iperf3Port,
      rounds: o.rounds,
      seconds: o.seconds,
      cpu: o.cpu,
      onRound: (r) => {
        say(roundLine(r));
        checkStop();
      },
    });
    checkStop();
    say('\n' + comparisonTable(c));

    say(`\n== app ↔ sidecar: ${app.namespace}/${app.name} → its proxy (pwproxy, uid 1337, :15001, SO_ORIGINAL_DST) → ${server.name}\n`);
    servers.push(await startProxy(app, 15001, 1337, o.cpu));
    const sc = await compareSidecar({
      dp,
      base,
      client: app,
      server,
      port: 7000,
      proxyPort: 15001,
      proxyUid: 1337,
      rounds: o.rounds,
      seconds: o.seconds,
      cpu: o.cpu,
      onRound: (line) => {
        say(line);
        checkStop();
      },
    });
    say('\n' + sidecarTable(sc));

    say('\n== podwarp dump endpoints\n' + (await dumpEndpoints(dp, 'table')));
    // a live accelerated connection, as `podwarp dump sockets` shows it
    const live = stream(client, server.ip, 7000, { seconds: 1.5, paceUs: 1000 });
    await new Promise((r) => setTimeout(r, 500));
    say('\n== podwarp dump sockets (during a 1.5 s checksummed stream)\n' + (await dumpSockets(dp, 'table')));
    const sr = await live;
    if (!sr.ok) throw new Error(`stream failed: ${sr.error ?? 'mismatch'}`);

    // disable team-a: its pod's traffic goes back to the normal path
    await reconcile(dp, withAccel(withAccel(base, true), false, client.namespace));
    const before = await statRows(dp);
    const txBefore = await txPackets(server.hostInterface);
    const check = await sink(client, server.ip, 7000, { bytes: 20_000_000, verify: true });
    const after = await statRows(dp);
    const txAfter = await txPackets(server.hostInterface);
    say(
      `\n== namespace ${client.namespace} disabled: 20 MB ${client.name} → ${server.name}, ${check.ok ? 'hash ok' : 'HASH MISMATCH'}; counters that moved:\n`,
    );
    const deltas = after
      .map((a, i) => [`${a.program} ${a.reason}`, a.packets - before[i]!.packets] as [string, bigint])
      .filter(([, d]) => d > 0n);
    say(
      table(
        ['PW_STATS PROGRAM REASON', 'DELTA'],
        [...deltas, ['(host veth ' + server.hostInterface + ' tx, normal path)', BigInt(txAfter - txBefore)]],
      ),
    );
    if (!check.ok) throw new Error('transfer after disabling was corrupted');
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
    for (const s of servers) await s.stop().catch(() => undefined);
    const u = await dp.uninstall().catch((e: unknown) => (log.error({ err: String(e) }, 'uninstall failed'), undefined));
    const d = await sandbox.down(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    say(
      `\n== teardown: uninstalled (${u ? `${u.detached.length} attachments, pins removed` : 'FAILED'}), sandbox removed (${d.removed.length} objects${d.errors.length ? `, errors: ${d.errors.join('; ')}` : ''})${failed ? ' after failure' : ''}\n`,
    );
  }
}
