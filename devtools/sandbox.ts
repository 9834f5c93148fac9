// A node in miniature on this host: pods as network namespaces with veths,
// wired like kindnet (routed /32, host veth holds the gateway address) or like
// docker0/cni0 (one bridge), each pod's processes in its own child cgroup.
// `up` writes a state file for the local source and a manifest for `down`.
// With `kubeLayout` the pods look like a kubelet's: a UID each, the pod cgroup
// where the kubelet (cgroupfs or systemd driver) puts it, below the sandbox's
// own cgroup root, and a holder process (a pause container) in a container
// cgroup of the pod, in the pod's netns.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as cgroup from './cgroups.js';
import { errorMessage } from '../host/errors.js';
import { run } from '../host/exec.js';
import * as ipr from '../host/ip.js';
import * as iptables from './iptables.js';
import { log } from '../host/log.js';
import { scaled } from './slowdown.js';
import { writeStateFile, type StateFile } from '../src/state/load.js';

export type Wiring = 'routed' | 'bridge';
/** The kubelet's cgroup driver whose pod cgroup layout the sandbox imitates. */
export type KubeLayout = 'cgroupfs' | 'systemd';

export interface SandboxPod {
  namespace: string;
  name: string;
  ip: string;
  netns: string;
  hostInterface: string;
  /** Below the cgroup2 mount (with kubeLayout: the pod-level cgroup). */
  cgroup: string;
  /** kubeLayout only: the pod UID (dashed, lowercase). */
  uid?: string;
  /** kubeLayout only: the holder's container cgroup, a child of `cgroup`. */
  holderCgroup?: string;
  /** kubeLayout only: pid of the holder process (like a pause container); killed by `down`. */
  holderPid?: number;
}

export interface SandboxManifest {
  id: string;
  wiring: Wiring;
  subnet: string;
  gateway: string;
  bridge?: string;
  cgroupRoot: string;
  iptablesOwner?: string;
  stateFile: string;
  /** Set when the pods imitate a kubelet's layout (UIDs, pod cgroups, holder processes). */
  kubeLayout?: KubeLayout;
  pods: SandboxPod[];
}

export interface UpOptions {
  dir: string;
  pods?: number;
  namespaces?: string[];
  wiring?: Wiring;
  accelerate?: boolean;
  id?: string;
  /** Pods with UIDs, kubelet-style pod cgroups (this driver's layout) and a holder process each. */
  kubeLayout?: KubeLayout;
}

const MANIFEST = 'sandbox.json';

const QOS = ['guaranteed', 'burstable', 'besteffort'] as const;

/**
 * Pod-level and container cgroups (below `root`) where a kubelet with this
 * cgroup driver puts a pod of this QoS class: guaranteed pods directly in
 * kubepods, the others in their class's cgroup.
 */
export function kubePodCgroups(
  root: string,
  layout: KubeLayout,
  uid: string,
  qos: (typeof QOS)[number],
  containerId: string,
): { pod: string; container: string } {
  if (layout === 'cgroupfs') {
    const pod = `${root}/kubepods${qos === 'guaranteed' ? '' : `/${qos}`}/pod${uid}`;
    return { pod, container: `${pod}/${containerId}` };
  }
  // systemd escapes '-' (its hierarchy separator) in a unit name as '_'
  const u = uid.replace(/-/g, '_');
  const slice = qos === 'guaranteed' ? 'kubepods.slice' : `kubepods.slice/kubepods-${qos}.slice`;
  const stem = qos === 'guaranteed' ? 'kubepods' : `kubepods-${qos}`;
  const pod = `${root}/${slice}/${stem}-pod${u}.slice`;
  return { pod, container: `${pod}/cri-containerd-${containerId}.scope` };
}

function cidrRange(cidr: string): [number, number] {
  const [addr = '', lenS = '32'] = cidr.split('/');
  const len = Number(lenS);
  const n = addr.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  const size = 2 ** (32 - len);
  const start = n - (n % size);
  return [start, start + size - 1];
}

/** A free 10.x.y.0/24 with no overlapping route on the host (default routes aside). */
async function pickSubnet(seed: number): Promise<string> {
  const used = (await ipr.routes())
    .map((r) => r.dst)
    .filter((d) => d && d !== 'default' && /^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(d))
    .map((d) => cidrRange(d.includes('/') ? d : `${d}/32`));
  for (let i = 0; i < 200; i++) {
    const x = 200 + ((seed + i) % 50);
    const y = (seed * 7 + i * 13) % 256;
    const [a, b] = cidrRange(`10.${x}.${y}.0/24`);
    if (!used.some(([s, e]) => s <= b && a <= e)) return `10.${x}.${y}.0/24`;
  }
  throw new Error('no free 10.200-249.x.0/24 subnet for the sandbox');
}

export function readManifest(dir: string): SandboxManifest {
  return JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as SandboxManifest;
}

export async function up(opts: UpOptions): Promise<SandboxManifest> {
  const id = opts.id ?? crypto.randomBytes(2).toString('hex');
  if (!/^[a-z0-9]{2,6}$/.test(id)) throw new Error(`sandbox id "${id}" must be 2-6 lowercase letters/digits`);
  const wiring = opts.wiring ?? 'routed';
  const nPods = opts.pods ?? 4;
  const namespaces = opts.namespaces ?? ['team-a', 'team-b'];
  if (nPods < 2 || nPods > 200) throw new Error('a sandbox has 2..200 pods');
  fs.mkdirSync(opts.dir, { recursive: true });
  if (fs.existsSync(path.join(opts.dir, MANIFEST)))
    throw new Error(`${opts.dir} already holds a sandbox; run \`podwarp sandbox down --dir ${opts.dir}\``);

  const subnet = await pickSubnet(parseInt(id, 36));
  const base = subnet.split('.').slice(0, 3).join('.');
  const gateway = `${base}.1`;
  const m: SandboxManifest = {
    id,
    wiring,
    subnet,
    gateway,
    bridge: wiring === 'bridge' ? `pw${id}br` : undefined,
    cgroupRoot: `/podwarp-sandbox-${id}`,
    iptablesOwner: (await iptables.available()) ? `podwarp-sandbox-${id}` : undefined,
    stateFile: path.resolve(opts.dir, 'state.yaml'),
    pods: [],
  };
  if (opts.kubeLayout) m.kubeLayout = opts.kubeLayout;
  for (let i = 0; i < nPods; i++) {
    const namespace = namespaces[i % namespaces.length]!;
    const name = `pod-${i}`;
    const pod: SandboxPod = {
      namespace,
      name,
      ip: `${base}.${i + 2}`,
      netns: `pw-${id}-${name}`,
      hostInterface: `pw${id}p${i}`,
      cgroup: `${m.cgroupRoot}/${namespace}_${name}`,
    };
    if (opts.kubeLayout) {
      pod.uid = crypto.randomUUID();
      const c = kubePodCgroups(m.cgroupRoot, opts.kubeLayout, pod.uid, QOS[i % QOS.length]!, crypto.randomBytes(32).toString('hex'));
      pod.cgroup = c.pod;
      pod.holderCgroup = c.container;
    }
    m.pods.push(pod);
  }
  // the manifest first: whatever fails below, `down` knows what to remove
  fs.writeFileSync(path.join(opts.dir, MANIFEST), JSON.stringify(m, null, 2) + '\n');
  try {
    await build(m);
    if (m.kubeLayout) await startHolders(m, () => fs.writeFileSync(path.join(opts.dir, MANIFEST), JSON.stringify(m, null, 2) + '\n'));
  } catch (e) {
    log.error({ err: errorMessage(e) }, 'sandbox up failed; tearing down what was made');
    await down(opts.dir);
    throw e;
  }
  const state: StateFile = {
    apiVersion: 'podwarp.io/v1alpha1',
    kind: 'NodeState',
    node: `sandbox-${id}`,
    namespaces: namespaces.map((n) => ({ name: n, accelerate: opts.accelerate ?? false })),
    pods: m.pods.map((p) => ({
      namespace: p.namespace,
      name: p.name,
      ...(p.uid ? { uid: p.uid } : {}),
      ip: p.ip,
      hostInterface: p.hostInterface,
      netns: p.netns,
      cgroup: p.cgroup,
      labels: { app: p.name },
    })),
  };
  writeStateFile(m.stateFile, state);
  log.info({ id, wiring, subnet, pods: nPods, kubeLayout: m.kubeLayout }, 'sandbox up');
  return m;
}

async function build(m: SandboxManifest): Promise<void> {
  const owner = m.iptablesOwner;
  if (owner) {
    // let our interfaces forward even under a FORWARD DROP policy; removed by `down`
    const pattern = `pw${m.id}+`;
    await iptables.insert({ chain: 'FORWARD', spec: ['-i', pattern, '-j', 'ACCEPT'] }, owner);
    await iptables.insert({ chain: 'FORWARD', spec: ['-o', pattern, '-j', 'ACCEPT'] }, owner);
  }
  cgroup.create(m.cgroupRoot);
  const host: string[][] = [];
  if (m.bridge) {
    host.push(['link', 'add', m.bridge, 'type', 'bridge']);
    host.push(['addr', 'add', `${m.gateway}/24`, 'dev', m.bridge]);
    host.push(['link', 'set', m.bridge, 'up']);
  }
  for (const p of m.pods) {
    await ipr.netnsAdd(p.netns);
    cgroup.create(p.cgroup);
    host.push(['link', 'add', p.hostInterface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns]);
    if (m.bridge) {
      host.push(['link', 'set', p.hostInterface, 'master', m.bridge]);
    } else {
      host.push(['addr', 'add', `${m.gateway}/32`, 'dev', p.hostInterface]);
    }
    host.push(['link', 'set', p.hostInterface, 'up']);
    if (!m.bridge) host.push(['route', 'add', `${p.ip}/32`, 'dev', p.hostInterface, 'scope', 'link']);
  }
  await ipr.batch('wire sandbox host side', host);
  // forwarding only on our own interfaces, never the host-wide switch
  for (const dev of [...m.pods.map((p) => p.hostInterface), ...(m.bridge ? [m.bridge] : [])]) {
    ipr.sysctl(`net.ipv4.conf.${dev}.forwarding`, '1');
  }
  for (const p of m.pods) {
    const inPod: string[][] = [
      ['link', 'set', 'lo', 'up'],
      ['addr', 'add', m.bridge ? `${p.ip}/24` : `${p.ip}/32`, 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
    ];
    if (!m.bridge) inPod.push(['route', 'add', m.gateway, 'dev', 'eth0', 'scope', 'link']);
    inPod.push(['route', 'add', 'default', 'via', m.gateway, 'dev', 'eth0']);
    await ipr.batch(`wire pod ${p.name}`, inPod, p.netns);
    // a pod opening thousands of connections a second (connection-rate benchmarks) would run
    // out of ports held in TIME_WAIT: reuse them, as load generators do (this netns only)
    await run(`tune ${p.name}`, [
      'ip',
      'netns',
      'exec',
      p.netns,
      'sysctl',
      '-q',
      '-w',
      'net.ipv4.tcp_tw_reuse=1',
      'net.ipv4.ip_local_port_range=1024 65535',
    ]);
  }
}

/**
 * One holder process per pod, like a pause container: a long `sleep` in the
 * pod's netns and its container cgroup, detached (its own session, reparented
 * once the starting shell exits). Pids go into the manifest (`save`) as soon
 * as they exist, so `down` from any process can kill them.
 */
async function startHolders(m: SandboxManifest, save: () => void): Promise<void> {
  for (const p of m.pods) {
    if (!p.holderCgroup) continue;
    const abs = cgroup.create(p.holderCgroup);
    const r = await run(
      `start holder of ${p.namespace}/${p.name}`,
      ipr.podArgv(p.netns, abs, ['sh', '-c', 'setsid sleep 2147483647 </dev/null >/dev/null 2>&1 & echo $!']),
      { timeoutMs: scaled(10_000) },
    );
    const pid = Number(r.stdout.trim());
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`holder of ${p.name}: no pid in "${r.stdout.trim()}"`);
    p.holderPid = pid;
    save();
    // where it must be: in the container cgroup and the pod's netns
    if (!cgroup.procs(abs).includes(pid)) throw new Error(`holder ${pid} of ${p.name} is not in ${p.holderCgroup}`);
    const want = `net:[${fs.statSync(`/run/netns/${p.netns}`).ino}]`;
    const have = fs.readlinkSync(`/proc/${pid}/ns/net`);
    if (have !== want) throw new Error(`holder ${pid} of ${p.name} is in ${have}, not in netns ${p.netns} (${want})`);
  }
}

/** Whether `pid` is (still) a process in the cgroup tree `root` (not a reused pid). */
function inCgroupTree(pid: number, root: string): boolean {
  try {
    const line = fs
      .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    const cg = line?.slice(3);
    return !!cg && (cg === root || cg.startsWith(root + '/'));
  } catch {
    return false; // gone
  }
}

/** Removes everything the manifest names. Idempotent; keeps going past errors and reports them. */
export async function down(dir: string): Promise<{ removed: string[]; errors: string[] }> {
  const file = path.join(dir, MANIFEST);
  if (!fs.existsSync(file)) return { removed: [], errors: [] };
  const m = readManifest(dir);
  const removed: string[] = [];
  const errors: string[] = [];
  const attempt = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      removed.push(what);
    } catch (e) {
      errors.push(`${what}: ${errorMessage(e)}`);
    }
  };
  // processes first: a process left in a netns keeps it (and its veth) alive
  for (const p of m.pods) {
    const pid = p.holderPid;
    // a pid recorded long ago may belong to someone else by now: only one still in our cgroup tree
    if (pid && inCgroupTree(pid, m.cgroupRoot)) {
      await attempt(`holder ${pid} of ${p.namespace}/${p.name}`, async () => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
        }
      });
    }
  }
  // cgroup.destroy waits (bounded) until the tree is empty, then removes it children first
  await attempt(`cgroup ${m.cgroupRoot}`, () => cgroup.destroy(cgroup.cgroupPath(m.cgroupRoot)));
  const nsNow = new Set(await ipr.netnsList());
  for (const p of m.pods) if (nsNow.has(p.netns)) await attempt(`netns ${p.netns}`, () => ipr.netnsDel(p.netns));
  // deleting a netns destroys its veth pairs asynchronously: a device that is gone by now is fine
  for (const dev of [...m.pods.map((p) => p.hostInterface), ...(m.bridge ? [m.bridge] : [])]) {
    await attempt(`link ${dev}`, async () => {
      if (await ipr.link(dev)) {
        const r = await run(`delete ${dev}`, ['ip', 'link', 'del', dev], { reject: false });
        if (r.exitCode !== 0 && (await ipr.link(dev))) throw new Error(r.stderr.trim());
      }
    });
  }
  if (m.iptablesOwner && (await iptables.available())) {
    await attempt(`iptables rules ${m.iptablesOwner}`, () => iptables.removeOwned('FORWARD', m.iptablesOwner!));
    await attempt(`kube-proxy-style services`, () => iptables.removeKubeProxy(kubeProxyPrefix(m), m.iptablesOwner!));
  }
  if (errors.length === 0) {
    fs.rmSync(file, { force: true });
    fs.rmSync(m.stateFile, { force: true });
  }
  log.info({ id: m.id, removed: removed.length, errors: errors.length }, 'sandbox down');
  return { removed, errors };
}

export const kubeProxyPrefix = (m: SandboxManifest): string => `PW-${m.id}`;
/** Service ClusterIPs of the sandbox: never on any interface, only DNAT'd or rewritten at connect(). */
export const VIP_RANGE = '10.97.0.0/16';
export const vip = (i: number): string => `10.97.${Math.floor(i / 250)}.${(i % 250) + 1}`;

/** kube-proxy-style iptables rules for these services (the normal path of service traffic). */
export async function installServices(m: SandboxManifest, services: iptables.KubeProxyService[]): Promise<void> {
  if (!m.iptablesOwner) throw new Error('iptables is not available: no kube-proxy-style rules');
  await iptables.removeKubeProxy(kubeProxyPrefix(m), m.iptablesOwner);
  await iptables.installKubeProxy(kubeProxyPrefix(m), m.iptablesOwner, `pw${m.id}+`, VIP_RANGE, services);
}

/** New backends for the services of installServices (same services, same order), keeping the endpoints that stay (and their affinity). */
export async function updateServices(m: SandboxManifest, services: iptables.KubeProxyService[]): Promise<void> {
  if (!m.iptablesOwner) throw new Error('iptables is not available: no kube-proxy-style rules');
  await iptables.updateKubeProxy(kubeProxyPrefix(m), services);
}

/** argv to run a command inside a sandbox pod (its netns and its cgroup). */
export function podCommand(p: SandboxPod, argv: string[]): string[] {
  return ipr.podArgv(p.netns, cgroup.cgroupPath(p.cgroup), argv);
}

export async function execInPod(p: SandboxPod, argv: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return run(`run in ${p.namespace}/${p.name}`, podCommand(p, argv), { reject: false });
}
