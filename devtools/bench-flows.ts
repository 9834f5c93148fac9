// The bench groups that measure what applications do besides one long-lived
// request/response connection, each on the normal path, the tc fast path and
// tc + sockmap side by side, rounds alternating (normal, tc, tc + sockmap,
// normal, …) so that drift hits all alike:
//   new connections pod→pod and pod→ClusterIP (kube-proxy-style iptables DNAT
//     on the normal path, the socket LB on the others),
//   one long bulk transfer (30 s in the full bench),
//   a slow reader against an unpaced writer (goodput; no byte lost, no writer error);
//   these two with the agent's socket sweep beside them, as on a node.
// Every round reads the counters of its path (devtools/evidence.ts) and is
// refused when they contradict it. Used by devtools/bench.ts.
import type { Datapath } from '../loader/datapath.js';
import type { BenchGroup, Figure } from './bench-group.js';
import { MODE_LABEL, MODES, setMode, type Mode } from './compare.js';
import { CONN_SVC_PATH, expectPath, POD_PATH, withEvidence, type Expectation, type PathEvidence } from './evidence.js';
import { conn, iperf3, mediansAndRatios, sink, stream, type Server } from './perf.js';
import * as sandbox from './sandbox.js';
import type { Snapshot } from '../src/model.js';
import { DEFAULT_SWEEP_MS } from '../src/agent.js';
import { scaled } from './slowdown.js';
import { table } from '../src/table.js';

/** The sandbox the groups run on: a client pod, a server pod with `pwperf server` (and iperf3 -s, when installed). */
export interface FlowsSetup {
  dp: Datapath;
  m: sandbox.SandboxManifest;
  base: Snapshot;
  client: sandbox.SandboxPod;
  server: sandbox.SandboxPod;
  /** the pwperf server in `server` */
  srv: Server;
  port: number;
  iperf3Port?: number;
  rounds: number;
  seconds: number;
  /** the length of the long transfer */
  longSeconds: number;
  cpu?: number;
  say: (s: string) => void;
}

/** The paths of a group whose rounds `interleave` runs, with what their counters must show. */
interface PathSpec {
  id: Mode;
  label: string;
  want: Expectation;
}

type GroupHead = Pick<BenchGroup, 'id' | 'title' | 'what' | 'figures'> & { paths: PathSpec[] };

const POD_PATHS: PathSpec[] = MODES.map((m) => ({ id: m, label: MODE_LABEL[m].toLowerCase(), want: POD_PATH[m] }));

/**
 * Rounds × paths in alternating order: `enter` puts the datapath on the path,
 * `measure` runs under the counters (its values are the round's figures),
 * and a round whose counters contradict its path stops the run. Medians per
 * path and figure, ratios against the first path.
 */
async function interleave(
  o: FlowsSetup,
  head: GroupHead,
  enter: (mode: Mode) => Promise<void>,
  measure: (mode: Mode) => Promise<{ values: Record<string, number>; check?: (e: PathEvidence) => void; line: string }>,
): Promise<BenchGroup> {
  head = { ...head, title: `${head.title}, ${o.m.wiring} wiring` };
  const rounds: BenchGroup['rounds'] = [];
  for (let round = 1; round <= o.rounds; round++)
    for (const p of head.paths) {
      await enter(p.id);
      const { result, evidence } = await withEvidence(o.dp, () => measure(p.id));
      expectPath(`${head.title}, round ${round}, ${p.label}`, evidence, p.want);
      result.check?.(evidence);
      rounds.push({ round, path: p.id, values: result.values, evidence });
      o.say(`round ${round} ${p.label.padEnd(24)}: ${result.line}\n`);
    }
  const baseline = head.paths[0]!.id;
  const { median: med, ratio } = mediansAndRatios(
    rounds,
    (r) => r.path,
    head.paths.map((p) => p.id),
    head.figures.map((f) => f.key),
    (r, k) => r.values[k]!,
    baseline,
  );
  const g: BenchGroup = {
    ...head,
    baseline,
    paths: head.paths.map((p) => ({ id: p.id, label: p.label })),
    rounds,
    median: med,
    ratio,
  };
  o.say(groupTable(g) + '\n');
  return g;
}

const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/** A group's medians and ratios as a text table. */
function groupTable(g: BenchGroup): string {
  const others = g.paths.filter((p) => p.id !== g.baseline);
  return table(
    [
      `${g.title.toUpperCase()} (median)`,
      ...g.paths.map((p) => p.label.toUpperCase()),
      ...others.map((p) => `${p.id}/${g.baseline}`.toUpperCase()),
      '',
    ],
    g.figures.map((f) => [
      f.label,
      ...g.paths.map((p) => `${fmt(g.median[p.id]![f.key]!)} ${f.unit}`),
      ...others.map((p) => `${g.ratio[p.id]![f.key]!.toFixed(2)}×`),
      `${f.better} is better`,
    ]),
  );
}

const CONN_WHAT =
  'New TCP connections one after another (pwperf conn): connect, a 16-byte request, an 8-byte answer naming the server address, ' +
  'getpeername() checked against the address dialled, close (the client first).';

function connRound(r: Awaited<ReturnType<typeof conn>>, what: string): { values: Record<string, number>; line: string } {
  if (r.errors || r.peer_mismatch)
    throw new Error(`${what}: ${r.errors} failed connections, ${r.peer_mismatch} wrong peers${r.error ? ` (${r.error})` : ''}`);
  return { values: { conn_per_s: r.per_second }, line: `${r.per_second.toFixed(0)} connections/s` };
}

/** New connections to the server pod's address. */
export function connPodPod(o: FlowsSetup): Promise<BenchGroup> {
  o.say(`== new connections pod→pod: ${o.rounds} rounds × ${o.seconds}s\n`);
  return interleave(
    o,
    {
      id: 'conn-pod-pod',
      title: 'new connections pod→pod',
      what: CONN_WHAT,
      figures: [{ key: 'conn_per_s', label: 'new connections/s to a pod', unit: 'conn/s', better: 'higher' }],
      paths: POD_PATHS,
    },
    (mode) => setMode(o.dp, o.base, mode),
    async () => connRound(await conn(o.client, o.server.ip, o.port, { seconds: o.seconds, cpu: o.cpu }), 'pod→pod'),
  );
}

/**
 * New connections to a ClusterIP whose one backend is the server pod: on the
 * normal path kube-proxy-style iptables DNAT resolves it (podwarp off); on
 * the others the socket LB rewrites the connect() and the tc fast path (and
 * the sockmap) carry the connection.
 */
export async function connClusterIp(o: FlowsSetup): Promise<BenchGroup> {
  const vip = sandbox.vip(0);
  await sandbox.installServices(o.m, [{ vip, port: 80, proto: 'tcp', backends: [{ ip: o.server.ip, port: o.port }] }]);
  const withService: Snapshot = {
    ...o.base,
    services: [
      {
        namespace: o.server.namespace,
        name: 'bench-conn',
        clusterIP: vip,
        ports: [{ name: 'tcp', port: 80, protocol: 'TCP', targetPort: o.port }],
        endpoints: [{ ip: o.server.ip, ready: true, terminating: false, ports: [{ name: 'tcp', port: o.port, protocol: 'TCP' }] }],
      },
    ],
  };
  const label: Record<Mode, string> = { normal: 'iptables DNAT (kube-proxy)', tc: 'socket LB + tc', sockmap: 'socket LB + tc + sockmap' };
  o.say(`== new connections pod→ClusterIP: ${o.rounds} rounds × ${o.seconds}s\n`);
  return interleave(
    o,
    {
      id: 'conn-clusterip',
      title: 'new connections pod→ClusterIP',
      what: `${CONN_WHAT} The address dialled is a ClusterIP with the server pod as its one backend.`,
      figures: [{ key: 'conn_per_s', label: 'new connections/s to a ClusterIP', unit: 'conn/s', better: 'higher' }],
      paths: MODES.map((m) => ({ id: m, label: label[m], want: CONN_SVC_PATH[m] })),
    },
    (mode) => setMode(o.dp, withService, mode),
    async (mode) => {
      const c = await conn(o.client, vip, 80, { seconds: o.seconds, cpu: o.cpu });
      return {
        ...connRound(c, `ClusterIP, ${label[mode]}`),
        // every connect() rewritten by the socket LB, not only some
        check: (e) => {
          if (mode !== 'normal' && e.lbTranslated < c.connections)
            throw new Error(`ClusterIP, ${label[mode]}: ${c.connections} connections but ${e.lbTranslated} translated at connect()`);
        },
      };
    },
  );
}

/**
 * Runs `f` with the agent's socket sweep beside it, as on a node: every
 * DEFAULT_SWEEP_MS the connections with a direction on TCP leave pw_sock
 * (a no-op where the kernel refuses the drain iterator).
 */
async function withAgentSweep<T>(dp: Datapath, f: () => Promise<T>): Promise<T> {
  let stopped = false;
  let wake = () => {};
  const sweeps = (async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, DEFAULT_SWEEP_MS);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      if (!stopped) await dp.sockets.drainPassthrough();
    }
  })();
  try {
    return await f();
  } finally {
    stopped = true;
    wake();
    await sweeps;
  }
}

/** One bulk stream of `longSeconds` per round and tool (pwperf sink, iperf3 when installed). */
export function longTransfer(o: FlowsSetup): Promise<BenchGroup> {
  const s = o.longSeconds;
  const figures: Figure[] = [
    { key: 'gbps', label: `TCP bulk, one ${s} s stream (pwperf)`, unit: 'Gbit/s', better: 'higher' },
    ...(o.iperf3Port
      ? [{ key: 'iperf3_gbps', label: `TCP bulk, one ${s} s stream (iperf3)`, unit: 'Gbit/s', better: 'higher' as const }]
      : []),
  ];
  o.say(`== long transfer: ${o.rounds} rounds × ${s}s per tool\n`);
  return interleave(
    o,
    {
      id: 'long-transfer',
      title: 'long transfer pod→pod',
      what:
        `One TCP stream of ${s} s per round (pwperf sink, then iperf3 when installed): the state a bulk flow settles in, not its first seconds. ` +
        "The agent's socket sweep runs beside it every 2 s, as on a node.",
      figures,
      paths: POD_PATHS,
    },
    (mode) => setMode(o.dp, o.base, mode),
    () =>
      withAgentSweep(o.dp, async () => {
        const bulk = await sink(o.client, o.server.ip, o.port, { seconds: s, cpu: o.cpu });
        if (!bulk.ok) throw new Error(`long transfer lost bytes: sent ${bulk.bytes}, server got ${bulk.received}`);
        const values: Record<string, number> = { gbps: bulk.gbps };
        if (o.iperf3Port) values.iperf3_gbps = await iperf3(o.client, o.server.ip, o.iperf3Port, { seconds: s, cpu: o.cpu });
        return {
          values,
          line: `bulk ${bulk.gbps.toFixed(2)} Gbit/s${values.iperf3_gbps === undefined ? '' : `, iperf3 ${values.iperf3_gbps.toFixed(2)} Gbit/s`}`,
        };
      }),
  );
}

/** How long the slow reader sleeps after each of its writes (it reads at most 64 KiB in between). */
const SLOW_READER_PACE_US = 2000;

/**
 * A checksummed bidirectional stream (pwperf stream) whose client reads at
 * most 64 KiB every 2 ms while the server writes as fast as poll() lets it.
 * The figure is what the slow reader received per second; a lost, duplicated
 * or reordered byte, or an error on either side, stops the run.
 */
export function slowReader(o: FlowsSetup): Promise<BenchGroup> {
  o.say(`== slow reader: ${o.rounds} rounds × ${o.seconds}s\n`);
  return interleave(
    o,
    {
      id: 'slow-reader',
      title: 'slow reader pod→pod',
      what:
        `A checksummed stream both ways (pwperf stream): the server writes without pause, the client reads at most 64 KiB and sleeps ${SLOW_READER_PACE_US / 1000} ms between reads. ` +
        'Goodput is what the slow reader received; every byte is checked at both ends and no writer may see an error. ' +
        "The agent's socket sweep runs beside it every 2 s, as on a node.",
      figures: [{ key: 'goodput_mbs', label: 'slow reader goodput', unit: 'MB/s', better: 'higher' }],
      paths: POD_PATHS,
    },
    (mode) => setMode(o.dp, o.base, mode),
    () =>
      withAgentSweep(o.dp, async () => {
        const seen = o.srv.lines().length;
        const r = await stream(o.client, o.server.ip, o.port, { seconds: o.seconds, paceUs: SLOW_READER_PACE_US, cpu: o.cpu });
        if (!r.ok) throw new Error(`slow reader: the reader's side failed: ${r.error ?? 'no byte received'}`);
        const w = (await o.srv.line(seen, scaled(10_000))) as { ok: boolean; stream_sent: number; stream_received: number };
        if (!w.ok || w.stream_sent !== r.received || w.stream_received !== r.sent)
          throw new Error(
            `slow reader: the writer sent ${w.stream_sent} bytes, the reader got ${r.received}; the reader sent ${r.sent}, the writer got ${w.stream_received}` +
              (w.ok ? '' : '; the writer saw an error'),
          );
        const mbs = r.received / r.seconds / 1e6;
        return { values: { goodput_mbs: mbs }, line: `${mbs.toFixed(1)} MB/s read, ${r.received} bytes, none lost` };
      }),
  );
}
