// End to end on a real single-node Kubernetes cluster built from upstream
// parts (test/e2e/cluster/up.sh: etcd, kube-apiserver, controller-manager,
// scheduler, kubelet, kube-proxy in iptables or nftables mode (PWE2E_PROXY_MODE),
// containerd + runc, CNI ptp +
// host-local). podwarp is deployed as users deploy it: `kubectl apply -f
// deploy/podwarp.yaml`, unchanged (the image is loaded into containerd as
// podwarp:dev, the name the manifest uses).
//
//   PODWARP_E2E_CLUSTER=1 npx vitest run --project integration test/e2e/cluster.test.ts
//
// Root only. Builds Kubernetes from the Go module proxy on the first run
// (cached under /var/cache/podwarp). Without PODWARP_E2E_CLUSTER=1, Go, root or
// the Debian packages up.sh uses, it is skipped and says why.
//
//   PWE2E_RUN=/var/lib/podwarp-e2e/<id>  use a cluster already up (not torn down)
//   PODWARP_E2E_KEEP=1                    keep the cluster this test brought up
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, type RunResult } from '../../loader/exec.js';
import { kubectlPodwarpArgv, pluginEnv } from '../k8s/kubectl-plugin.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLUSTER = path.join(ROOT, 'test', 'e2e', 'cluster');
const MANIFEST = path.join(ROOT, 'deploy', 'podwarp.yaml');
const TEST_IMAGE = 'localhost/pwe2e/test:1';
const PORT = 8080;
const ACCELERATE_LABEL = 'podwarp.io/accelerate';
const MIN = 60_000;

// ---- can it run here? -------------------------------------------------------

function missingParts(): string[] {
  const out: string[] = [];
  if (!process.env.PWE2E_RUN && process.env.PODWARP_E2E_CLUSTER !== '1')
    out.push('PODWARP_E2E_CLUSTER=1 (it builds Kubernetes from the Go module proxy on its first run)');
  if (process.getuid?.() !== 0) out.push('root');
  const onPath = (c: string) => (process.env.PATH ?? '').split(':').some((d) => d && fs.existsSync(path.join(d, c)));
  if (!process.env.PWE2E_RUN) {
    if (!onPath('go') && !fs.existsSync('/usr/local/go/bin/go') && !fs.existsSync('/var/cache/podwarp/k8s'))
      out.push('Go (to build Kubernetes)');
    for (const [c, pkg] of <[string, string][]>[
      ['containerd', 'containerd'],
      ['runc', 'runc'],
      ['podman', 'podman'],
      ['debootstrap', 'debootstrap'],
      ['nsenter', 'util-linux'],
      ...(process.env.PWE2E_PROXY_MODE === 'nftables' ? [['nft', 'nftables'] as [string, string]] : []),
    ])
      if (!onPath(c)) out.push(`${c} (apt-get install ${pkg})`);
    if (!fs.existsSync('/usr/lib/cni/ptp')) out.push('CNI ptp (apt-get install containernetworking-plugins)');
  }
  return out;
}
const missing = missingParts();
const available = missing.length === 0;
if (!available) console.warn(`podwarp real-cluster e2e SKIPPED: needs ${missing.join(', ')}.`);

// ---- helpers ----------------------------------------------------------------

const testNs = `pwe2e-${crypto.randomBytes(3).toString('hex')}`;
let runDir = process.env.PWE2E_RUN ?? '';
let broughtUp = false;
let env: Record<string, string> = {};

const manifest = YAML.parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8')).map((d) => d.toJS() as Record<string, any>);
const ds = manifest.find((d) => d?.kind === 'DaemonSet')!;
const agentNs: string = ds.metadata.namespace;
const agentSelector = Object.entries(ds.spec.selector.matchLabels as Record<string, string>)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');

function readEnv(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(path.join(dir, 'env'), 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

function kubectl(args: string[], opts: { input?: string; timeoutMs?: number; reject?: boolean } = {}): Promise<RunResult> {
  return run(`kubectl ${args[0]}`, [env.KUBECTL!, ...args], { timeoutMs: 2 * MIN, ...opts });
}

async function until<T>(what: string, f: () => Promise<T>, ms: number, everyMs = 1000): Promise<NonNullable<T>> {
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

async function diagnosed<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const show = async (args: string[]) => {
      const r = await kubectl(args, { reject: false, timeoutMs: 30_000 }).catch((x: unknown) => ({ stdout: '', stderr: String(x) }));
      console.log(`$ kubectl ${args.join(' ')}\n${r.stdout}${r.stderr}`);
    };
    await show(['get', 'nodes,pods', '-A', '-o', 'wide']);
    await show(['-n', agentNs, 'describe', 'pods', '-l', agentSelector]);
    await show(['-n', agentNs, 'logs', '-l', agentSelector, '--tail', '60']);
    // the servers print one line per stream connection and any fault they saw (a wrong byte, a reset)
    await show(['-n', testNs, 'logs', '-l', 'app in (server,server2)', '--tail', '20', '--prefix']);
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

async function podwarp<T>(agentPod: string, args: string[]): Promise<T> {
  const r = await kubectl(['exec', '-n', agentNs, agentPod, '--', 'podwarp', ...args, '-o', 'json'], { timeoutMs: MIN });
  return JSON.parse(r.stdout) as T;
}
const stat = (rows: StatRow[], program: string, reason: string) =>
  rows.find((s) => s.program === program && s.reason === reason)?.packets ?? 0;
const nonZero = (rows: StatRow[]) =>
  rows
    .filter((s) => s.packets > 0)
    .map((s) => `${s.program}/${s.reason}=${s.packets}`)
    .join(' ');

function testPod(name: string, command: string[], listens?: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: testNs, labels: { app: name } },
    spec: {
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

interface Sink {
  ok: boolean;
  bytes: number;
  received: number;
  hash: string;
  server_hash: string;
}
async function sink(serverIp: string, bytes: number): Promise<Sink> {
  const r = await kubectl(
    ['-n', testNs, 'exec', 'client', '--', 'pwperf', 'sink', '-c', serverIp, '-p', String(PORT), '-b', String(bytes), '-v'],
    {
      timeoutMs: MIN,
    },
  );
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Sink;
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
async function pwperfJson<T>(args: string[]): Promise<T> {
  const r = await kubectl(['-n', testNs, 'exec', 'client', '--', 'pwperf', ...args], { timeoutMs: MIN });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

/**
 * kube-proxy's rules in the node's netns, without counters: its nat chains
 * (iptables mode) or its `kube-proxy` table (nftables mode, PROXY_MODE in the env file).
 */
async function kubeProxyRules(): Promise<string[]> {
  const nft = env.PROXY_MODE === 'nftables';
  const argv = nft ? ['nft', 'list', 'table', 'ip', 'kube-proxy'] : ['iptables-save', '-t', 'nat'];
  const r = await run(argv[0]!, ['nsenter', `--net=/run/netns/${env.NS}`, ...argv], { timeoutMs: 30_000 });
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

/** The podwarp CLI of this checkout, run as a user would, with the admin kubeconfig (inside the node's netns, where the API is). */
function podwarpCli(args: string[]): Promise<RunResult> {
  return run(
    `podwarp ${args[0]}`,
    ['nsenter', `--net=/run/netns/${env.NS}`, '--', path.join(ROOT, 'bin', 'podwarp'), ...args, '--kubeconfig', env.KUBECONFIG_ADMIN!],
    {
      timeoutMs: MIN,
    },
  );
}

async function endpointFlags(agentPod: string, ip: string): Promise<string[] | undefined> {
  const eps = await podwarp<EndpointRow[]>(agentPod, ['dump', 'endpoints']);
  return eps.find((e) => e.ip === ip)?.flags.split('|');
}

// ---- the test ---------------------------------------------------------------

describe.skipIf(!available)(available ? 'real-cluster e2e' : `real-cluster e2e (skipped: needs ${missing.join(', ')})`, () => {
  let agentPod = '';
  let serverIp = '';
  let clientIp = '';
  let server2Ip = '';
  let vip = '';

  beforeAll(async () => {
    if (!runDir) {
      broughtUp = true;
      const r = await run('up.sh', ['bash', path.join(CLUSTER, 'up.sh')], { timeoutMs: 80 * MIN });
      runDir = r.stdout.trim().split('\n').pop()!;
    }
    env = readEnv(runDir);
  }, 85 * MIN);

  afterAll(async () => {
    if (env.KUBECTL && !broughtUp) await kubectl(['delete', 'namespace', testNs, '--wait=false'], { reject: false, timeoutMs: MIN });
    if (!broughtUp) return;
    if (process.env.PODWARP_E2E_KEEP) {
      console.log(`kept cluster ${runDir}: . ${runDir}/env; $KUBECTL get pods -A; test/e2e/cluster/down.sh ${runDir}`);
      return;
    }
    await run('down.sh', ['bash', path.join(CLUSTER, 'down.sh'), runDir], { timeoutMs: 5 * MIN });
  }, 6 * MIN);

  it(
    'kubectl apply -f deploy/podwarp.yaml: the DaemonSet becomes ready on the node',
    () =>
      diagnosed(async () => {
        await kubectl(['apply', '-f', MANIFEST]);
        await kubectl(['-n', agentNs, 'rollout', 'status', `daemonset/${ds.metadata.name}`, '--timeout=240s'], { timeoutMs: 5 * MIN });
        agentPod = (
          await kubectl([
            '-n',
            agentNs,
            'get',
            'pods',
            '-l',
            agentSelector,
            '--field-selector',
            `spec.nodeName=${env.NODE}`,
            '-o',
            'jsonpath={.items[0].metadata.name}',
          ])
        ).stdout.trim();
        expect(agentPod).not.toBe('');
      }),
    6 * MIN,
  );

  it(
    "the agent finds the node's real pods: host veth and MAC (not enabled yet)",
    () =>
      diagnosed(async () => {
        expect(agentPod, 'the rollout step passed').not.toBe('');
        await kubectl(['create', 'namespace', testNs]);
        const pods = {
          apiVersion: 'v1',
          kind: 'List',
          items: [testPod('server', ['pwperf', 'server', '-p', String(PORT)], PORT), testPod('client', ['sleep', '3600'])],
        };
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify(pods) });
        await kubectl(['-n', testNs, 'wait', '--for=condition=Ready', 'pod/server', 'pod/client', '--timeout=120s'], {
          timeoutMs: 3 * MIN,
        });
        const ip = async (pod: string) =>
          (await kubectl(['-n', testNs, 'get', 'pod', pod, '-o', 'jsonpath={.status.podIP}'])).stdout.trim();
        serverIp = await ip('server');
        clientIp = await ip('client');
        expect(serverIp).toMatch(/^10\.151\.0\.\d+$/);
        const rows = await until(
          `${serverIp} and ${clientIp} in pw_endpoints`,
          async () => {
            const eps = await podwarp<EndpointRow[]>(agentPod, ['dump', 'endpoints']);
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
      }),
    5 * MIN,
  );

  it(
    "kubectl podwarp (deploy/kubectl-podwarp, found by kubectl on PATH): dump, status and doctor in the node's agent pod",
    () =>
      diagnosed(async () => {
        expect(serverIp, 'the pods step passed').not.toBe('');
        // the real kubectl resolves the plugin; the plugin runs kubectl exec in the agent pod of --node
        const plugin = (args: string[]) => {
          const [, ...rest] = kubectlPodwarpArgv(['--node', env.NODE!, ...args]);
          return run('kubectl podwarp', ['nsenter', `--net=/run/netns/${env.NS}`, '--', path.join(env.BIN!, 'kubectl'), ...rest], {
            env: pluginEnv({ KUBECONFIG: env.KUBECONFIG_ADMIN!, PATH: `${path.join(ROOT, 'deploy')}:${env.BIN}:${process.env.PATH}` }),
            timeoutMs: 2 * MIN,
            reject: false,
          });
        };
        const eps = await plugin(['dump', 'endpoints', '-o', 'json']);
        expect(eps.exitCode, eps.stderr).toBe(0);
        const ips = (JSON.parse(eps.stdout) as EndpointRow[]).map((e) => e.ip);
        expect(ips).toEqual(expect.arrayContaining([serverIp, clientIp]));
        const status = await plugin(['status', '-o', 'json']);
        expect(status.exitCode, status.stderr).toBe(0);
        expect((JSON.parse(status.stdout) as { loaded: boolean }).loaded).toBe(true);
        // doctor in the agent's pod: the node's kernel and mounts as the agent sees them
        const doctor = await plugin(['doctor', '-o', 'json']);
        expect(doctor.exitCode, doctor.stdout + doctor.stderr).toBe(0);
        const report = JSON.parse(doctor.stdout) as { ok: boolean; failed: unknown[]; checks: { check: string; result: string }[] };
        expect(report.failed).toEqual([]);
        expect(report.ok).toBe(true);
        expect(report.checks.find((c) => c.check === 'bpffs mount')?.result).toBe('pass');
        console.log(
          `kubectl podwarp doctor on ${env.NODE}: ${report.checks.filter((c) => c.result === 'pass').length} of ${report.checks.length} checks pass`,
        );
        // an unknown node: a clear error, non-zero
        const none = await run(
          'kubectl podwarp',
          ['nsenter', `--net=/run/netns/${env.NS}`, '--', path.join(env.BIN!, 'kubectl'), 'podwarp', '--node', 'no-such-node', 'status'],
          {
            env: pluginEnv({ KUBECONFIG: env.KUBECONFIG_ADMIN!, PATH: `${path.join(ROOT, 'deploy')}:${env.BIN}:${process.env.PATH}` }),
            reject: false,
          },
        );
        expect(none.exitCode).not.toBe(0);
        expect(none.stderr).toMatch(/no-such-node/);
      }),
    5 * MIN,
  );

  it(
    `${ACCELERATE_LABEL}=true: pod→pod TCP is redirected, bytes intact`,
    () =>
      diagnosed(async () => {
        expect(serverIp, 'the pods step passed').not.toBe('');
        await kubectl(['label', 'namespace', testNs, `${ACCELERATE_LABEL}=true`]);
        await until(
          'both endpoints enabled',
          async () => {
            const eps = await podwarp<EndpointRow[]>(agentPod, ['dump', 'endpoints']);
            return [serverIp, clientIp].every((ip) =>
              eps
                .find((e) => e.ip === ip)
                ?.flags.split('|')
                .includes('enabled'),
            );
          },
          90_000,
        );
        // the kubelet's pod cgroups, found by UID in the cgroup2 tree (on a hybrid
        // host: <cgroup2 mount>/<cgroup root>/kubepods/<qos>/pod<uid>), carry the hooks
        const uids = await Promise.all(
          ['server', 'client'].map(async (p) =>
            (await kubectl(['-n', testNs, 'get', 'pod', p, '-o', 'jsonpath={.metadata.uid}'])).stdout.trim(),
          ),
        );
        const cgroups = await until(
          'cgroup attachments of both pods',
          async () => {
            const st = await podwarp<{ cgroups: { path: string; attached: string[] }[] }>(agentPod, ['status']);
            const mine = st.cgroups.filter((c) => uids.some((u) => c.path.endsWith(`/pod${u}`)));
            return mine.length === 2 && mine.every((c) => c.attached.includes('pw_sockops')) ? mine : undefined;
          },
          60_000,
        );
        console.log('pod cgroups: ' + cgroups.map((c) => `${c.path} [${c.attached.join(',')}]`).join('; '));
        const before = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        for (let i = 0; i < 3; i++) {
          const s = await sink(serverIp, 8 << 20);
          expect(s.ok && s.received === 8 << 20 && s.hash === s.server_hash, JSON.stringify(s)).toBe(true);
        }
        const after = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
        expect(stat(after, 'pw_tc_egress', 'redirected')).toBeGreaterThan(stat(before, 'pw_tc_egress', 'redirected'));
        // sockops put the connections in the sockhash; sk_msg carried the payload
        expect(stat(after, 'pw_sockops', 'added_pod') - stat(before, 'pw_sockops', 'added_pod')).toBeGreaterThanOrEqual(6);
        const skBytes = (r: StatRow[]) => r.find((x) => x.program === 'pw_sk_msg' && x.reason === 'redirected')?.bytes ?? 0;
        expect(skBytes(after) - skBytes(before)).toBeGreaterThanOrEqual(3 * (8 << 20));
      }),
    4 * MIN,
  );

  it(
    'label removed: endpoints disabled, traffic takes the normal path, bytes intact',
    () =>
      diagnosed(async () => {
        expect(serverIp, 'the enable step passed').not.toBe('');
        await kubectl(['label', 'namespace', testNs, `${ACCELERATE_LABEL}-`]);
        await until(
          'both endpoints disabled',
          async () => {
            const eps = await podwarp<EndpointRow[]>(agentPod, ['dump', 'endpoints']);
            return [serverIp, clientIp].every((ip) => {
              const e = eps.find((x) => x.ip === ip);
              return e && !e.flags.split('|').includes('enabled');
            });
          },
          90_000,
        );
        const before = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        const s = await sink(serverIp, 8 << 20);
        expect(s.ok && s.received === 8 << 20 && s.hash === s.server_hash, JSON.stringify(s)).toBe(true);
        const after = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
        expect(stat(after, 'pw_tc_egress', 'redirected')).toBe(stat(before, 'pw_tc_egress', 'redirected'));
      }),
    4 * MIN,
  );
  it(
    'a ClusterIP Service (TCP and UDP): the same backends through kube-proxy and through the socket LB; podwarp enable/disable through the API; kube-proxy rules untouched',
    () =>
      diagnosed(async () => {
        expect(serverIp, 'the pods step passed').not.toBe('');
        const pods = { apiVersion: 'v1', kind: 'List', items: [testPod('server2', ['pwperf', 'server', '-p', String(PORT)], PORT)] };
        (pods.items[0] as any).metadata.labels = { app: 'server2', role: 'echo' };
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify(pods) });
        await kubectl(['-n', testNs, 'label', 'pod', 'server', 'role=echo']);
        const svc = {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'echo', namespace: testNs },
          spec: {
            selector: { role: 'echo' },
            ports: [
              { name: 'tcp', protocol: 'TCP', port: 80, targetPort: PORT },
              { name: 'udp', protocol: 'UDP', port: 80, targetPort: PORT },
            ],
          },
        };
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify(svc) });
        await kubectl(['-n', testNs, 'wait', '--for=condition=Ready', 'pod/server2', '--timeout=120s'], { timeoutMs: 3 * MIN });
        server2Ip = (await kubectl(['-n', testNs, 'get', 'pod', 'server2', '-o', 'jsonpath={.status.podIP}'])).stdout.trim();
        vip = (await kubectl(['-n', testNs, 'get', 'service', 'echo', '-o', 'jsonpath={.spec.clusterIP}'])).stdout.trim();
        const want = [`${serverIp}:${PORT}`, `${server2Ip}:${PORT}`].sort();
        // kube-proxy has both backends (TCP and UDP chains)
        await until(
          'kube-proxy rules for both backends',
          async () => {
            const t = dnatTargets(await kubeProxyRules());
            return want.every((w) => t.has(`tcp ${w}`) && t.has(`udp ${w}`));
          },
          60_000,
        );
        const rulesBefore = await kubeProxyRules();

        const pass = async () => {
          const before = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
          const tcp = await pwperfJson<ConnOut>(['conn', '-c', vip, '-p', '80', '-n', '60']);
          const udp = await pwperfJson<UdpOut>(['udp', '-c', vip, '-p', '80', '-n', '60']);
          const after = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
          return { tcp, udp, translated: stat(after, 'pw_lb', 'translated') - stat(before, 'pw_lb', 'translated') };
        };
        const viaKubeProxy = await pass();
        await podwarpCli(['enable', testNs]);
        await until(
          'client and both servers enabled',
          async () => {
            for (const ip of [clientIp, serverIp, server2Ip]) if (!(await endpointFlags(agentPod, ip))?.includes('enabled')) return false;
            return true;
          },
          90_000,
        );
        await until(
          'the service in pw_svc',
          async () => (await kubectl(['exec', '-n', agentNs, agentPod, '--', 'podwarp', 'dump', 'services'])).stdout.includes(vip),
          60_000,
        );
        const viaPodwarp = await pass();
        console.log(
          `service ${vip}: kube-proxy (${env.PROXY_MODE ?? 'iptables'} mode) ${JSON.stringify(viaKubeProxy)}\npodwarp ${JSON.stringify(viaPodwarp)}`,
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
        expect(viaKubeProxy.translated, 'socket LB off in a disabled namespace').toBe(0);
        expect(viaPodwarp.translated, 'socket LB translated the connects and datagrams').toBeGreaterThanOrEqual(60);
        expect(await kubeProxyRules(), "kube-proxy's rules").toEqual(rulesBefore);

        await podwarpCli(['disable', testNs]);
        await until(
          'all disabled again',
          async () => {
            for (const ip of [clientIp, serverIp, server2Ip]) if ((await endpointFlags(agentPod, ip))?.includes('enabled')) return false;
            return true;
          },
          90_000,
        );
        const label = (
          await kubectl(['get', 'namespace', testNs, '-o', `jsonpath={.metadata.labels.podwarp\\.io/accelerate}`])
        ).stdout.trim();
        expect(label === '' || label === 'false', `label after disable: "${label}"`).toBe(true);
      }),
    6 * MIN,
  );

  it(
    'a NetworkPolicy selecting the server excludes it: no bypass to it, bytes intact',
    () =>
      diagnosed(async () => {
        expect(server2Ip, 'the service step passed').not.toBe('');
        const np = {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'NetworkPolicy',
          metadata: { name: 'server-only-from-client', namespace: testNs },
          spec: {
            podSelector: { matchLabels: { app: 'server' } },
            ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
          },
        };
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify(np) });
        await kubectl(['label', 'namespace', testNs, `${ACCELERATE_LABEL}=true`, '--overwrite']);
        await until(
          'client enabled, server (selected by the policy) not',
          async () => {
            const c = await endpointFlags(agentPod, clientIp);
            const s = await endpointFlags(agentPod, serverIp);
            return c?.includes('enabled') && s !== undefined && !s.includes('enabled');
          },
          90_000,
        );
        const before = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        const s = await sink(serverIp, 4 << 20);
        expect(s.ok && s.received === 4 << 20 && s.hash === s.server_hash, JSON.stringify(s)).toBe(true);
        const after = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        console.log(`counters before: ${nonZero(before)}\ncounters after:  ${nonZero(after)}`);
        expect(stat(after, 'pw_tc_egress', 'redirected')).toBe(stat(before, 'pw_tc_egress', 'redirected'));
        const skBytes = (r: StatRow[]) => r.find((x) => x.program === 'pw_sk_msg' && x.reason === 'redirected')?.bytes ?? 0;
        expect(skBytes(after)).toBe(skBytes(before));
        await kubectl(['label', 'namespace', testNs, `${ACCELERATE_LABEL}-`]);
      }),
    4 * MIN,
  );
  it(
    'a rolling update of the DaemonSet (new image tag) and a killed agent under a checksummed stream: no byte lost',
    () =>
      diagnosed(async () => {
        expect(server2Ip, 'the service step passed').not.toBe('');
        await kubectl(['-n', testNs, 'delete', 'networkpolicy', '--all']);
        await kubectl(['label', 'namespace', testNs, `${ACCELERATE_LABEL}=true`, '--overwrite']);
        await until(
          'client and server enabled',
          async () =>
            (await endpointFlags(agentPod, serverIp))?.includes('enabled') &&
            (await endpointFlags(agentPod, clientIp))?.includes('enabled'),
          90_000,
        );
        // the same image under a new tag: a real rollout, nothing pulled
        await run('ctr tag', [
          'nsenter',
          `--net=/run/netns/${env.NS}`,
          `--mount=${env.RUN}/ns/mnt`,
          'ctr',
          '--address',
          `${env.RUN}/containerd/containerd.sock`,
          '-n',
          'k8s.io',
          'images',
          'tag',
          '--force',
          'docker.io/library/podwarp:dev',
          'docker.io/library/podwarp:e2e-next',
        ]);
        const stream = (secs: number) =>
          kubectl(
            ['-n', testNs, 'exec', 'client', '--', 'pwperf', 'stream', '-c', serverIp, '-p', String(PORT), '-d', String(secs), '-i', '200'],
            { timeoutMs: 3 * MIN },
          ).then((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; sent: number; received: number });
        const before = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        const s1 = stream(30);
        await new Promise((r) => setTimeout(r, 3000));
        const container = ds.spec.template.spec.containers[0].name as string;
        await kubectl(['-n', agentNs, 'set', 'image', `daemonset/${ds.metadata.name}`, `${container}=podwarp:e2e-next`]);
        await kubectl(['-n', agentNs, 'rollout', 'status', `daemonset/${ds.metadata.name}`, '--timeout=120s'], { timeoutMs: 3 * MIN });
        const r1 = await s1;
        agentPod = (
          await kubectl([
            '-n',
            agentNs,
            'get',
            'pods',
            '-l',
            agentSelector,
            '--field-selector',
            `spec.nodeName=${env.NODE}`,
            '-o',
            'jsonpath={.items[0].metadata.name}',
          ])
        ).stdout.trim();
        const after = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        console.log(
          `stream across the rollout: ${JSON.stringify(r1)}; sk_msg redirected +${stat(after, 'pw_sk_msg', 'redirected') - stat(before, 'pw_sk_msg', 'redirected')}`,
        );
        expect(r1.ok, JSON.stringify(r1)).toBe(true);
        expect(stat(after, 'pw_sk_msg', 'redirected')).toBeGreaterThan(stat(before, 'pw_sk_msg', 'redirected'));

        // the agent killed (no grace): the datapath stays, traffic goes on
        const s2 = stream(20);
        await new Promise((r) => setTimeout(r, 3000));
        await kubectl(['-n', agentNs, 'delete', 'pod', agentPod, '--grace-period=0', '--force'], { reject: false });
        const r2 = await s2;
        console.log(`stream across the killed agent: ${JSON.stringify(r2)}`);
        expect(r2.ok, JSON.stringify(r2)).toBe(true);
        await kubectl(['-n', agentNs, 'rollout', 'status', `daemonset/${ds.metadata.name}`, '--timeout=120s'], { timeoutMs: 3 * MIN });
        agentPod = (
          await kubectl([
            '-n',
            agentNs,
            'get',
            'pods',
            '-l',
            agentSelector,
            '--field-selector',
            `spec.nodeName=${env.NODE}`,
            '-o',
            'jsonpath={.items[0].metadata.name}',
          ])
        ).stdout.trim();
      }),
    6 * MIN,
  );

  it(
    'kubectl delete of the DaemonSet + podwarp uninstall (deploy/README.md): nothing of podwarp left on the node',
    () =>
      diagnosed(async () => {
        expect(agentPod, 'the rollout step passed').not.toBe('');
        const st = await podwarp<{
          programs: { id: number; name: string }[];
          cgroups: { path: string }[];
          attachments?: { iface?: string; ifname?: string }[];
        }>(agentPod, ['status']);
        const progIds = st.programs.map((p) => p.id);
        const cgPaths = st.cgroups.map((c) => c.path);
        expect(progIds.length).toBeGreaterThan(0);
        await kubectl(['-n', agentNs, 'delete', 'daemonset', ds.metadata.name, '--wait=true'], { timeoutMs: 2 * MIN });
        const uninstall = {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name: `podwarp-uninstall-${env.NODE}`,
            namespace: agentNs,
            labels: { 'app.kubernetes.io/name': 'podwarp', 'app.kubernetes.io/component': 'uninstall' },
          },
          spec: {
            nodeName: env.NODE,
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
            '--timeout=120s',
          ],
          { timeoutMs: 3 * MIN },
        );
        const logs = await kubectl(['-n', agentNs, 'logs', '-l', 'app.kubernetes.io/component=uninstall', '--tail', '20']);
        console.log('uninstall: ' + logs.stdout.trim().split('\n').slice(-5).join('\n'));

        const inNode = ['nsenter', `--net=/run/netns/${env.NS}`, `--mount=${env.RUN}/ns/mnt`];
        const pins = await run('ls bpffs', [...inNode, 'ls', '-A', '/sys/fs/bpf']);
        expect(
          pins.stdout.split('\n').filter((x) => x.startsWith('podwarp')),
          'pins',
        ).toEqual([]);
        for (const id of progIds) {
          const r = await run('bpftool prog', ['bpftool', 'prog', 'show', 'id', String(id)], { reject: false });
          expect(r.exitCode, `program id ${id} still loaded: ${r.stdout}`).not.toBe(0);
        }
        const cg2 = fs
          .readFileSync('/proc/mounts', 'utf8')
          .split('\n')
          .find((l) => l.split(' ')[2] === 'cgroup2')!
          .split(' ')[1]!;
        for (const p of cgPaths) {
          const r = await run('bpftool cgroup', ['bpftool', 'cgroup', 'show', path.join(cg2, p)], { reject: false });
          expect(r.stdout.trim(), `attachments left on ${p}`).toBe('');
        }
        const links = JSON.parse((await run('ip link', [...inNode, 'ip', '-j', 'link', 'show', 'type', 'veth'])).stdout) as {
          ifname: string;
        }[];
        for (const l of links) {
          const f = await run('tc filter', [...inNode, 'tc', 'filter', 'show', 'dev', l.ifname, 'ingress']);
          expect(f.stdout.trim(), `tc filters left on ${l.ifname}`).toBe('');
        }
        await kubectl(['delete', '-f', MANIFEST, '--ignore-not-found', '--wait=false']);
      }),
    5 * MIN,
  );
});
