// End to end on a kind cluster: the scenarios of the real-cluster e2e
// (./scenarios.ts, shared with cluster.test.ts) on kind's worker node. kind's
// nodes are containers on one kernel: each has its own bpffs and cgroup
// namespace, and the two agents share the kernel.
//
// Two ways to run it:
//
//   bash scripts/e2e-kind.sh     # root, nothing needed beforehand: builds kind,
//                                # a Docker engine, kind's base and node images
//                                # without a registry, starts a private engine
//                                # and the cluster (the pod network wired by
//                                # up.sh as kindnetd would), runs this file,
//                                # tears down (test/e2e/kind/README.md)
//
//   PWKIND_RUN=/run/pwkind-<id>  # a cluster test/e2e/kind/up.sh made: its env
//                                # file names the engine, kubeconfig, cluster
//
// or, where `kind`, `kubectl` and a Docker engine (`docker info`) already work,
// plain `npx vitest run --project e2e test/e2e/kind.test.ts`: it
// creates a cluster of its own from deploy/kind.yaml (`--image
// $PODWARP_KIND_NODE_IMAGE` if set), and `docker build`s podwarp:dev (pulls
// node:20-bookworm-slim); the traffic image localhost/pwe2e/test:1 must be in
// the engine (test/e2e/cluster/images.sh builds it; `docker load -i` its
// tarball). Run so, it is skipped without them and says what is missing;
// with PODWARP_E2E_KIND=1 (or PWKIND_RUN) it fails instead.
//
//   PODWARP_E2E_NO_BUILD=1  use the podwarp:dev already in the Docker engine
//   PODWARP_E2E_KEEP=1      keep the cluster afterwards (prints how to reach it)
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { run } from '../../host/exec.js';
import { kubectlPodwarpArgv, pluginEnv } from '../k8s/kubectl-plugin.js';
import { checkoutCommit } from '../../src/version.js';
import { MIN, ROOT, TEST_IMAGE, registerScenarios, type E2eCluster } from './scenarios.js';

const KIND_CONFIG = path.join(ROOT, 'deploy', 'kind.yaml');
const IMAGE = 'podwarp:dev';

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
    else if (!(await tryRun(['docker', 'image', 'inspect', TEST_IMAGE])).ok)
      missing.push({
        what: TEST_IMAGE,
        detail: `${TEST_IMAGE} is not in the Docker engine (test/e2e/cluster/images.sh builds it; docker load -i the test tarball it prints)`,
      });
  }
  return missing;
}

const missing = await whatIsMissing();
const available = missing.length === 0;
const skipReason = `needs ${missing.map((m) => m.what).join(', ')}`;
// asked for (scripts/e2e-kind.sh sets PWKIND_RUN; PODWARP_E2E_KIND=1 for a kind of one's own): a missing
// prerequisite fails the file; not asked for, it skips and says why
const requested = !!RUN || process.env.PODWARP_E2E_KIND === '1';
if (!available && requested)
  it('kind e2e: its prerequisites are here', () => {
    throw new Error(`the kind e2e was asked for but ${missing.map((m) => m.detail).join('; ')}`);
  });
if (!available && !requested) {
  console.warn(
    [
      'podwarp kind e2e SKIPPED: ' + missing.map((m) => m.detail).join('; ') + '.',
      'It needs kind, kubectl and a Docker engine it can use (docker info must succeed). On a machine without them',
      '(and without a registry), `bash scripts/e2e-kind.sh` builds them, the node image and podwarp:dev, and runs this file',
      'on a private engine (test/e2e/kind/README.md); or PWKIND_RUN=<run directory of test/e2e/kind/up.sh>.',
    ].join('\n'),
  );
}

// ---- the cluster ------------------------------------------------------------

const id = crypto.randomBytes(3).toString('hex');
const clusterName = runEnv.PWKIND_CLUSTER ?? `pw-e2e-${id}`;
let kubeconfig = runEnv.KUBECONFIG ?? '';
let clusterStarted = false;
let nodes: string[] = [];

/** kind's worker node: a container of the engine, reached with `docker exec`; the API server is published on this host. */
const cluster: E2eCluster = {
  kubectl: (args, opts = {}) =>
    run(`kubectl ${args[0]}`, ['kubectl', '--kubeconfig', kubeconfig, ...args], { timeoutMs: 2 * MIN, ...opts }),
  kubectlArgv: (args) => ['kubectl', '--kubeconfig', kubeconfig, ...args],
  testNs: `pw-e2e-${id}`,
  node: '',
  inNodeNet: [],
  inNode: [],
  podwarpCli: (args) =>
    run(`podwarp ${args[0]}`, [path.join(ROOT, 'bin', 'podwarp'), ...args, '--kubeconfig', kubeconfig], { timeoutMs: MIN }),
  kubectlPlugin: (args) => {
    const [kubectl, ...rest] = kubectlPodwarpArgv(args);
    return run('kubectl podwarp', [kubectl!, ...rest], { env: pluginEnv({ KUBECONFIG: kubeconfig }), timeoutMs: 2 * MIN, reject: false });
  },
  tagImage: async (from, to) => {
    for (const n of nodes) await run('ctr tag', ['docker', 'exec', n, 'ctr', '-n', 'k8s.io', 'images', 'tag', '--force', from, to]);
  },
  proxyMode: 'iptables', // deploy/kind.yaml: kubeProxyMode
  podIp: /^10\.244\.\d+\.\d+$/, // kind's default podSubnet
  // hostCgroup: none; the node's cgroup namespace hides the host's path (the
  // uninstall scenario's program-id check covers attachments: one holds its program)
};

// ---- the test ---------------------------------------------------------------

describe.skipIf(!available)(available ? 'kind e2e' : `kind e2e — skipped: ${skipReason}`, () => {
  beforeAll(async () => {
    const load = () =>
      run('kind load docker-image', ['kind', 'load', 'docker-image', IMAGE, TEST_IMAGE, '--name', clusterName], { timeoutMs: 10 * MIN });
    if (RUN) {
      // up.sh made the cluster and loaded podwarp:dev and the test image into its engine
      await load();
    } else {
      kubeconfig = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pw-e2e-')), 'kubeconfig');
      clusterStarted = true;
      const nodeImage = process.env.PODWARP_KIND_NODE_IMAGE ? ['--image', process.env.PODWARP_KIND_NODE_IMAGE] : [];
      const create = ['kind', 'create', 'cluster', '--name', clusterName, '--config', KIND_CONFIG, ...nodeImage];
      // cluster and image in parallel: neither needs the other
      await Promise.all([
        run('kind create cluster', [...create, '--kubeconfig', kubeconfig, '--wait', '180s'], { timeoutMs: 8 * MIN }),
        process.env.PODWARP_E2E_NO_BUILD
          ? run('docker image inspect', ['docker', 'image', 'inspect', IMAGE], { timeoutMs: MIN })
          : run('docker build', ['docker', 'build', '--build-arg', `PODWARP_COMMIT=${checkoutCommit(ROOT) ?? ''}`, '-t', IMAGE, '.'], {
              cwd: ROOT,
              timeoutMs: 25 * MIN,
            }),
      ]);
      await load();
    }
    await cluster.kubectl(['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=180s'], { timeoutMs: 4 * MIN });
    nodes = (await run('kind get nodes', ['kind', 'get', 'nodes', '--name', clusterName])).stdout.trim().split(/\s+/);
    const worker = (
      await cluster.kubectl(['get', 'nodes', '-l', '!node-role.kubernetes.io/control-plane', '-o', 'jsonpath={.items[0].metadata.name}'])
    ).stdout.trim();
    if (!worker || !nodes.includes(worker)) throw new Error(`no worker node among ${nodes.join(', ')}`);
    Object.assign(cluster, { node: worker, inNodeNet: ['docker', 'exec', worker], inNode: ['docker', 'exec', worker] });
  }, 35 * MIN);

  afterAll(async () => {
    if (!clusterStarted) return;
    if (process.env.PODWARP_E2E_KEEP) {
      console.log(
        `kept kind cluster ${clusterName}: kubectl --kubeconfig ${kubeconfig} …; delete it with: kind delete cluster --name ${clusterName}`,
      );
      return;
    }
    // runs even when set-up or a test failed; deleting a half-made cluster is fine
    await run('kind delete cluster', ['kind', 'delete', 'cluster', '--name', clusterName, '--kubeconfig', kubeconfig], {
      timeoutMs: 4 * MIN,
    });
    fs.rmSync(path.dirname(kubeconfig), { recursive: true, force: true });
  }, 5 * MIN);

  registerScenarios(cluster);
});
