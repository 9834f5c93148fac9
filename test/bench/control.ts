// Benchmark: the Kubernetes control loop at scale. The real agent process
// (--source kubernetes) against the API server double holding N Services
// with E endpoints each (one EndpointSlice per Service), real pinned maps.
// Not a timed test.
//   npm run bench:control -- [--services 10000] [--endpoints 10] [--changes 200] [--gap-ms 60] [--json FILE] [--smoke]
// Reports:
//   cold start   agent spawn → caches synced → maps written → ready
//   RSS          the agent's resident memory once ready and at the end (VmRSS, VmHWM)
//   per change   one EndpointSlice (or Service) changed in the API → the agent's
//                log line saying the maps hold it (pino `time`, same clock), then
//                checked in the map itself for the last change
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { ResultPromise } from 'execa';
import { onLines, spawnLong } from '../../host/exec.js';
import { ROOT } from '../../loader/build.js';
import { prepareTools, scratchDatapath } from '../../devtools/perf.js';
import { table } from '../../src/table.js';
import { FakeApiServer, type ApiObject } from '../k8s/apiserver.js';
import { BpfServiceMaps } from '../../src/services/maps.js';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '10000' },
    endpoints: { type: 'string', default: '10' },
    changes: { type: 'string', default: '200' },
    'gap-ms': { type: 'string', default: '60' },
    'agent-node-options': { type: 'string', default: '' },
    json: { type: 'string' },
    smoke: { type: 'boolean', default: false },
  },
});
const N = values.smoke ? 500 : Number(values.services);
const E = Number(values.endpoints);
const CHANGES = values.smoke ? 20 : Number(values.changes);
const GAP = Number(values['gap-ms']);
const say = (s: string) => process.stdout.write(s);
const CLI = path.join(ROOT, 'bin', 'podwarp');
const NODE = 'bench-node';

const vip = (i: number) => `10.96.${(i >> 8) & 255}.${i & 255}`;
// endpoint j of service i: distinct addresses across the whole cluster (N × E backends)
const epIp = (i: number, j: number) => {
  const n = i * E + j + 1;
  return `10.${100 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`;
};
const nsOf = (i: number) => `ns-${i % 100}`;
const portOf = new Map<number, number>();
const service = (i: number): ApiObject => ({
  metadata: { name: `svc-${i}`, namespace: nsOf(i) },
  spec: {
    type: 'ClusterIP',
    clusterIP: vip(i),
    clusterIPs: [vip(i)],
    ports: [{ name: 'http', port: portOf.get(i) ?? 80, protocol: 'TCP', targetPort: 'http' }],
  },
});
const slice = (i: number, ips: string[]): ApiObject => ({
  metadata: { name: `svc-${i}-abcde`, namespace: nsOf(i), labels: { 'kubernetes.io/service-name': `svc-${i}` } },
  addressType: 'IPv4',
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-x' })),
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

function rss(pid: number): { rssMiB: number; hwmMiB: number } {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? 0);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

await prepareTools();
const { dir, dp } = await scratchDatapath('bench-control');
const api = await FakeApiServer.start({ historyLimit: 100_000 });
let agent: ResultPromise | undefined;
const cleanup = async () => {
  agent?.kill('SIGKILL');
  await agent?.catch(() => undefined);
  await api.stop();
  await dp.uninstall({ force: true }).catch(() => undefined);
  fs.rmSync(dir, { recursive: true, force: true });
};
let cleaning: Promise<void> | undefined;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
  process.once(sig, () => void (cleaning ??= cleanup()).finally(() => process.exit(130)));

try {
  say(`loading the API double: ${N} Services, ${N} EndpointSlices × ${E} endpoints (${N * E} endpoints), 100 namespaces\n`);
  api.load(
    'namespaces',
    Array.from({ length: 100 }, (_, i) => ({
      metadata: { name: `ns-${i}`, labels: (i % 2 ? { 'podwarp.io/accelerate': 'true' } : {}) as Record<string, string> },
    })),
  );
  api.load(
    'services',
    Array.from({ length: N }, (_, i) => service(i)),
  );
  api.load(
    'endpointslices',
    Array.from({ length: N }, (_, i) =>
      slice(
        i,
        Array.from({ length: E }, (_, j) => epIp(i, j)),
      ),
    ),
  );
  const kubeconfig = api.kubeconfig(dir);

  let lines: { msg: string; time: number; [k: string]: unknown }[] = [];
  const startAgent = () => {
    lines = [];
    const a = spawnLong(
      [
        CLI,
        'agent',
        '--source',
        'kubernetes',
        '--kubeconfig',
        kubeconfig,
        '--node',
        NODE,
        '--metrics-addr',
        '',
        '--full-resync',
        '3600',
        '--resync',
        '30',
      ],
      {
        env: {
          ...process.env,
          PODWARP_PIN_NAME: path.basename(dp.pinRoot),
          PODWARP_RUN_DIR: path.join(dir, 'run'),
          PODWARP_LOG_LEVEL: 'info',
          NODE_OPTIONS: values['agent-node-options'],
        } as Record<string, string>,
      },
    );
    const mine = lines;
    onLines(a.stderr!, (l) => {
      try {
        mine.push(JSON.parse(l) as (typeof lines)[number]);
      } catch {
        /* not JSON */
      }
    });
    return a;
  };
  let t0 = Date.now();
  agent = startAgent();
  let pid = agent.pid!;
  const waitFor = async (f: () => boolean, what: string, ms: number) => {
    const end = Date.now() + ms;
    while (!f()) {
      if (agent!.exitCode !== null && agent!.exitCode !== undefined)
        throw new Error(
          `agent exited while waiting for ${what}: ${lines
            .slice(-3)
            .map((l) => JSON.stringify(l))
            .join('\n')}`,
        );
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await waitFor(() => lines.some((l) => l.msg === 'ready'), 'ready', 600_000);
  const synced = lines.find((l) => l.msg === 'caches synced')!;
  const ready = lines.find((l) => l.msg === 'ready')!;
  const loaded = lines.find((l) => l.msg === 'datapath ready')!;
  const cold = {
    syncedS: (synced.time - t0) / 1000,
    loadedS: (loaded.time - t0) / 1000,
    readyS: (ready.time - t0) / 1000,
    frontends: Number(ready.frontends),
  };
  const memReady = rss(pid);
  say(
    `cold start: caches synced ${cold.syncedS.toFixed(2)} s (heap ${String(synced.heapMiB)} MiB), programs loaded ${cold.loadedS.toFixed(2)} s, ready (maps written) ${cold.readyS.toFixed(2)} s (heap ${String(ready.heapMiB)} MiB), ${cold.frontends} frontends; RSS ${memReady.rssMiB.toFixed(0)} MiB (peak ${memReady.hwmMiB.toFixed(0)} MiB)\n`,
  );
  if (cold.frontends !== N) throw new Error(`expected ${N} frontends in pw_svc, the agent reports ${cold.frontends}`);

  // one change at a time: replace one endpoint of a random service (every 10th change: a Service's port)
  const lat: number[] = [];
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let last = { i: 0, ip: '' };
  for (let c = 0; c < CHANGES; c++) {
    const i = Math.floor(rnd() * N);
    const before = lines.length;
    const t = Date.now();
    if (c % 10 === 9) {
      // the Service's port moves (80 ↔ 81): one frontend goes, one comes
      portOf.set(i, (portOf.get(i) ?? 80) === 80 ? 81 : 80);
      api.update('services', service(i));
    } else {
      const ips = Array.from({ length: E }, (_, j) => epIp(i, j));
      ips[c % E] = `10.${180 + (c % 50)}.${(c >> 8) & 255}.${c & 255}`;
      api.update('endpointslices', slice(i, ips));
      last = { i, ip: ips[c % E]! };
    }
    await waitFor(() => lines.slice(before).some((l) => l.msg === 'reconciled'), `change ${c} applied`, 30_000);
    const done = lines.slice(before).find((l) => l.msg === 'reconciled')!;
    lat.push(done.time - t);
    await new Promise((r) => setTimeout(r, GAP));
  }
  // the last endpoint change is really in the maps (read back through bpftool, not the agent's word)
  const have = await new BpfServiceMaps(dp).read();
  const key = `${vip(last.i)}:${portOf.get(last.i) ?? 80}/6`;
  const slots = have.slots.get(key);
  const ips = [...(slots?.values() ?? [])].map((id) => have.backends.get(id)?.ip);
  if (!ips.includes(last.ip)) throw new Error(`the last change (${last.ip} in svc-${last.i}) is not in pw_svc/pw_backends`);
  const memEnd = rss(pid);
  if (process.env.PODWARP_BENCH_HEAPSNAPSHOT) {
    process.kill(pid, 'SIGUSR2');
    await new Promise((r) => setTimeout(r, 20_000));
  }
  // restart on full maps: read everything back, rewrite nothing
  agent.kill('SIGTERM');
  await agent.catch(() => undefined);
  t0 = Date.now();
  agent = startAgent();
  pid = agent.pid!;
  await waitFor(() => lines.some((l) => l.msg === 'ready'), 'ready after restart', 600_000);
  const restart = {
    syncedS: (lines.find((l) => l.msg === 'caches synced')!.time - t0) / 1000,
    loadedS: (lines.find((l) => l.msg === 'datapath ready')!.time - t0) / 1000,
    readyS: (lines.find((l) => l.msg === 'ready')!.time - t0) / 1000,
    mem: rss(pid),
    rewrites: lines.filter((l) => l.msg === 'reconciled').length,
  };
  say(
    `restart on full maps: caches synced ${restart.syncedS.toFixed(2)} s, programs loaded ${restart.loadedS.toFixed(2)} s, ready in ${restart.readyS.toFixed(2)} s, RSS ${restart.mem.rssMiB.toFixed(0)} MiB (peak ${restart.mem.hwmMiB.toFixed(0)} MiB), passes that wrote anything: ${restart.rewrites}\n`,
  );
  if (restart.rewrites !== 0) throw new Error('the restarted agent rewrote map entries');
  const res = {
    services: N,
    endpoints: N * E,
    changes: CHANGES,
    p50Ms: pct(lat, 50),
    p90Ms: pct(lat, 90),
    p99Ms: pct(lat, 99),
    maxMs: Math.max(...lat),
    coldSyncedS: cold.syncedS,
    coldReadyS: cold.readyS,
    rssReadyMiB: Math.round(memReady.rssMiB),
    rssEndMiB: Math.round(memEnd.rssMiB),
    rssPeakMiB: Math.round(memEnd.hwmMiB),
    restartReadyS: restart.readyS,
    restartRssMiB: Math.round(restart.mem.rssMiB),
    restartRssPeakMiB: Math.round(restart.mem.hwmMiB),
  };
  say(
    '\n' +
      table(
        [
          'SERVICES',
          'ENDPOINTS',
          'CHANGES',
          'P50 MS',
          'P90 MS',
          'P99 MS',
          'MAX MS',
          'SYNCED S',
          'READY S',
          'RSS READY',
          'RSS END',
          'RSS PEAK',
        ],
        [
          [
            N,
            N * E,
            CHANGES,
            res.p50Ms,
            res.p90Ms,
            res.p99Ms,
            res.maxMs,
            cold.syncedS.toFixed(2),
            cold.readyS.toFixed(2),
            `${res.rssReadyMiB} MiB`,
            `${res.rssEndMiB} MiB`,
            `${res.rssPeakMiB} MiB`,
          ],
        ],
      ),
  );
  say(`one change → maps: p99 ${res.p99Ms} ms (target < 100 ms); RSS ${res.rssEndMiB} MiB (target < 200 MiB)\n`);
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(res, null, 2) + '\n');
} finally {
  await (cleaning ??= cleanup());
}
