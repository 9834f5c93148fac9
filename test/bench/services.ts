// Benchmark: service load balancing at connect() against kube-proxy-style
// iptables, with 1,000 / 5,000 / 10,000 services installed both ways, and the
// time to write services into the maps. Not a timed test.
//   npm run bench:services -- [--sizes 1000,5000,10000] [--backends 10] [--rounds 3] [--seconds 2] [--json FILE] [--smoke]
// Both modes run with the tc fast path on and the sockmap off, so they differ
// only in how the ClusterIP is resolved: DNAT per packet (iptables, the
// target service last in the services chain, as kube-proxy's linear match
// has it) or one rewrite at connect() (podwarp).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Service, Snapshot } from '../../src/model.js';
import { conn, median, prepareTools, scratchDatapath, startServer, type Server } from '../../devtools/perf.js';
import { reconcile } from '../../src/reconciler.js';
import { svcOpsTotal } from '../../src/services/sync.js';
import * as sandbox from '../../devtools/sandbox.js';
import { loadStateFile } from '../../src/state/load.js';
import { table } from '../../src/table.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,5000,10000' },
    backends: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '2' },
    cpu: { type: 'string', default: '0' },
    json: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});
const sizes = values.smoke ? [200] : values.sizes.split(',').map(Number);
const perService = Number(values.backends);
const rounds = values.smoke ? 1 : Number(values.rounds);
const seconds = values.smoke ? 0.5 : Number(values.seconds);
const cpu = values.cpu === 'none' ? undefined : Number(values.cpu);
const say = (s: string) => process.stdout.write(s);

const objs = await prepareTools();
const { id, dir, dp } = await scratchDatapath('bench-svc');
const servers: Server[] = [];
const results: Record<string, unknown>[] = [];
let cleaning: Promise<void> | undefined;
const cleanup = async () => {
  for (const s of servers) await s.stop();
  await dp.uninstall({ force: true }).catch(() => undefined);
  await sandbox.down(dir);
  fs.rmSync(dir, { recursive: true, force: true });
};
// Ctrl-C / SIGTERM still end in the teardown
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.once(sig, () => void (cleaning ??= cleanup()).finally(() => process.exit(130)));
try {
  const m = await sandbox.up({ dir, id, pods: 3, namespaces: ['bench-a', 'bench-b'] });
  await dp.load(objs);
  const [client, ...backendPods] = m.pods as [sandbox.SandboxPod, ...sandbox.SandboxPod[]];
  for (const p of backendPods) servers.push(await startServer(p, 8080, cpu));
  const base = loadStateFile(m.stateFile).snapshot;
  const real = backendPods.map((p) => ({ ip: p.ip, port: 8080 }));
  const fake = (i: number, j: number) => ({ ip: `10.98.${(i >> 8) & 255}.${i & 255}`, port: 9000 + j });

  for (const n of sizes) {
    // service n-1 is the one dialled: last in the iptables services chain
    const target = sandbox.vip(n - 1);
    const svcList = Array.from({ length: n }, (_, i) => ({
      vip: sandbox.vip(i),
      backends: i === n - 1 ? real : Array.from({ length: perService }, (_, j) => fake(i, j)),
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
    say(
      `== ${n} services × ${perService} backends: iptables-restore ${iptMs.toFixed(0)} ms; maps cold ${coldMs.toFixed(0)} ms (${cold.svc.ops.mastersUpsert} masters, ${cold.svc.ops.slotsUpsert} slots, ${cold.svc.ops.backendsUpsert} backends); one changed service ${oneMs.toFixed(0)} ms (${svcOpsTotal(one.svc.ops)} map operations)\n`,
    );

    const rate: Record<'iptables' | 'socket-lb', number[]> = { iptables: [], 'socket-lb': [] };
    for (let r = 1; r <= rounds; r++) {
      for (const mode of ['iptables', 'socket-lb'] as const) {
        await reconcile(dp, { ...snap(true), services: changed }, undefined, { sockmap: false, lb: mode === 'socket-lb' });
        const c = await conn(client, target, 80, { seconds, cpu });
        if (c.errors || c.peer_mismatch) throw new Error(`${mode}: ${c.errors} failed connections, ${c.peer_mismatch} wrong peers`);
        rate[mode].push(c.per_second);
        say(`  round ${r} ${mode.padEnd(9)}: ${c.per_second.toFixed(0)} connections/s\n`);
      }
    }
    const ipt = median(rate.iptables);
    const lb = median(rate['socket-lb']);
    results.push({
      services: n,
      backendsPerService: perService,
      iptablesRestoreMs: Math.round(iptMs),
      coldSyncMs: Math.round(coldMs),
      oneChangeMs: Math.round(oneMs),
      iptablesConnPerS: Math.round(ipt),
      socketLbConnPerS: Math.round(lb),
      ratio: lb / ipt,
    });
  }
  say(
    '\n' +
      table(
        ['SERVICES', 'IPTABLES conn/s', 'SOCKET LB conn/s', 'LB/IPTABLES', 'MAPS COLD (ms)', 'ONE CHANGE (ms)'],
        results.map((r) => [
          String(r.services),
          String(r.iptablesConnPerS),
          String(r.socketLbConnPerS),
          `${(r.ratio as number).toFixed(2)}×`,
          String(r.coldSyncMs),
          String(r.oneChangeMs),
        ]),
      ),
  );
  say(JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results }) + '\n');
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ rounds, seconds, cpu: cpu ?? null, results }, null, 2) + '\n');
} finally {
  await (cleaning ??= cleanup());
}
