// The real-cluster scenarios of issue 11 (part 2), written once and run on two
// clusters: cluster.test.ts (one node built from upstream parts, reached with
// nsenter) and kind.test.ts (kind's worker node, a container reached with
// `docker exec`). What differs between them is an E2eCluster; the scenarios
// run in the order they are registered and each builds on the one before.
//
//   podwarp deployed from deploy/podwarp.yaml → the node's real pods found
//   (veth, MAC, cgroup by UID) → kubectl podwarp → label → pod→pod TCP through
//   tc and the sockmap, checksummed → label removed → a ClusterIP Service over
//   TCP and UDP, kube-proxy vs the socket LB, podwarp enable/disable → a
//   sticky client (sessionAffinity) through enable/disable → a long-lived UDP
//   flow through a rollout, off and on → a NetworkPolicy → a rolling update and a killed agent under checksummed
//   streams → DaemonSet deleted + the uninstall pod: nothing left.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { expect, it } from 'vitest';
import { encode, decode, fromHexBytes, toHexBytes } from '../../abi/codec.js';
import { MSG_REASONS, STAT_GROUPS, mapDef } from '../../abi/schema.js';
import { run, type RunResult } from '../../host/exec.js';
import { udpSessionOf } from '../../devtools/perf.js';
import { parseIptablesAffinity, parseNftAffinity } from '../../src/sources/kube-proxy-affinity.js';
import { parseProcLocks, procLocksDev } from '../../host/lock.js';
import type { SocketRow } from '../../src/commands/dump.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MANIFEST = path.join(ROOT, 'deploy', 'podwarp.yaml');
/** The traffic image of test/e2e/cluster/images.sh: busybox + pwperf. */
export const TEST_IMAGE = 'localhost/pwe2e/test:1';
export const MIN = 60_000;
const PORT = 8080;
const ACCELERATE_LABEL = 'podwarp.io/accelerate';

// what the manifest says, so the tests follow it
const manifest = YAML.parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8')).map((d) => d.toJS() as Record<string, any>);
export const ds = manifest.find((d) => d?.kind === 'DaemonSet')!;
export const agentNs: string = ds.metadata.namespace;
export const agentSelector = Object.entries(ds.spec.selector.matchLabels as Record<string, string>)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');

export interface KubectlOpts {
  input?: string;
  timeoutMs?: number;
  reject?: boolean;
}

/** What differs between the clusters. Filled in by the test file's beforeAll; read when a scenario runs. */
export interface E2eCluster {
  /** kubectl with the cluster's admin credentials */
  kubectl(args: string[], opts?: KubectlOpts): Promise<RunResult>;
  /** the argv of that kubectl, for a command that runs alongside the test (its stdin piped) */
  kubectlArgv(args: string[]): string[];
  /** the namespace of the test pods (made by the scenarios, deleted by the test file) */
  testNs: string;
  /** the node whose agent and pods the scenarios look at */
  node: string;
  /** argv prefix: a command in the node's network namespace */
  inNodeNet: string[];
  /** argv prefix: a command in the node's network and mount namespaces (its bpffs, veths, tc) */
  inNode: string[];
  /** the podwarp CLI of this checkout as a user runs it against the cluster (enable, disable) */
  podwarpCli(args: string[]): Promise<RunResult>;
  /** `kubectl podwarp ARGS` with deploy/ first on PATH (exit code not checked) */
  kubectlPlugin(args: string[]): Promise<RunResult>;
  /** tags an image in the containerd of every node (k8s.io namespace) */
  tagImage(from: string, to: string): Promise<void>;
  /** kube-proxy's mode: iptables or nftables */
  proxyMode: string;
  /** the test pods' addresses (the node's pod range) */
  podIp: RegExp;
  /** the host's path of a pod cgroup as the agent reports it, where the host can see it */
  hostCgroup?: (agentPath: string) => string;
}

/** Polls `f` until it returns something truthy; fails after `ms` with the last value it saw. */
export async function until<T>(what: string, f: () => Promise<T>, ms: number, everyMs = 1000): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (e) {
      last = e instanceof Error ? e.message : e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** On failure, prints what the cluster looks like before the error propagates. */
export async function diagnosed<T>(c: E2eCluster, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const show = async (args: string[]) => {
      const r = await c.kubectl(args, { reject: false, timeoutMs: 30_000 }).catch((x: unknown) => ({ stdout: '', stderr: String(x) }));
      console.log(`$ kubectl ${args.join(' ')}\n${r.stdout}${r.stderr}`);
    };
    await show(['get', 'nodes,pods', '-A', '-o', 'wide']);
    await show(['-n', agentNs, 'describe', 'pods', '-l', agentSelector]);
    await show(['-n', agentNs, 'logs', '-l', agentSelector, '--prefix', '--tail', '60']);
    // the servers print one line per stream connection and any fault they saw (a wrong byte, a reset)
    await show(['-n', c.testNs, 'logs', '-l', 'app in (server,server2)', '--tail', '20', '--prefix']);
    throw e;
  }
}

interface EndpointRow {
  ip: string;
  flags: string;
  [k: string]: unknown;
}
interface StatRow {
  program: string;
  reason: string;
  packets: number;
  bytes: number;
}
/** A pod's cgroup by UID: `…/pod<uid>` (the kubelet's cgroupfs driver) or `…-pod<uid with _>.slice` (systemd driver, kind's nodes). */
const isPodCgroup = (p: string, uid: string) => p.endsWith(`/pod${uid}`) || p.endsWith(`-pod${uid.replace(/-/g, '_')}.slice`);
const stat = (rows: StatRow[], program: string, reason: string) =>
  rows.find((s) => s.program === program && s.reason === reason)?.packets ?? 0;
const msgBytes = (rows: StatRow[], reason: (typeof MSG_REASONS)[number]) =>
  rows.find((x) => x.program === 'pw_sk_msg' && x.reason === reason)?.bytes ?? 0;
const skBytes = (rows: StatRow[]) => msgBytes(rows, 'redirected');
/** Bytes of every message pw_sk_msg saw, whatever its verdict: what the sockets in pw_sock sent. */
const allMsgBytes = (rows: StatRow[]) => MSG_REASONS.reduce((n, r) => n + msgBytes(rows, r), 0);
const nonZero = (rows: StatRow[]) =>
  rows
    .filter((s) => s.packets > 0)
    .map((s) => `${s.program}/${s.reason}=${s.packets}`)
    .join(' ');

/** The stream's header (struct hdr in pwperf.c): the client's first message, before the stream's bytes. */
const STREAM_HEADER = 16;

interface Sink {
  ok: boolean;
  bytes: number;
  received: number;
  hash: string;
  server_hash: string;
}
interface StreamOut {
  ok: boolean;
  sent: number;
  received: number;
}
/** The line `pwperf server` prints for each stream it served: what it received (every byte checked at its position) and sent. */
interface ServedStream {
  stream_received: number;
  stream_sent: number;
  ok: boolean;
}
/** `podwarp dump services -o json`, the fields read here */
interface ServiceRowOut {
  frontend: string;
  proto: string;
  slots: { backend: string }[];
}
interface ConnOut {
  connections: number;
  errors: number;
  peer_mismatch: number;
  backends: Record<string, number>;
}
interface UdpOut {
  replies: number;
  errors: number;
  wrong_source: number;
  peer_ok: boolean;
  backends: Record<string, number>;
}

/**
 * The endpoints kube-proxy DNATs to, as "tcp 10.151.0.2:8080": from the
 * KUBE-SEP chains (iptables) or the numgen maps and dnat statements of the
 * service chains (nftables, one map per service and protocol).
 */
function dnatTargets(rules: string[]): Set<string> {
  const out = new Set<string>();
  for (const l of rules) {
    const ipt = /-p (tcp|udp)\b.*-j DNAT --to-destination (\S+)/.exec(l);
    if (ipt) out.add(`${ipt[1]} ${ipt[2]}`);
    const nft = /meta l4proto (tcp|udp) dnat ip to (.*)$/.exec(l);
    if (nft) for (const m of nft[2]!.matchAll(/(\d+\.\d+\.\d+\.\d+)(?: \. |:)(\d+)/g)) out.add(`${nft[1]} ${m[1]}:${m[2]}`);
  }
  return out;
}

/** Registers the scenarios, in order, inside the caller's describe. */
export function registerScenarios(c: E2eCluster): void {
  const kubectl = (args: string[], opts: KubectlOpts = {}) => c.kubectl(args, opts);
  const inNs = (args: string[]) => ['-n', c.testNs, ...args];
  /** How to stop the streams still running (a running accelerated stream would hold up the uninstall). */
  const running = new Set<() => Promise<void>>();
  /** One scenario: a test whose failure prints the cluster's state; the streams it started end with it. */
  const step = (name: string, minutes: number, body: () => Promise<void>) =>
    it(
      name,
      () =>
        diagnosed(c, body).finally(async () => {
          for (const stop of running) await stop();
        }),
      minutes * MIN,
    );
  let agentPod = '';
  let serverIp = '';
  let clientIp = '';
  let server2Ip = '';

  async function podwarp<T>(args: string[]): Promise<T> {
    const r = await kubectl(['exec', '-n', agentNs, agentPod, '--', 'podwarp', ...args, '-o', 'json'], { timeoutMs: MIN });
    return JSON.parse(r.stdout) as T;
  }
  const stats = () => podwarp<StatRow[]>(['dump', 'stats']);
  async function endpointFlags(ip: string): Promise<string[] | undefined> {
    const eps = await podwarp<EndpointRow[]>(['dump', 'endpoints']);
    return eps.find((e) => e.ip === ip)?.flags.split('|');
  }
  const allEnabled = (ips: string[], on: boolean) => async () => {
    for (const ip of ips) {
      const f = await endpointFlags(ip);
      if (!f || f.includes('enabled') !== on) return false;
    }
    return true;
  };
  const agentOnNode = async () =>
    (
      await kubectl([
        '-n',
        agentNs,
        'get',
        'pods',
        '-l',
        agentSelector,
        '--field-selector',
        `spec.nodeName=${c.node}`,
        '-o',
        'jsonpath={.items[0].metadata.name}',
      ])
    ).stdout.trim();
  const rollout = () =>
    kubectl(['-n', agentNs, 'rollout', 'status', `daemonset/${ds.metadata.name}`, '--timeout=240s'], { timeoutMs: 5 * MIN });
  const podIp = async (pod: string) => (await kubectl(inNs(['get', 'pod', pod, '-o', 'jsonpath={.status.podIP}']))).stdout.trim();

  function testPod(name: string, command: string[], listens?: number): object {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: c.testNs, labels: { app: name } },
      spec: {
        // all on the node whose agent is looked at: the fast path is for same-node traffic
        nodeName: c.node,
        terminationGracePeriodSeconds: 0,
        containers: [
          {
            name,
            image: TEST_IMAGE,
            imagePullPolicy: 'Never',
            command,
            readinessProbe: listens ? { tcpSocket: { port: listens }, periodSeconds: 1 } : undefined,
          },
        ],
      },
    };
  }
  async function pwperfJson<T>(args: string[], timeoutMs = MIN): Promise<T> {
    const r = await kubectl(inNs(['exec', 'client', '--', 'pwperf', ...args]), { timeoutMs });
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
  }
  async function sinkIntact(ip: string, bytes: number): Promise<void> {
    const s = await pwperfJson<Sink>(['sink', '-c', ip, '-p', String(PORT), '-b', String(bytes), '-v']);
    expect(s.ok && s.received === bytes && s.hash === s.server_hash, JSON.stringify(s)).toBe(true);
  }
  /** The lines of the stream connections the server pod served so far (its log). */
  async function servedStreams(): Promise<ServedStream[]> {
    const r = await kubectl(inNs(['logs', 'server']));
    return r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{"stream_received"'))
      .map((l) => JSON.parse(l) as ServedStream);
  }
  let streams = 0;
  /**
   * A checksummed stream client → server in both directions until `end()`
   * (pwperf's stop file; at most 240 s), both ends paced (20 ms after each
   * write of up to 64 KiB, about 1.6 MB/s each way; a reader reads between
   * its own paced writes, so neither direction gets 16 MiB ahead of its
   * reader and moves to TCP by flow control). Returns once both of its
   * sockets are in pw_sock and redirecting: a disruption after that meets an
   * accelerated stream.
   */
  async function acceleratedStream() {
    const stopFile = `/pwe2e-stream-stop-${++streams}`;
    const served = (await servedStreams()).length;
    const before = await stats();
    const args = ['stream', '-c', serverIp, '-p', String(PORT), '-d', '240', '-i', '20000', '-P', '-x', stopFile];
    const done = pwperfJson<StreamOut>(args, 5 * MIN);
    void done.catch(() => undefined); // awaited by end(); a failure meanwhile is not an unhandled rejection
    const stop = async () => {
      running.delete(stop);
      await kubectl(inNs(['exec', 'client', '--', 'touch', stopFile]), { reject: false });
      await done.catch(() => undefined);
    };
    running.add(stop);
    const isStream = (x: SocketRow) =>
      (x.local.startsWith(`${clientIp}:`) && x.remote === `${serverIp}:${PORT}`) ||
      (x.local === `${serverIp}:${PORT}` && x.remote.startsWith(`${clientIp}:`));
    // each socket's flow is decided at its first message, for good (docs/sockmap.md)
    const flows = await until(
      "the stream's two sockets in pw_sock, their flows decided",
      async () => {
        const mine = (await podwarp<{ sockets: SocketRow[] }>(['dump', 'sockets'])).sockets.filter(isStream);
        if (mine.length !== 2 || mine.some((x) => x.flow === 'undecided')) throw new Error(`in pw_sock: ${JSON.stringify(mine)}`);
        return mine.map((x) => `${x.local} ${x.flow}`);
      },
      60_000,
      250,
    );
    expect(
      flows.filter((f) => !f.endsWith(' redirect')),
      'stream sockets not redirecting',
    ).toEqual([]);
    return {
      /** Stops the stream: the server got every byte the client sent and the reverse, and sk_msg redirected all of it. */
      async end(what: string): Promise<void> {
        await stop();
        const out = await done;
        const after = await stats();
        const lines = await until(
          `the server's line of the stream ${what}`,
          async () => {
            const l = await servedStreams();
            return l.length > served ? l : undefined;
          },
          60_000,
        );
        const d = Object.fromEntries(MSG_REASONS.map((r) => [r, msgBytes(after, r) - msgBytes(before, r)]));
        console.log(
          `stream ${what}: client ${JSON.stringify(out)}, server ${JSON.stringify(lines.at(-1))}; sk_msg bytes ${JSON.stringify(d)}`,
        );
        expect(out.ok, JSON.stringify(out)).toBe(true);
        expect(lines.length, 'stream connections served').toBe(served + 1);
        // the server's counts are the client's, crossed: a lost tail either way shows here
        expect(lines.at(-1), `the server's side of the stream ${what}`).toEqual({
          stream_received: out.sent,
          stream_sent: out.received,
          ok: true,
        });
        // sk_msg redirected every message of the stream, its header and both directions, and nothing else
        const all = Object.fromEntries(MSG_REASONS.map((r) => [r, 0]));
        expect(d, `sk_msg bytes by verdict ${what}`).toEqual({ ...all, redirected: STREAM_HEADER + out.sent + out.received });
      },
    };
  }
  /**
   * The holders of the node lock of a pin root (host/lock.ts: a flock on
   * the directory) as this host's /proc/locks shows them (one kernel): the
   * writer of the node's datapath, whether or not an agent pod answers.
   */
  async function nodeLockHolders(pinRoot: string): Promise<() => number[]> {
    const [dev, ino] = (await run('stat pin root', [...c.inNode, 'stat', '-c', '%d %i', pinRoot])).stdout.trim().split(' ');
    const key = { dev: procLocksDev(BigInt(dev!)), ino: BigInt(ino!) };
    return () =>
      parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'))
        .filter((l) => !l.waiting && l.dev === key.dev && l.ino === key.ino)
        .map((l) => l.pid);
  }
  /** sk_msg's redirected bytes from pw_stats by map id, with this host's bpftool (one kernel): readable while no agent pod runs. */
  async function skBytesOfMap(id: number): Promise<number> {
    const def = mapDef('pw_stats');
    const g = STAT_GROUPS.find((x) => x.prog === 'pw_sk_msg')!;
    const key = toHexBytes(encode(def.key, { reason: g.base + MSG_REASONS.indexOf('redirected') }));
    const r = await run('bpftool map lookup', ['bpftool', '-j', 'map', 'lookup', 'id', String(id), 'key', ...key], { timeoutMs: 30_000 });
    const e = JSON.parse(r.stdout) as { values: { value: string[] }[] };
    return e.values.reduce((n, v) => n + Number(decode(def.value, fromHexBytes(v.value)).bytes), 0);
  }
  /** kube-proxy's rules in the node's netns, without counters: its nat chains (iptables) or its `kube-proxy` table (nftables). */
  async function kubeProxyRules(): Promise<string[]> {
    const nft = c.proxyMode === 'nftables';
    const argv = nft ? ['nft', 'list', 'table', 'ip', 'kube-proxy'] : ['iptables-save', '-t', 'nat'];
    const r = await run(argv[0]!, [...c.inNodeNet, ...argv], { timeoutMs: 30_000 });
    return r.stdout
      .split('\n')
      .filter((l) => (nft ? l.trim() !== '' : /KUBE-/.test(l) && !l.startsWith('#')))
      .map((l) =>
        l
          .replace(/\[\d+:\d+\]/, '')
          .replace(/counter packets \d+ bytes \d+ ?/, '')
          .trim(),
      )
      .sort();
  }

  step('kubectl apply -f deploy/podwarp.yaml: the DaemonSet becomes ready, one agent per node', 6, async () => {
    await kubectl(['apply', '-f', MANIFEST]);
    await rollout();
    const nodes = (await kubectl(['get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}'])).stdout.trim().split(/\s+/);
    const agents = JSON.parse((await kubectl(['-n', agentNs, 'get', 'pods', '-l', agentSelector, '-o', 'json'])).stdout) as {
      items: { spec: { nodeName: string }; status: { conditions?: { type: string; status: string }[] } }[];
    };
    expect(agents.items.map((p) => p.spec.nodeName).sort()).toEqual([...nodes].sort());
    for (const p of agents.items) expect(p.status.conditions?.find((x) => x.type === 'Ready')?.status, p.spec.nodeName).toBe('True');
    agentPod = await agentOnNode();
    expect(agentPod, `the agent pod on ${c.node}`).not.toBe('');
  });

  step("the agent finds the node's real pods: host veth and MAC (not enabled yet)", 5, async () => {
    expect(agentPod, 'the rollout step passed').not.toBe('');
    await kubectl(['create', 'namespace', c.testNs]);
    const pods = {
      apiVersion: 'v1',
      kind: 'List',
      items: [testPod('server', ['pwperf', 'server', '-p', String(PORT)], PORT), testPod('client', ['sleep', '3600'])],
    };
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(pods) });
    await kubectl(inNs(['wait', '--for=condition=Ready', 'pod/server', 'pod/client', '--timeout=180s']), { timeoutMs: 4 * MIN });
    serverIp = await podIp('server');
    clientIp = await podIp('client');
    expect(serverIp).toMatch(c.podIp);
    expect(clientIp).toMatch(c.podIp);
    const rows = await until(
      `${serverIp} and ${clientIp} in pw_endpoints`,
      async () => {
        const eps = await podwarp<EndpointRow[]>(['dump', 'endpoints']);
        const mine = eps.filter((e) => e.ip === serverIp || e.ip === clientIp);
        return mine.length === 2 ? mine : undefined;
      },
      90_000,
    );
    console.log('pw_endpoints rows of the test pods: ' + JSON.stringify(rows));
    for (const r of rows) {
      expect(r.flags, r.ip).not.toContain('enabled');
      expect(String(r.iface), r.ip).toMatch(/^veth/);
      expect(String(r.mac), r.ip).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    }
  });

  step(
    "kubectl podwarp (deploy/kubectl-podwarp, found by kubectl on PATH): dump, status and doctor in the node's agent pod",
    5,
    async () => {
      expect(serverIp, 'the pods step passed').not.toBe('');
      // the real kubectl resolves the plugin; the plugin runs kubectl exec in the agent pod of --node
      const plugin = (args: string[]) => c.kubectlPlugin(['--node', c.node, ...args]);
      const eps = await plugin(['dump', 'endpoints', '-o', 'json']);
      expect(eps.exitCode, eps.stderr).toBe(0);
      const ips = (JSON.parse(eps.stdout) as EndpointRow[]).map((e) => e.ip);
      expect(ips).toEqual(expect.arrayContaining([serverIp, clientIp]));
      const status = await plugin(['status', '-o', 'json']);
      expect(status.exitCode, status.stderr).toBe(0);
      const st = JSON.parse(status.stdout) as { loaded: boolean; agent?: { kubeProxy?: unknown } };
      expect(st.loaded).toBe(true);
      // the agent read the node's kube-proxy configuration from its /configz (the default metrics address): masqueradeAll off, its mode
      expect(st.agent?.kubeProxy).toEqual({ masqueradeAll: false, from: 'configz', mode: c.proxyMode });
      await doctorInAgentPod(plugin);
      // an unknown node: a clear error, non-zero
      const none = await c.kubectlPlugin(['--node', 'no-such-node', 'status']);
      expect(none.exitCode).not.toBe(0);
      expect(none.stderr).toMatch(/no-such-node/);
    },
  );
  /** doctor in the agent's pod: the node's kernel and mounts as the agent sees them. */
  async function doctorInAgentPod(plugin: (args: string[]) => Promise<RunResult>): Promise<void> {
    const doctor = await plugin(['doctor', '-o', 'json']);
    expect(doctor.exitCode, doctor.stdout + doctor.stderr).toBe(0);
    const report = JSON.parse(doctor.stdout) as { ok: boolean; failed: unknown[]; checks: { check: string; result: string }[] };
    expect(report.failed).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.checks.find((x) => x.check === 'bpffs mount')?.result).toBe('pass');
    console.log(
      `kubectl podwarp doctor on ${c.node}: ${report.checks.filter((x) => x.result === 'pass').length} of ${report.checks.length} checks pass`,
    );
  }

  step(`${ACCELERATE_LABEL}=true: pod→pod TCP is redirected, bytes intact`, 4, async () => {
    expect(serverIp, 'the pods step passed').not.toBe('');
    await kubectl(['label', 'namespace', c.testNs, `${ACCELERATE_LABEL}=true`]);
    await until('both endpoints enabled', allEnabled([serverIp, clientIp], true), 90_000);
    // the kubelet's pod cgroups, found by UID in the cgroup2 tree (on a hybrid
    // host: <cgroup2 mount>/<cgroup root>/kubepods/<qos>/pod<uid>; systemd driver: …-pod<uid>.slice), carry the hooks
    const uids = await Promise.all(
      ['server', 'client'].map(async (p) => (await kubectl(inNs(['get', 'pod', p, '-o', 'jsonpath={.metadata.uid}']))).stdout.trim()),
    );
    const cgroups = await until(
      'cgroup attachments of both pods',
      async () => {
        const st = await podwarp<{ cgroups: { path: string; attached: string[] }[] }>(['status']);
        const mine = st.cgroups.filter((x) => uids.some((u) => isPodCgroup(x.path, u)));
        return mine.length === 2 && mine.every((x) => x.attached.includes('pw_sockops')) ? mine : undefined;
      },
      60_000,
    );
    console.log('pod cgroups: ' + cgroups.map((x) => `${x.path} [${x.attached.join(',')}]`).join('; '));
    const before = await stats();
    for (let i = 0; i < 3; i++) await sinkIntact(serverIp, 8 << 20);
    const after = await stats();
    console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
    expect(stat(after, 'pw_tc_egress', 'redirected')).toBeGreaterThan(stat(before, 'pw_tc_egress', 'redirected'));
    // sockops put the connections in the sockhash; sk_msg carried the payload
    expect(stat(after, 'pw_sockops', 'added_pod') - stat(before, 'pw_sockops', 'added_pod')).toBeGreaterThanOrEqual(6);
    expect(skBytes(after) - skBytes(before)).toBeGreaterThanOrEqual(3 * (8 << 20));
  });

  step('label removed: endpoints disabled, traffic takes the normal path, bytes intact', 4, async () => {
    expect(serverIp, 'the enable step passed').not.toBe('');
    await kubectl(['label', 'namespace', c.testNs, `${ACCELERATE_LABEL}-`]);
    await until('both endpoints disabled', allEnabled([serverIp, clientIp], false), 90_000);
    const before = await stats();
    await sinkIntact(serverIp, 8 << 20);
    const after = await stats();
    console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
    expect(stat(after, 'pw_tc_egress', 'redirected')).toBe(stat(before, 'pw_tc_egress', 'redirected'));
    // no new socket of theirs enters pw_sock, so sk_msg sees none of the 8 MiB, redirected or not
    expect(stat(after, 'pw_sockops', 'added_pod'), 'sockets added to pw_sock').toBe(stat(before, 'pw_sockops', 'added_pod'));
    expect(allMsgBytes(after), 'bytes through sk_msg').toBe(allMsgBytes(before));
  });

  step(
    'a ClusterIP Service (TCP and UDP): the same backends through kube-proxy and through the socket LB; podwarp enable/disable through the API; kube-proxy rules untouched',
    6,
    async () => {
      expect(serverIp, 'the pods step passed').not.toBe('');
      const pods = { apiVersion: 'v1', kind: 'List', items: [testPod('server2', ['pwperf', 'server', '-p', String(PORT)], PORT)] };
      (pods.items[0] as any).metadata.labels = { app: 'server2', role: 'echo' };
      await kubectl(['apply', '-f', '-'], { input: JSON.stringify(pods) });
      await kubectl(inNs(['label', 'pod', 'server', 'role=echo']));
      const svc = {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'echo', namespace: c.testNs },
        spec: {
          selector: { role: 'echo' },
          ports: [
            { name: 'tcp', protocol: 'TCP', port: 80, targetPort: PORT },
            { name: 'udp', protocol: 'UDP', port: 80, targetPort: PORT },
          ],
        },
      };
      await kubectl(['apply', '-f', '-'], { input: JSON.stringify(svc) });
      await kubectl(inNs(['wait', '--for=condition=Ready', 'pod/server2', '--timeout=180s']), { timeoutMs: 4 * MIN });
      server2Ip = await podIp('server2');
      const vip = (await kubectl(inNs(['get', 'service', 'echo', '-o', 'jsonpath={.spec.clusterIP}']))).stdout.trim();
      const want = [`${serverIp}:${PORT}`, `${server2Ip}:${PORT}`].sort();
      // kube-proxy has both backends (TCP and UDP chains)
      await until(
        'kube-proxy rules for both backends',
        async () => {
          const t = dnatTargets(await kubeProxyRules());
          return want.every((w) => t.has(`tcp ${w}`) && t.has(`udp ${w}`));
        },
        90_000,
      );
      const rulesBefore = await kubeProxyRules();

      // the socket LB's counters per protocol: read before, between and after the two phases
      const lb = (a: StatRow[], b: StatRow[]) => ({
        translated: stat(b, 'pw_lb', 'translated') - stat(a, 'pw_lb', 'translated'),
        rev_nat: stat(b, 'pw_lb', 'rev_nat') - stat(a, 'pw_lb', 'rev_nat'),
      });
      const pass = async () => {
        const s0 = await stats();
        const tcp = await pwperfJson<ConnOut>(['conn', '-c', vip, '-p', '80', '-n', '60']);
        const s1 = await stats();
        const udp = await pwperfJson<UdpOut>(['udp', '-c', vip, '-p', '80', '-n', '60']);
        const s2 = await stats();
        return { tcp, udp, lb: { tcp: lb(s0, s1), udp: lb(s1, s2) } };
      };
      const viaKubeProxy = await pass();
      await c.podwarpCli(['enable', c.testNs]);
      await until('client and both servers enabled', allEnabled([clientIp, serverIp, server2Ip], true), 90_000);
      await until(
        'the service in pw_svc',
        async () => (await kubectl(['exec', '-n', agentNs, agentPod, '--', 'podwarp', 'dump', 'services'])).stdout.includes(vip),
        60_000,
      );
      const viaPodwarp = await pass();
      console.log(
        `service ${vip}: kube-proxy (${c.proxyMode} mode) ${JSON.stringify(viaKubeProxy)}\npodwarp ${JSON.stringify(viaPodwarp)}`,
      );
      for (const [name, r] of [
        ['kube-proxy', viaKubeProxy],
        ['podwarp', viaPodwarp],
      ] as const) {
        expect(r.tcp.connections, name).toBe(60);
        expect(r.tcp.errors + r.tcp.peer_mismatch, name).toBe(0);
        expect(Object.keys(r.tcp.backends).sort(), `${name} TCP backends`).toEqual(want);
        expect(r.udp.replies, name).toBe(60);
        expect(r.udp.errors + r.udp.wrong_source, name).toBe(0);
        // one unconnected socket is one flow: kube-proxy's conntrack keeps it on
        // one backend, and so must the socket LB
        expect(Object.keys(r.udp.backends).length, `${name} UDP backends`).toBe(1);
        expect(want, `${name} UDP backend`).toContain(Object.keys(r.udp.backends)[0]);
      }
      const none = { translated: 0, rev_nat: 0 };
      expect(viaKubeProxy.lb, 'socket LB off in a disabled namespace').toEqual({ tcp: none, udp: none });
      // TCP: each connect() translated, each getpeername() answered with the ClusterIP;
      // UDP: each datagram translated (sendmsg), each reply's source answered (recvmsg)
      expect(viaPodwarp.lb, 'socket LB per protocol').toEqual({
        tcp: { translated: 60, rev_nat: 60 },
        udp: { translated: 60, rev_nat: 60 },
      });
      expect(await kubeProxyRules(), "kube-proxy's rules").toEqual(rulesBefore);

      await c.podwarpCli(['disable', c.testNs]);
      await until('all disabled again', allEnabled([clientIp, serverIp, server2Ip], false), 90_000);
      const label = (
        await kubectl(['get', 'namespace', c.testNs, '-o', `jsonpath={.metadata.labels.podwarp\\.io/accelerate}`])
      ).stdout.trim();
      expect(label === '' || label === 'false', `label after disable: "${label}"`).toBe(true);
    },
  );

  /**
   * kube-proxy's sessionAffinity memory in the node's netns for the frontend at vip:80/TCP (read as the agent reads
   * it, src/sources/kube-proxy-affinity.ts): each endpoint's list and the clients it holds.
   */
  async function kubeProxyMemory(vip: string): Promise<{ list: string; backend: string; clients: string[] }[]> {
    const key = `${vip}:80/6`;
    if (c.proxyMode === 'nftables') {
      const r = await run('nft', [...c.inNodeNet, 'nft', '-j', 'list', 'table', 'ip', 'kube-proxy'], { timeoutMs: 30_000 });
      const n = parseNftAffinity(r.stdout);
      return (n.frontends.get(key)?.endpoints ?? []).map((e) => ({
        list: e.list,
        backend: `${e.backend.ip}:${e.backend.port}`,
        clients: [...(n.lists.get(e.list)?.keys() ?? [])],
      }));
    }
    const save = await run('iptables-save', [...c.inNodeNet, 'iptables-save', '-t', 'nat'], { timeoutMs: 30_000 });
    const out = [];
    for (const e of parseIptablesAffinity(save.stdout).get(key)?.endpoints ?? []) {
      const l = await run('cat', [...c.inNodeNet, 'cat', `/proc/net/xt_recent/${e.list}`], { reject: false });
      out.push({
        list: e.list,
        backend: `${e.backend.ip}:${e.backend.port}`,
        clients: [...l.stdout.matchAll(/^src=(\S+)/gm)].map((m) => m[1]!),
      });
    }
    return out;
  }
  /** Empties those lists in the node's netns (as if kube-proxy's entries had been reaped). */
  async function flushKubeProxyMemory(vip: string): Promise<void> {
    for (const l of await kubeProxyMemory(vip)) {
      const argv =
        c.proxyMode === 'nftables'
          ? ['nft', 'flush', 'set', 'ip', 'kube-proxy', l.list]
          : ['sh', '-c', `echo / > /proc/net/xt_recent/${l.list}`];
      await run(argv[0]!, [...c.inNodeNet, ...argv], { timeoutMs: 30_000 });
    }
  }

  step(
    'sessionAffinity ClientIP: a sticky client keeps its backend while its namespace is switched on and off (kube-proxy ↔ podwarp hand-over)',
    6,
    async () => {
      expect(server2Ip, 'the service step passed').not.toBe('');
      const svc = {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'sticky', namespace: c.testNs },
        spec: {
          selector: { role: 'echo' },
          sessionAffinity: 'ClientIP',
          ports: [{ name: 'tcp', protocol: 'TCP', port: 80, targetPort: PORT }],
        },
      };
      await kubectl(['apply', '-f', '-'], { input: JSON.stringify(svc) });
      const vip = (await kubectl(inNs(['get', 'service', 'sticky', '-o', 'jsonpath={.spec.clusterIP}']))).stdout.trim();
      const want = [`${serverIp}:${PORT}`, `${server2Ip}:${PORT}`].sort();
      await until(
        "kube-proxy's affinity rules for both backends",
        async () =>
          (await kubeProxyMemory(vip))
            .map((l) => l.backend)
            .sort()
            .join() === want.join(),
        90_000,
      );
      const N = 20;
      /** N connections from the client: the one backend they all reached, and what the socket LB counted meanwhile. */
      const sticky = async () => {
        const s0 = await stats();
        const r = await pwperfJson<ConnOut>(['conn', '-c', vip, '-p', '80', '-n', String(N)]);
        const s1 = await stats();
        expect(r.errors + r.peer_mismatch, JSON.stringify(r)).toBe(0);
        expect(Object.values(r.backends), `one backend: ${JSON.stringify(r.backends)}`).toEqual([N]);
        const d = (reason: string) => stat(s1, 'pw_lb', reason) - stat(s0, 'pw_lb', reason);
        return { backend: Object.keys(r.backends)[0]!, translated: d('translated'), hit: d('affinity_hit') };
      };
      const first = await sticky(); // kube-proxy's rules chose, its list remembers the client
      expect(first.translated).toBe(0);
      expect(want).toContain(first.backend);
      const seen: string[] = [];
      for (let round = 1; round <= 2; round++) {
        await c.podwarpCli(['enable', c.testNs]);
        await until('client and both servers enabled', allEnabled([clientIp, serverIp, server2Ip], true), 90_000);
        const on = await sticky();
        // taken over from kube-proxy: even the first connection is an affinity hit
        expect({ round, ...on }).toEqual({ round, backend: first.backend, translated: N, hit: N });
        // kube-proxy forgets the client meanwhile: only podwarp remembers it now
        await flushKubeProxyMemory(vip);
        await c.podwarpCli(['disable', c.testNs]);
        await until('all disabled again', allEnabled([clientIp, serverIp, server2Ip], false), 90_000);
        // handed back: the backend's list, and only it, holds the client again
        const mem = await kubeProxyMemory(vip);
        expect(
          mem.filter((l) => l.clients.includes(clientIp)).map((l) => l.backend),
          JSON.stringify(mem),
        ).toEqual([first.backend]);
        const off = await sticky();
        expect({ round, ...off }).toEqual({ round, backend: first.backend, translated: 0, hit: 0 });
        seen.push(on.backend, off.backend);
      }
      console.log(`sticky ${vip} (${c.proxyMode} mode): ${first.backend} first, then ${seen.join(' ')}`);
      await kubectl(inNs(['delete', 'service', 'sticky']));
    },
  );

  /** A long-lived unconnected UDP socket in the client pod (`pwperf udp -S`): one request per call, the caller paces. */
  function udpSession(vip: string) {
    const session = udpSessionOf(c.kubectlArgv(inNs(['exec', '-i', 'client', '--', 'pwperf', 'udp', '-c', vip, '-p', '80', '-S'])));
    const stop = async () => void (await session.close());
    running.add(stop);
    return {
      /** the backend that answered, or the error (1 s receive timeout in pwperf) */
      request: async (): Promise<{ backend?: string; source_ok?: boolean; error?: string }> => session.request(),
      async close(): Promise<void> {
        running.delete(stop);
        await stop();
      },
    };
  }

  step(
    'a long-lived unconnected UDP flow through a rollout: kept through scale-up, another backend leaving and a readiness flip, moved only when its own backend goes (kube-proxy, then the socket LB)',
    8,
    async () => {
      expect(clientIp, 'the pods step passed').not.toBe('');
      const flowPod = (name: string) => {
        const p = testPod(name, ['pwperf', 'server', '-p', String(PORT)]) as any;
        p.metadata.labels = { app: name, role: 'flow' };
        // ready while /unready does not exist (the image has no /tmp): the test flips readiness without touching the server
        p.spec.containers[0].readinessProbe = { exec: { command: ['sh', '-c', 'test ! -e /unready'] }, periodSeconds: 1 };
        return p;
      };
      const up = async (names: string[]) => {
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: names.map(flowPod) }) });
        for (const n of names) await kubectl(inNs(['wait', '--for=condition=Ready', `pod/${n}`, '--timeout=180s']), { timeoutMs: 4 * MIN });
        return Promise.all(names.map(podIp));
      };
      const svc = {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'flow', namespace: c.testNs },
        spec: { selector: { role: 'flow' }, ports: [{ name: 'udp', protocol: 'UDP', port: 80, targetPort: PORT }] },
      };
      await kubectl(['apply', '-f', '-'], { input: JSON.stringify(svc) });
      const vip = (await kubectl(inNs(['get', 'service', 'flow', '-o', 'jsonpath={.spec.clusterIP}']))).stdout.trim();
      const at = (ip: string) => `${ip}:${PORT}`;
      /** kube-proxy's UDP rules and podwarp's slots both name exactly these backends (the ready ones) */
      const settled = (ips: string[]) =>
        until(
          `kube-proxy and pw_svc on ${ips.join(' ')}`,
          async () => {
            const rules = [...dnatTargets(await kubeProxyRules())].filter(
              (t) => t.startsWith('udp ') && ips.concat(all).some((i) => t.endsWith(` ${at(i)}`)),
            );
            const row = (await podwarp<ServiceRowOut[]>(['dump', 'services'])).find((r) => r.frontend === `${vip}:80` && r.proto === 'UDP');
            const slots = (row?.slots ?? []).map((x) => x.backend).sort();
            const want = ips.map(at).sort();
            return (
              rules
                .map((t) => t.slice(4))
                .sort()
                .join() === want.join() && slots.join() === want.join()
            );
          },
          90_000,
        );
      let all: string[] = [];
      const phase = async (on: boolean) => {
        await c.podwarpCli([on ? 'enable' : 'disable', c.testNs]);
        await until(`client ${on ? 'enabled' : 'disabled'}`, allEnabled([clientIp], on), 90_000);
        const [a, b] = await up(['flow-a', 'flow-b']);
        all = [a!, b!];
        await settled(all);
        const s0 = await stats();
        const flow = udpSession(vip);
        const steps: string[] = [];
        const ask = async (what: string) => {
          const r = await flow.request();
          expect(r.error, `${what}: ${JSON.stringify(r)}`).toBeUndefined();
          expect(r.source_ok, `${what}: the reply came from the ClusterIP`).toBe(true);
          steps.push(`${what}→${r.backend}`);
          return r.backend!;
        };
        const mine = await ask('first');
        const [myPod, otherPod] = mine === at(a!) ? ['flow-a', 'flow-b'] : ['flow-b', 'flow-a'];
        expect([at(a!), at(b!)]).toContain(mine);
        // scale-up
        const [cIp] = await up(['flow-c']);
        all.push(cIp!);
        await settled(all);
        expect(await ask('scale-up')).toBe(mine);
        // another backend leaves
        await kubectl(inNs(['delete', 'pod', otherPod, '--grace-period=0', '--force', '--wait=true']), { timeoutMs: 2 * MIN });
        const left = all.filter((i) => at(i) !== mine && i !== cIp);
        await settled(all.filter((i) => !left.includes(i)));
        expect(await ask('another backend gone')).toBe(mine);
        // another endpoint's readiness flips off and on
        await kubectl(inNs(['exec', 'flow-c', '--', 'touch', '/unready']));
        await settled([mine.split(':')[0]!]);
        expect(await ask('another not ready')).toBe(mine);
        await kubectl(inNs(['exec', 'flow-c', '--', 'rm', '/unready']));
        await settled([mine.split(':')[0]!, cIp!]);
        expect(await ask('another ready again')).toBe(mine);
        // its own backend goes: the flow moves to the one left (kube-proxy: its conntrack cleanup; podwarp: pw_udp_serve)
        await kubectl(inNs(['delete', 'pod', myPod, '--grace-period=0', '--force', '--wait=true']), { timeoutMs: 2 * MIN });
        await settled([cIp!]);
        // the deleted pod's container may still answer for a moment (a forced delete stops it asynchronously), and
        // kube-proxy clears the flow's conntrack entry in its next sync: until then the flow may still reach it
        const answers: (string | undefined)[] = [];
        await until(
          'the flow on the backend left',
          async () => {
            const r = await flow.request();
            steps.push(`own gone→${r.backend ?? r.error}`);
            answers.push(r.backend);
            return r.backend === at(cIp!);
          },
          60_000,
          250,
        );
        for (const a of answers)
          expect([mine, at(cIp!), undefined], `only its old backend or the one left: ${steps.join(' ')}`).toContain(a);
        await flow.close();
        const s1 = await stats();
        const d = (reason: string) => stat(s1, 'pw_lb', reason) - stat(s0, 'pw_lb', reason);
        const lb = { translated: d('translated'), hit: d('udp_flow_hit'), gone: d('udp_flow_gone') };
        console.log(
          `UDP flow ${vip} (${c.proxyMode} mode, acceleration ${on ? 'on' : 'off'}): ${steps.join(' ')}; pw_lb ${JSON.stringify(lb)}`,
        );
        await kubectl(inNs(['delete', 'pod', 'flow-c', '--grace-period=0', '--force', '--wait=true']), { timeoutMs: 2 * MIN });
        return { steps: steps.length, lb };
      };
      const off = await phase(false);
      expect(off.lb, 'acceleration off: kube-proxy answered every datagram').toEqual({ translated: 0, hit: 0, gone: 0 });
      const on = await phase(true);
      // on: every datagram translated; the four between the first and the move sent by the flow memory, the move after udp_flow_gone
      expect(on.lb.translated).toBe(on.steps);
      expect(on.lb.gone).toBe(1);
      expect(on.lb.hit).toBeGreaterThanOrEqual(4);
      await c.podwarpCli(['disable', c.testNs]);
      await until('client disabled', allEnabled([clientIp], false), 90_000);
      await kubectl(inNs(['delete', 'service', 'flow']));
    },
  );

  step('a NetworkPolicy selecting the server excludes it: no bypass to it, bytes intact', 4, async () => {
    expect(server2Ip, 'the service step passed').not.toBe('');
    const np = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'server-only-from-client', namespace: c.testNs },
      spec: {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
      },
    };
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(np) });
    await kubectl(['label', 'namespace', c.testNs, `${ACCELERATE_LABEL}=true`, '--overwrite']);
    await until(
      'client enabled, server (selected by the policy) not',
      async () => {
        const cl = await endpointFlags(clientIp);
        const s = await endpointFlags(serverIp);
        return cl?.includes('enabled') && s !== undefined && !s.includes('enabled');
      },
      90_000,
    );
    const before = await stats();
    await sinkIntact(serverIp, 4 << 20);
    const after = await stats();
    console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
    expect(stat(after, 'pw_tc_egress', 'redirected')).toBe(stat(before, 'pw_tc_egress', 'redirected'));
    expect(skBytes(after)).toBe(skBytes(before));
    await kubectl(['label', 'namespace', c.testNs, `${ACCELERATE_LABEL}-`]);
  });

  step('a rolling update of the DaemonSet (new image tag) and a killed agent under checksummed streams: no byte lost', 10, async () => {
    expect(server2Ip, 'the service step passed').not.toBe('');
    await kubectl(inNs(['delete', 'networkpolicy', '--all']));
    await kubectl(['label', 'namespace', c.testNs, `${ACCELERATE_LABEL}=true`, '--overwrite']);
    await until('client and server enabled', allEnabled([serverIp, clientIp], true), 90_000);
    // the same image under a new tag: a real rollout, nothing pulled
    await c.tagImage('docker.io/library/podwarp:dev', 'docker.io/library/podwarp:e2e-next');
    const s1 = await acceleratedStream();
    const container = ds.spec.template.spec.containers[0].name as string;
    await kubectl(['-n', agentNs, 'set', 'image', `daemonset/${ds.metadata.name}`, `${container}=podwarp:e2e-next`]);
    await rollout();
    agentPod = await agentOnNode();
    await s1.end('across the rollout');

    // the agent killed (no grace): the datapath stays, traffic goes on
    const st = await podwarp<{ pinRoot: string; maps: { name: string; id?: number }[] }>(['status']);
    const statsId = st.maps.find((m) => m.name === 'pw_stats')?.id ?? 0;
    expect(statsId, 'pw_stats pinned').toBeGreaterThan(0);
    const holders = await nodeLockHolders(st.pinRoot);
    const agentHolder = holders();
    expect(agentHolder, 'the agent holds the node lock').toHaveLength(1);
    const s2 = await acceleratedStream();
    await kubectl(['-n', agentNs, 'delete', 'pod', agentPod, '--grace-period=0', '--force'], { reject: false });
    // the outage: the killed agent's lock went with it, and the next agent has not taken it yet
    await until('the killed agent to release the node lock', async () => !holders().includes(agentHolder[0]!), MIN, 20);
    expect(holders(), 'no agent holds the node lock').toEqual([]);
    const b0 = await skBytesOfMap(statsId);
    const b1 = await until(
      'sk_msg redirecting the stream with no agent',
      async () => {
        const b = await skBytesOfMap(statsId);
        return b > b0 ? b : undefined;
      },
      30_000,
      50,
    );
    expect(holders(), 'still no agent while the counter moved').toEqual([]);
    console.log(`with no agent running: sk_msg redirected +${b1 - b0} bytes`);
    await rollout();
    agentPod = await agentOnNode();
    await s2.end('across the killed agent');
  });

  step('kubectl delete of the DaemonSet + podwarp uninstall (deploy/README.md): nothing of podwarp left on the node', 5, async () => {
    expect(agentPod, 'the rollout step passed').not.toBe('');
    const st = await podwarp<{ programs: { id: number; name: string }[]; cgroups: { path: string }[] }>(['status']);
    const progIds = st.programs.map((p) => p.id);
    const cgPaths = st.cgroups.map((x) => x.path);
    expect(progIds.length).toBeGreaterThan(0);
    await kubectl(['-n', agentNs, 'delete', 'daemonset', ds.metadata.name, '--wait=true'], { timeoutMs: 3 * MIN });
    const uninstall = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `podwarp-uninstall-${c.node}`,
        namespace: agentNs,
        labels: { 'app.kubernetes.io/name': 'podwarp', 'app.kubernetes.io/component': 'uninstall' },
      },
      spec: {
        nodeName: c.node,
        restartPolicy: 'Never',
        hostNetwork: true,
        hostPID: true,
        automountServiceAccountToken: false,
        tolerations: [{ operator: 'Exists' }],
        containers: [
          {
            name: 'uninstall',
            image: 'podwarp:dev',
            imagePullPolicy: 'IfNotPresent',
            // the agent pod may still be terminating: wait for its node lock (deploy/README.md)
            args: ['uninstall', '--wait'],
            securityContext: { privileged: true },
            volumeMounts: [
              { name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' },
              { name: 'cgroup', mountPath: '/sys/fs/cgroup' },
              { name: 'run', mountPath: '/run/podwarp' },
            ],
          },
        ],
        volumes: [
          { name: 'bpffs', hostPath: { path: '/sys/fs/bpf' } },
          { name: 'cgroup', hostPath: { path: '/sys/fs/cgroup' } },
          { name: 'run', hostPath: { path: '/run/podwarp' } },
        ],
      },
    };
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(uninstall) });
    await kubectl(
      [
        '-n',
        agentNs,
        'wait',
        'pod',
        '-l',
        'app.kubernetes.io/component=uninstall',
        '--for=jsonpath={.status.phase}=Succeeded',
        '--timeout=180s',
      ],
      { timeoutMs: 4 * MIN },
    );
    const logs = await kubectl(['-n', agentNs, 'logs', '-l', 'app.kubernetes.io/component=uninstall', '--tail', '20']);
    console.log('uninstall: ' + logs.stdout.trim().split('\n').slice(-5).join('\n'));

    const pins = await run('ls bpffs', [...c.inNode, 'ls', '-A', '/sys/fs/bpf']);
    expect(
      pins.stdout.split('\n').filter((x) => x.startsWith('podwarp')),
      'pins',
    ).toEqual([]);
    // one kernel: the programs are gone for the host too (an attachment would hold one)
    for (const id of progIds) {
      const r = await run('bpftool prog', ['bpftool', 'prog', 'show', 'id', String(id)], { reject: false });
      expect(r.exitCode, `program id ${id} still loaded: ${r.stdout}`).not.toBe(0);
    }
    if (c.hostCgroup) {
      for (const p of cgPaths) {
        const r = await run('bpftool cgroup', ['bpftool', 'cgroup', 'show', c.hostCgroup(p)], { reject: false });
        expect(r.stdout.trim(), `attachments left on ${p}`).toBe('');
      }
    }
    const links = JSON.parse((await run('ip link', [...c.inNode, 'ip', '-j', 'link', 'show', 'type', 'veth'])).stdout) as {
      ifname: string;
    }[];
    for (const l of links) {
      const f = await run('tc filter', [...c.inNode, 'tc', 'filter', 'show', 'dev', l.ifname, 'ingress']);
      expect(f.stdout.trim(), `tc filters left on ${l.ifname}`).toBe('');
    }
    await kubectl(['delete', '-f', MANIFEST, '--ignore-not-found', '--wait=false']);
  });
}
