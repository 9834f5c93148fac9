// `podwarp demo`: the whole story on a local sandbox, in one run.
//  1. build the programs and pwperf; bring up a sandbox (2 namespaces, 4 pods)
//  2. alternate rounds: normal path, then accelerated, measuring pod→pod TCP
//     request/response latency and bulk throughput; report medians and ratios
//  3. dump the endpoints map
//  4. disable one namespace; show its traffic back on the normal path (counters)
//  5. tear everything down (datapath and sandbox), also on failure
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Datapath } from '../../loader/datapath.js';
import { requireDatapathFeatures } from '../../loader/features.js';
import * as ipr from '../../loader/ip.js';
import { build } from '../build.js';
import { log } from '../log.js';
import type { Snapshot } from '../model.js';
import { ensurePwperf, median, rr, sink, startServer, type Server } from '../perf.js';
import { reconcile } from '../reconciler.js';
import * as sandbox from '../sandbox.js';
import { loadStateFile } from '../state/load.js';
import { table } from '../table.js';
import { dumpEndpoints, statRows } from './dump.js';

export interface DemoOptions {
  seconds: number;
  rounds: number;
  wiring: sandbox.Wiring;
  /** Pin client and server to this CPU (undefined: let the scheduler place them). */
  cpu?: number;
}

const say = (s: string) => process.stdout.write(s);

function setAccel(snap: Snapshot, on: boolean, only?: string): Snapshot {
  return { ...snap, namespaces: snap.namespaces.map((n) => (only && n.name !== only ? n : { ...n, accelerate: on })) };
}

async function txPackets(dev: string): Promise<number> {
  return (await ipr.link(dev, undefined, true))?.stats64?.tx.packets ?? 0;
}

export async function demo(o: DemoOptions): Promise<void> {
  await requireDatapathFeatures();
  const objs = await build();
  await ensurePwperf();
  const id = crypto.randomBytes(2).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'podwarp-demo-'));
  const dp = await Datapath.open(`podwarp_demo_${id}`);
  const servers: Server[] = [];
  let failed = false;
  try {
    say(`== podwarp demo: ${o.wiring} sandbox, ${o.rounds} rounds × ${o.seconds}s per measurement, ${o.cpu === undefined ? 'unpinned' : `client and server pinned to CPU ${o.cpu}`}\n`);
    const m = await sandbox.up({ dir, id, pods: 4, namespaces: ['team-a', 'team-b'], wiring: o.wiring });
    const [client, server] = [m.pods[0]!, m.pods[1]!]; // team-a/pod-0 → team-b/pod-1
    say(`sandbox ${m.id}: ${m.pods.map((p) => `${p.namespace}/${p.name}=${p.ip}`).join(' ')}\n`);
    say(`client ${client.namespace}/${client.name} → server ${server.namespace}/${server.name} (${server.ip}:7000)\n\n`);
    const base = loadStateFile(m.stateFile).snapshot;
    await dp.load(objs);
    servers.push(await startServer(server, 7000, o.cpu));

    const res = { normal: { p50: [] as number[], p99: [] as number[], gbps: [] as number[] }, accel: { p50: [] as number[], p99: [] as number[], gbps: [] as number[] } };
    for (let r = 1; r <= o.rounds; r++) {
      for (const mode of ['normal', 'accel'] as const) {
        await reconcile(dp, setAccel(base, mode === 'accel'));
        const lat = await rr(client, server.ip, 7000, { seconds: o.seconds, cpu: o.cpu });
        const bulk = await sink(client, server.ip, 7000, { seconds: o.seconds, cpu: o.cpu });
        if (!bulk.ok) throw new Error(`bulk transfer lost bytes: sent ${bulk.bytes}, server got ${bulk.received}`);
        res[mode].p50.push(lat.p50_us);
        res[mode].p99.push(lat.p99_us);
        res[mode].gbps.push(bulk.gbps);
        say(`round ${r} ${mode === 'accel' ? 'accelerated' : 'normal     '}: rr p50 ${lat.p50_us.toFixed(1)}µs p99 ${lat.p99_us.toFixed(1)}µs (${lat.n} exchanges), bulk ${bulk.gbps.toFixed(2)} Gbit/s\n`);
      }
    }
    const row = (name: string, unit: string, a: number[], b: number[], better: 'lower' | 'higher') => {
      const [n, x] = [median(a), median(b)];
      return [name, `${n.toFixed(2)} ${unit}`, `${x.toFixed(2)} ${unit}`, `${(x / n).toFixed(2)}×`, better === 'lower' ? 'lower is better' : 'higher is better'];
    };
    say('\n' + table(['METRIC (median)', 'NORMAL PATH', 'ACCELERATED', 'RATIO', ''], [
      row('TCP RR latency p50', 'µs', res.normal.p50, res.accel.p50, 'lower'),
      row('TCP RR latency p99', 'µs', res.normal.p99, res.accel.p99, 'lower'),
      row('TCP bulk throughput', 'Gbit/s', res.normal.gbps, res.accel.gbps, 'higher'),
    ]));

    say('\n== podwarp dump endpoints\n' + (await dumpEndpoints(dp, 'table')));

    // disable team-a: its pod's traffic goes back to the normal path
    await reconcile(dp, setAccel(setAccel(base, true), false, client.namespace));
    const before = await statRows(dp);
    const txBefore = await txPackets(server.hostInterface);
    const check = await sink(client, server.ip, 7000, { bytes: 20_000_000, verify: true });
    const after = await statRows(dp);
    const txAfter = await txPackets(server.hostInterface);
    say(`\n== namespace ${client.namespace} disabled: 20 MB ${client.name} → ${server.name}, ${check.ok ? 'hash ok' : 'HASH MISMATCH'}\n`);
    const deltas = after
      .map((a, i) => [a.reason, a.packets - before[i]!.packets] as [string, bigint])
      .filter(([, d]) => d > 0n);
    say(table(['PW_STATS REASON', 'DELTA PACKETS'], [...deltas, ['(host veth ' + server.hostInterface + ' tx, normal path)', BigInt(txAfter - txBefore)]]));
    if (!check.ok) throw new Error('transfer after disabling was corrupted');
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    for (const s of servers) await s.stop().catch(() => undefined);
    const u = await dp.uninstall().catch((e: unknown) => (log.error({ err: String(e) }, 'uninstall failed'), undefined));
    const d = await sandbox.down(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    say(`\n== teardown: uninstalled (${u ? `${u.detached.length} attachments, pins removed` : 'FAILED'}), sandbox removed (${d.removed.length} objects${d.errors.length ? `, errors: ${d.errors.join('; ')}` : ''})${failed ? ' after failure' : ''}\n`);
  }
}
