// Service load balancing at connect() against kube-proxy-style iptables, with
// N services installed both ways, and the time to write services into the
// maps. Used by `podwarp-dev bench` and test/bench/services.ts.
// Both modes run with the tc fast path on and the sockmap off, so they differ
// only in how the ClusterIP is resolved: DNAT per packet (iptables, the
// target service last in the services chain, as kube-proxy's linear match
// has it) or one rewrite at connect() (podwarp).
import fs from 'node:fs';
import type { Service, Snapshot } from '../src/model.js';
import { conn, mediansAndRatios, scratchDatapath, startServer, type Server } from './perf.js';
import { expectPath, SERVICES_PATH, withEvidence, type PathEvidence } from './evidence.js';
import { reconcile } from '../src/reconciler.js';
import { svcOpsTotal } from '../src/services/sync.js';
import * as sandbox from './sandbox.js';
import { loadStateFile } from '../src/state/load.js';
import { table } from '../src/table.js';

export type LbMode = 'iptables' | 'socket-lb';

export interface ServicesResult {
  services: number;
  backendsPerService: number;
  iptablesRestoreMs: number;
  coldSyncMs: number;
  oneChangeMs: number;
  iptablesConnPerS: number;
  socketLbConnPerS: number;
  ratio: number;
  rounds: { round: number; mode: LbMode; perSecond: number; evidence: PathEvidence }[];
}

/**
 * One sandbox (a client and two backend pods), then for each size: install the
 * services both ways, time the map writes, alternate connection-rate rounds.
 * The sandbox and datapath are removed when it returns or throws;
 * `onTeardown` gets the teardown while they are up (for a signal handler).
 */
export async function measureServices(o: {
  objs: string[];
  sizes: number[];
  backends: number;
  rounds: number;
  seconds: number;
  cpu?: number;
  say: (s: string) => void;
  onTeardown?: (teardown: () => Promise<void>) => void;
}): Promise<ServicesResult[]> {
  const { id, dir, dp } = await scratchDatapath('bench-svc');
  const servers: Server[] = [];
  const results: ServicesResult[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = async () => {
    for (const s of servers) await s.stop();
    await dp.uninstall({ force: true }).catch(() => undefined);
    await sandbox.down(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  o.onTeardown?.(() => (cleaning ??= cleanup()));
  try {
    const m = await sandbox.up({ dir, id, pods: 3, namespaces: ['bench-a', 'bench-b'] });
    await dp.load(o.objs);
    const [client, ...backendPods] = m.pods as [sandbox.SandboxPod, ...sandbox.SandboxPod[]];
    for (const p of backendPods) servers.push(await startServer(p, 8080, o.cpu));
    const base = loadStateFile(m.stateFile).snapshot;
    const real = backendPods.map((p) => ({ ip: p.ip, port: 8080 }));
    const fake = (i: number, j: number) => ({ ip: `10.98.${(i >> 8) & 255}.${i & 255}`, port: 9000 + j });

    for (const n of o.sizes) {
      // service n-1 is the one dialled: last in the iptables services chain
      const target = sandbox.vip(n - 1);
      const svcList = Array.from({ length: n }, (_, i) => ({
        vip: sandbox.vip(i),
        backends: i === n - 1 ? real : Array.from({ length: o.backends }, (_, j) => fake(i, j)),
      }));
      const services: Service[] = svcList.map((s, i) => ({
        namespace: 'bench-b',
        name: `svc-${i}`,
        clusterIP: s.vip,
        ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: s.backends[0]!.port === 8080 ? 8080 : undefined }],
        endpoints: s.backends.map((b) => ({
          ip: b.ip,
          ready: true,
          terminating: false,
          ports: [{ name: 'http', port: b.port, protocol: 'TCP' as const }],
        })),
      }));
      let t0 = performance.now();
      await sandbox.installServices(
        m,
        svcList.map((s) => ({ vip: s.vip, port: 80, proto: 'tcp', backends: s.backends })),
      );
      const iptMs = performance.now() - t0;
      const snap = (on: boolean): Snapshot => ({ ...base, namespaces: base.namespaces.map((x) => ({ ...x, accelerate: on })), services });
      // cold: the service maps empty first
      await reconcile(dp, { ...snap(true), services: [] }, undefined, { sockmap: false, lb: true });
      t0 = performance.now();
      const cold = await reconcile(dp, snap(true), undefined, { sockmap: false, lb: true });
      const coldMs = performance.now() - t0;
      // one changed service at this size: a backend of service 0 replaced
      const changed = services.map((s, i) =>
        i === 0
          ? {
              ...s,
              endpoints: [
                ...s.endpoints.slice(1),
                { ip: '10.98.255.254', ready: true, terminating: false, ports: [{ name: 'http', port: 9999, protocol: 'TCP' as const }] },
              ],
            }
          : s,
      );
      t0 = performance.now();
      const one = await reconcile(dp, { ...snap(true), services: changed }, undefined, { sockmap: false, lb: true });
      const oneMs = performance.now() - t0;
      o.say(
        `== ${n} services × ${o.backends} backends: iptables-restore ${iptMs.toFixed(0)} ms; maps cold ${coldMs.toFixed(0)} ms (${cold.svc.ops.mastersUpsert} masters, ${cold.svc.ops.slotsUpsert} slots, ${cold.svc.ops.backendsUpsert} backends); one changed service ${oneMs.toFixed(0)} ms (${svcOpsTotal(one.svc.ops)} map operations)\n`,
      );

      const rounds: ServicesResult['rounds'] = [];
      for (let r = 1; r <= o.rounds; r++) {
        for (const mode of ['iptables', 'socket-lb'] as const) {
          await reconcile(dp, { ...snap(true), services: changed }, undefined, { sockmap: false, lb: mode === 'socket-lb' });
          const { result: c, evidence } = await withEvidence(dp, () => conn(client, target, 80, { seconds: o.seconds, cpu: o.cpu }));
          if (c.errors || c.peer_mismatch) throw new Error(`${mode}: ${c.errors} failed connections, ${c.peer_mismatch} wrong peers`);
          expectPath(`round ${r}, ${mode}`, evidence, SERVICES_PATH[mode]);
          if (mode === 'socket-lb' && evidence.lbTranslated < c.connections)
            throw new Error(
              `round ${r}, socket-lb: ${c.connections} connections but only ${evidence.lbTranslated} translated at connect()`,
            );
          rounds.push({ round: r, mode, perSecond: c.per_second, evidence });
          o.say(`  round ${r} ${mode.padEnd(9)}: ${c.per_second.toFixed(0)} connections/s\n`);
        }
      }
      const lbm = mediansAndRatios(
        rounds,
        (r) => r.mode,
        ['iptables', 'socket-lb'] as const,
        ['perSecond'] as const,
        (r) => r.perSecond,
        'iptables',
      );
      const ipt = lbm.median.iptables.perSecond;
      const lb = lbm.median['socket-lb'].perSecond;
      results.push({
        services: n,
        backendsPerService: o.backends,
        iptablesRestoreMs: Math.round(iptMs),
        coldSyncMs: Math.round(coldMs),
        oneChangeMs: Math.round(oneMs),
        iptablesConnPerS: Math.round(ipt),
        socketLbConnPerS: Math.round(lb),
        ratio: lbm.ratio['socket-lb'].perSecond,
        rounds,
      });
    }
    return results;
  } finally {
    await (cleaning ??= cleanup());
  }
}

export function servicesTable(results: ServicesResult[]): string {
  return table(
    ['SERVICES', 'IPTABLES conn/s', 'SOCKET LB conn/s', 'LB/IPTABLES', 'MAPS COLD (ms)', 'ONE CHANGE (ms)'],
    results.map((r) => [
      String(r.services),
      String(r.iptablesConnPerS),
      String(r.socketLbConnPerS),
      `${r.ratio.toFixed(2)}×`,
      String(r.coldSyncMs),
      String(r.oneChangeMs),
    ]),
  );
}
