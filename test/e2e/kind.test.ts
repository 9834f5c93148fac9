// End to end on a kind cluster: the image, the DaemonSet with the Kubernetes
// source, a namespace switched on by its label, and pod→pod traffic on one
// node taking the tc fast path. kind's nodes are containers on one kernel:
// each has its own bpffs and cgroup namespace, and two agents share the kernel.
//
// Two ways to run it:
//
//   bash scripts/e2e-kind.sh     # root, nothing needed beforehand: builds kind,
//                                # a Docker engine, kind's base and node images
//                                # without a registry, starts a private engine
//                                # and the cluster, runs this file, tears down
//                                # (test/e2e/kind/README.md)
//
//   PWKIND_RUN=/run/pwkind-<id>  # a cluster test/e2e/kind/up.sh made: its env
//                                # file names the engine, kubeconfig, cluster
//
// or, where `kind`, `kubectl` and a Docker engine (`docker info`) already work,
// plain `npx vitest run --project integration test/e2e/kind.test.ts`: it
// creates a cluster of its own (`--image $PODWARP_KIND_NODE_IMAGE` if set), and
// `docker build`s podwarp:dev (pulls node:20-bookworm-slim). Without them the
// suite is skipped and says what is missing. The test pods use the podwarp:dev
// image itself (Node.js: a TCP echo server and a client), so nothing else is
// pulled inside the cluster (imagePullPolicy: Never).
//
//   PODWARP_E2E_NO_BUILD=1  use the podwarp:dev already in the Docker engine
//   PODWARP_E2E_KEEP=1      keep the cluster afterwards (prints how to reach it)
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, type RunResult } from '../../loader/exec.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const KIND_CONFIG = path.join(ROOT, 'deploy', 'kind.yaml');
const MANIFEST = path.join(ROOT, 'deploy', 'podwarp.yaml');
const IMAGE = 'podwarp:dev';
const ECHO_PORT = 8080;
const ACCELERATE_LABEL = 'podwarp.io/accelerate';
const MIN = 60_000;

// a cluster made by test/e2e/kind/up.sh: take its engine, kubeconfig and name
const RUN = process.env.PWKIND_RUN ?? '';
const runEnv: Record<string, string> = {};
if (RUN) {
  for (const line of fs.readFileSync(path.join(RUN, 'env'), 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line);
    if (m) runEnv[m[1]!] = m[2]!;
  }
  for (const k of ['DOCKER_HOST', 'PATH', 'KIND_EXPERIMENTAL_DOCKER_NETWORK']) if (runEnv[k]) process.env[k] = runEnv[k];
}

// ---- is there anything to run it on? --------------------------------------

async function tryRun(argv: string[]): Promise<{ ok: boolean; detail: string }> {
  try {
    const r = await run(`probe ${argv[0]}`, argv, { reject: false, timeoutMs: 20_000 });
    const detail = (r.stderr || r.stdout).trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
    return { ok: r.exitCode === 0, detail };
  } catch (e) {
    return { ok: false, detail: e instanceof Error ? e.message : String(e) };
  }
}

/** What is missing to run the suite: a short name and the details. */
async function whatIsMissing(): Promise<{ what: string; detail: string }[]> {
  const missing: { what: string; detail: string }[] = [];
  const has = async (cmd: string) => (await tryRun(['sh', '-c', `command -v ${cmd}`])).ok;
  if (!(await has('kind')))
    missing.push({ what: 'kind', detail: '`kind` is not on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)' });
  if (!(await has('kubectl'))) missing.push({ what: 'kubectl', detail: '`kubectl` is not on PATH' });
  if (!(await has('docker'))) missing.push({ what: 'a Docker engine', detail: '`docker` is not on PATH' });
  else {
    const info = await tryRun(['docker', 'info', '--format', '{{.ServerVersion}}']);
    if (!info.ok)
      missing.push({ what: 'a Docker engine', detail: `no working Docker engine (\`docker info\` failed: ${info.detail || 'no output'})` });
  }
  return missing;
}

const missing = await whatIsMissing();
const available = missing.length === 0;
const skipReason = `needs ${missing.map((m) => m.what).join(', ')}`;
if (!available) {
  console.warn(
    [
      'podwarp kind e2e SKIPPED: ' + missing.map((m) => m.detail).join('; ') + '.',
      'It needs kind, kubectl and a Docker engine it can use (docker info must succeed). On a machine without them',
      '(and without a registry), `bash scripts/e2e-kind.sh` builds them, the node image and podwarp:dev, and runs this file',
      'on a private engine (test/e2e/kind/README.md); or PWKIND_RUN=<run directory of test/e2e/kind/up.sh>.',
    ].join('\n'),
  );
}

// ---- helpers ----------------------------------------------------------------

const id = crypto.randomBytes(3).toString('hex');
const cluster = runEnv.PWKIND_CLUSTER ?? `pw-e2e-${id}`;
const testNs = `pw-e2e-${id}`;
let kubeconfig = runEnv.KUBECONFIG ?? '';
let clusterStarted = false;

// what the manifest says, so the test follows it
const manifest = YAML.parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8')).map((d) => d.toJS() as Record<string, any>);
const ds = manifest.find((d) => d?.kind === 'DaemonSet')!;
const agentNs: string = ds.metadata.namespace;
const agentSelector = Object.entries(ds.spec.selector.matchLabels as Record<string, string>)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');

function kubectl(args: string[], opts: { input?: string; timeoutMs?: number; reject?: boolean } = {}): Promise<RunResult> {
  return run(`kubectl ${args[0]}`, ['kubectl', '--kubeconfig', kubeconfig, ...args], { timeoutMs: 2 * MIN, ...opts });
}

/** Polls `f` until it returns something truthy; fails after `ms` with the last value it saw. */
async function until<T>(what: string, f: () => Promise<T>, ms: number, everyMs = 2000): Promise<NonNullable<T>> {
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

/** On failure, print what the cluster looks like before the error propagates. */
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
    await show(['-n', agentNs, 'logs', '-l', agentSelector, '--prefix', '--tail', '80']);
    await show(['-n', testNs, 'describe', 'pods']);
    throw e;
  }
}

interface EndpointRow {
  ip: string;
  flags: string;
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

const redirected = async (agentPod: string): Promise<number> =>
  (await podwarp<StatRow[]>(agentPod, ['dump', 'stats'])).find((s) => s.program === 'pw_tc_egress' && s.reason === 'redirected')?.packets ??
  0;

// Node.js one-liners run by the podwarp:dev image (it has node, no nc)
const ECHO_SERVER = `require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(${ECHO_PORT}, '0.0.0.0', () => console.log('listening'));`;
const ECHO_CLIENT = [
  "const net = require('net'), crypto = require('crypto');",
  'const [ip, port, n] = process.argv.slice(1);',
  'const data = crypto.randomBytes(Number(n)); const got = [];',
  'const s = net.connect(Number(port), ip, () => s.end(data));',
  's.on("data", (d) => got.push(d));',
  's.on("end", () => { const ok = Buffer.concat(got).equals(data); console.log(JSON.stringify({ ok, bytes: Buffer.concat(got).length })); process.exit(ok ? 0 : 1); });',
  's.on("error", (e) => { console.error(e.message); process.exit(2); });',
  'setTimeout(() => { console.error("timeout"); process.exit(3); }, 30000);',
].join('\n');

function testPod(name: string, node: string, script: string, listens?: number): object {
  const readinessProbe = listens ? { tcpSocket: { port: listens }, periodSeconds: 1 } : undefined;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: testNs, labels: { app: name } },
    spec: {
      // both on one node: the fast path is for same-node traffic
      nodeSelector: { 'kubernetes.io/hostname': node },
      terminationGracePeriodSeconds: 0,
      containers: [{ name, image: IMAGE, imagePullPolicy: 'Never', command: ['node', '-e', script], readinessProbe }],
    },
  };
}

// ---- the test ---------------------------------------------------------------

describe.skipIf(!available)(available ? 'kind e2e' : `kind e2e (skipped: ${skipReason})`, () => {
  let worker = '';
  let agentPod = '';
  let serverIp = '';
  let clientIp = '';

  beforeAll(async () => {
    if (RUN) {
      // up.sh made the cluster and loaded podwarp:dev into its engine
      await run('kind load docker-image', ['kind', 'load', 'docker-image', IMAGE, '--name', cluster], { timeoutMs: 5 * MIN });
      await kubectl(['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=180s'], { timeoutMs: 4 * MIN });
      return;
    }
    kubeconfig = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pw-e2e-')), 'kubeconfig');
    clusterStarted = true;
    const nodeImage = process.env.PODWARP_KIND_NODE_IMAGE ? ['--image', process.env.PODWARP_KIND_NODE_IMAGE] : [];
    // cluster and image in parallel: neither needs the other
    await Promise.all([
      run(
        'kind create cluster',
        [
          'kind',
          'create',
          'cluster',
          '--name',
          cluster,
          '--config',
          KIND_CONFIG,
          ...nodeImage,
          '--kubeconfig',
          kubeconfig,
          '--wait',
          '180s',
        ],
        {
          timeoutMs: 8 * MIN,
        },
      ),
      process.env.PODWARP_E2E_NO_BUILD
        ? run('docker image inspect', ['docker', 'image', 'inspect', IMAGE], { timeoutMs: MIN })
        : run('docker build', ['docker', 'build', '-t', IMAGE, '.'], { cwd: ROOT, timeoutMs: 25 * MIN }),
    ]);
    await run('kind load docker-image', ['kind', 'load', 'docker-image', IMAGE, '--name', cluster], { timeoutMs: 5 * MIN });
    await kubectl(['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=180s'], { timeoutMs: 4 * MIN });
  }, 35 * MIN);

  afterAll(async () => {
    if (!clusterStarted) return;
    if (process.env.PODWARP_E2E_KEEP) {
      console.log(
        `kept kind cluster ${cluster}: kubectl --kubeconfig ${kubeconfig} …; delete it with: kind delete cluster --name ${cluster}`,
      );
      return;
    }
    // runs even when set-up or a test failed; deleting a half-made cluster is fine
    await run('kind delete cluster', ['kind', 'delete', 'cluster', '--name', cluster, '--kubeconfig', kubeconfig], { timeoutMs: 4 * MIN });
    fs.rmSync(path.dirname(kubeconfig), { recursive: true, force: true });
  }, 5 * MIN);

  it(
    'the DaemonSet rolls out, one ready agent per node',
    () =>
      diagnosed(async () => {
        await kubectl(['apply', '-f', MANIFEST]);
        await kubectl(['-n', agentNs, 'rollout', 'status', `daemonset/${ds.metadata.name}`, '--timeout=240s'], { timeoutMs: 5 * MIN });
        const nodes = (await kubectl(['get', 'nodes', '-o', 'jsonpath={.items[*].metadata.name}'])).stdout.trim().split(/\s+/);
        const agents = JSON.parse((await kubectl(['-n', agentNs, 'get', 'pods', '-l', agentSelector, '-o', 'json'])).stdout) as {
          items: { spec: { nodeName: string }; status: { conditions?: { type: string; status: string }[] } }[];
        };
        expect(agents.items.map((p) => p.spec.nodeName).sort()).toEqual([...nodes].sort());
        for (const p of agents.items) expect(p.status.conditions?.find((c) => c.type === 'Ready')?.status, p.spec.nodeName).toBe('True');

        worker = (
          await kubectl(['get', 'nodes', '-l', '!node-role.kubernetes.io/control-plane', '-o', 'jsonpath={.items[0].metadata.name}'])
        ).stdout.trim();
        expect(worker, 'a worker node').not.toBe('');
        agentPod = (
          await kubectl([
            '-n',
            agentNs,
            'get',
            'pods',
            '-l',
            agentSelector,
            '--field-selector',
            `spec.nodeName=${worker}`,
            '-o',
            'jsonpath={.items[0].metadata.name}',
          ])
        ).stdout.trim();
        expect(agentPod, `the agent pod on ${worker}`).not.toBe('');
      }),
    6 * MIN,
  );

  it(
    'pods of a namespace without the label are in pw_endpoints, not enabled',
    () =>
      diagnosed(async () => {
        expect(agentPod, 'the rollout step passed').not.toBe('');
        await kubectl(['create', 'namespace', testNs]);
        const pods = {
          apiVersion: 'v1',
          kind: 'List',
          items: [testPod('server', worker, ECHO_SERVER, ECHO_PORT), testPod('client', worker, 'setInterval(() => {}, 1 << 30)')],
        };
        await kubectl(['apply', '-f', '-'], { input: JSON.stringify(pods) });
        await kubectl(['-n', testNs, 'wait', '--for=condition=Ready', 'pod/server', 'pod/client', '--timeout=120s'], {
          timeoutMs: 3 * MIN,
        });
        const ip = async (pod: string) =>
          (await kubectl(['-n', testNs, 'get', 'pod', pod, '-o', 'jsonpath={.status.podIP}'])).stdout.trim();
        serverIp = await ip('server');
        clientIp = await ip('client');
        expect(serverIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
        expect(clientIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

        const rows = await until(
          `${serverIp} and ${clientIp} in pw_endpoints on ${worker}`,
          async () => {
            const eps = await podwarp<EndpointRow[]>(agentPod, ['dump', 'endpoints']);
            const mine = eps.filter((e) => e.ip === serverIp || e.ip === clientIp);
            return mine.length === 2 ? mine : undefined;
          },
          90_000,
        );
        for (const r of rows) expect(r.flags, r.ip).not.toContain('enabled');
      }),
    5 * MIN,
  );

  it(
    `labelling the namespace ${ACCELERATE_LABEL}=true enables both endpoints`,
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
      }),
    3 * MIN,
  );

  it(
    'pod→pod TCP between them works and moves the tc redirected counter',
    () =>
      diagnosed(async () => {
        expect(serverIp, 'the enable step passed').not.toBe('');
        const before = await redirected(agentPod);
        for (let i = 0; i < 3; i++) {
          const r = await kubectl(
            ['-n', testNs, 'exec', 'client', '--', 'node', '-e', ECHO_CLIENT, serverIp, String(ECHO_PORT), String(1 << 20)],
            { timeoutMs: MIN },
          );
          expect(JSON.parse(r.stdout.trim())).toEqual({ ok: true, bytes: 1 << 20 });
        }
        const after = await redirected(agentPod);
        // new connections between two enabled pods: their SYN is seen, so every packet of them is redirected
        expect(after, `pw_tc_egress redirected before ${before}, after ${after}`).toBeGreaterThan(before);
        const stats = await podwarp<StatRow[]>(agentPod, ['dump', 'stats']);
        console.log(
          'counters on ' +
            worker +
            ': ' +
            stats
              .filter((s) => s.packets > 0)
              .map((s) => `${s.program}/${s.reason}=${s.packets}`)
              .join(' '),
        );
      }),
    3 * MIN,
  );

  it(
    'removing the label disables them again',
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
      }),
    3 * MIN,
  );
});
