// End to end on a real single-node Kubernetes cluster built from upstream
// parts (test/e2e/cluster/up.sh: etcd, kube-apiserver, controller-manager,
// scheduler, kubelet, kube-proxy in iptables or nftables mode (PWE2E_PROXY_MODE),
// containerd + runc, CNI ptp +
// host-local). podwarp is deployed as users deploy it: `kubectl apply -f
// deploy/podwarp.yaml`, unchanged (the image is loaded into containerd as
// podwarp:dev, the name the manifest uses). The scenarios are in
// ./scenarios.ts, shared with kind.test.ts; this file brings the cluster up
// and says how to reach its node.
//
//   PODWARP_E2E_CLUSTER=1 npx vitest run --project e2e test/e2e/cluster.test.ts
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
import { afterAll, beforeAll, describe, it } from 'vitest';
import { run } from '../../host/exec.js';
import { kubectlPodwarpArgv, pluginEnv } from '../k8s/kubectl-plugin.js';
import { MIN, ROOT, registerScenarios, type E2eCluster } from './scenarios.js';

const CLUSTER = path.join(ROOT, 'test', 'e2e', 'cluster');

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
// asked for (scripts/e2e-cluster.sh, PWE2E_RUN): a missing prerequisite fails the file; not asked for, it skips and says why
const requested = !!process.env.PWE2E_RUN || process.env.PODWARP_E2E_CLUSTER === '1';
if (!available && !requested) console.warn(`podwarp real-cluster e2e SKIPPED: needs ${missing.join(', ')}.`);
if (!available && requested)
  it('real-cluster e2e: its prerequisites are here', () => {
    throw new Error(`the real-cluster e2e was asked for but needs ${missing.join(', ')}`);
  });

// ---- the cluster ------------------------------------------------------------

let runDir = process.env.PWE2E_RUN ?? '';
let broughtUp = false;
let env: Record<string, string> = {};

function readEnv(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(path.join(dir, 'env'), 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** The node of up.sh: a network namespace and a mount namespace on this host. */
const cluster: E2eCluster = {
  kubectl: (args, opts = {}) => run(`kubectl ${args[0]}`, [env.KUBECTL!, ...args], { timeoutMs: 2 * MIN, ...opts }),
  kubectlArgv: (args) => [env.KUBECTL!, ...args],
  testNs: `pwe2e-${crypto.randomBytes(3).toString('hex')}`,
  node: '',
  inNodeNet: [],
  inNode: [],
  // the podwarp CLI of this checkout, as a user runs it, with the admin kubeconfig (inside the node's netns, where the API is)
  podwarpCli: (args) =>
    run(
      `podwarp ${args[0]}`,
      [...cluster.inNodeNet, '--', path.join(ROOT, 'bin', 'podwarp'), ...args, '--kubeconfig', env.KUBECONFIG_ADMIN!],
      { timeoutMs: MIN },
    ),
  kubectlPlugin: (args) => {
    const [, ...rest] = kubectlPodwarpArgv(args);
    return run('kubectl podwarp', [...cluster.inNodeNet, '--', path.join(env.BIN!, 'kubectl'), ...rest], {
      env: pluginEnv({ KUBECONFIG: env.KUBECONFIG_ADMIN!, PATH: `${path.join(ROOT, 'deploy')}:${env.BIN}:${process.env.PATH}` }),
      timeoutMs: 2 * MIN,
      reject: false,
    });
  },
  tagImage: async (from, to) => {
    const ctr = ['ctr', '--address', `${env.RUN}/containerd/containerd.sock`, '-n', 'k8s.io'];
    await run('ctr tag', [...cluster.inNode, ...ctr, 'images', 'tag', '--force', from, to]);
  },
  proxyMode: 'iptables',
  podIp: /^10\.151\.0\.\d+$/,
  hostCgroup: (p) => {
    const cg2 = fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[2] === 'cgroup2')!
      .split(' ')[1]!;
    return path.join(cg2, p);
  },
};

// ---- the test ---------------------------------------------------------------

describe.skipIf(!available)(available ? 'real-cluster e2e' : `real-cluster e2e — skipped: needs ${missing.join(', ')}`, () => {
  beforeAll(async () => {
    if (!runDir) {
      broughtUp = true;
      const r = await run('up.sh', ['bash', path.join(CLUSTER, 'up.sh')], { timeoutMs: 80 * MIN });
      runDir = r.stdout.trim().split('\n').pop()!;
    }
    env = readEnv(runDir);
    Object.assign(cluster, {
      node: env.NODE!,
      inNodeNet: ['nsenter', `--net=/run/netns/${env.NS}`],
      inNode: ['nsenter', `--net=/run/netns/${env.NS}`, `--mount=${env.RUN}/ns/mnt`],
      proxyMode: env.PROXY_MODE ?? 'iptables',
    });
  }, 85 * MIN);

  afterAll(async () => {
    if (env.KUBECTL && !broughtUp)
      await cluster.kubectl(['delete', 'namespace', cluster.testNs, '--wait=false'], { reject: false, timeoutMs: MIN });
    if (!broughtUp) return;
    if (process.env.PODWARP_E2E_KEEP) {
      console.log(`kept cluster ${runDir}: . ${runDir}/env; $KUBECTL get pods -A; test/e2e/cluster/down.sh ${runDir}`);
      return;
    }
    await run('down.sh', ['bash', path.join(CLUSTER, 'down.sh'), runDir], { timeoutMs: 5 * MIN });
  }, 6 * MIN);

  registerScenarios(cluster);
});
