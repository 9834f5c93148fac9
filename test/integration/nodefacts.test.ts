// Node facts for pods known only by UID (as the Kubernetes source gives them):
// the node finds the pod cgroup (kubelet cgroupfs and systemd layouts), the
// host veth and the pod MAC through a process of the pod, else through the
// /32 route and a neighbour entry; anything not found is `missing`.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import * as ipr from '../../host/ip.js';
import { cgroup2Root } from '../../host/mounts.js';
import { desired } from '../../src/pods/desired.js';
import { FactsCache, gatherFacts } from '../../src/facts/gather.js';
import { podCgroupIndex, podPids } from '../../src/facts/cgroups.js';
import { podNetByPid } from '../../src/facts/podnet.js';
import { podKey, type Pod, type Snapshot } from '../../src/model.js';
import { ROOT } from '../../loader/build.js';
import * as sandbox from '../../devtools/sandbox.js';
import { leftovers, requireRoot, type Env } from './helpers.js';

const CLI = path.join(ROOT, 'bin', 'podwarp-dev');

/** A pod as the Kubernetes source gives it: no hostInterface, netns or cgroup. */
const kubePod = (p: sandbox.SandboxPod, extra: Partial<Pod> = {}): Pod => ({
  uid: p.uid,
  ip: p.ip,
  namespace: p.namespace,
  name: p.name,
  podInterface: 'eth0',
  hostNetwork: false,
  sidecar: false,
  labels: {},
  annotations: {},
  ...extra,
});

const snapOf = (pods: Pod[]): Snapshot => ({
  namespaces: [...new Set(pods.map((p) => p.namespace))].map((name) => ({ name, accelerate: true, labels: {} })),
  pods,
  networkPolicies: [],
  services: [],
});

/** Alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitGone(pids: number[]): Promise<number[]> {
  for (let i = 0; i < 50; i++) {
    const left = pids.filter(alive);
    if (left.length === 0) return [];
    await new Promise((r) => setTimeout(r, 100));
  }
  return pids.filter(alive);
}

/** Kills a pod's holder and waits (bounded) until its cgroup holds no process. */
async function killHolder(m: sandbox.SandboxManifest, p: sandbox.SandboxPod): Promise<void> {
  process.kill(p.holderPid!, 'SIGKILL');
  for (let i = 0; i < 50 && podPids(cgroup2Root(), p.cgroup).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(podPids(cgroup2Root(), p.cgroup)).toEqual([]);
  expect(m.pods).toContain(p);
}

interface Sb {
  id: string;
  dir: string;
  m: sandbox.SandboxManifest;
}
let sb: Sb | undefined;

async function upSandbox(kubeLayout: sandbox.KubeLayout, wiring: sandbox.Wiring): Promise<Sb> {
  requireRoot();
  const id = crypto.randomBytes(2).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pwfacts-${id}-`));
  sb = { id, dir, m: undefined as unknown as sandbox.SandboxManifest };
  sb.m = await sandbox.up({ dir, id, pods: 3, wiring, kubeLayout });
  return sb;
}

/** What helpers.leftovers checks, for a sandbox without a datapath (nothing pinned, no programs). */
const noDatapath = (id: string): Env => ({ id, dp: { pinRoot: `/nonexistent/pwfacts-${id}` }, progIds: [] }) as unknown as Env;

afterEach(async () => {
  const s = sb;
  sb = undefined;
  if (!s) return;
  const pids = (s.m?.pods ?? []).map((p) => p.holderPid).filter((x): x is number => !!x);
  const r = await sandbox.down(s.dir);
  fs.rmSync(s.dir, { recursive: true, force: true });
  expect(r.errors).toEqual([]);
  expect(await leftovers(noDatapath(s.id))).toEqual([]);
  expect(await waitGone(pids)).toEqual([]);
});

const CASES: [sandbox.KubeLayout, sandbox.Wiring][] = [
  ['cgroupfs', 'routed'],
  ['cgroupfs', 'bridge'],
  ['systemd', 'routed'],
  ['systemd', 'bridge'],
];

describe.each(CASES)('gatherFacts for UID-only pods (%s driver, %s wiring)', (layout, wiring) => {
  it('finds host ifindex, pod MAC, gateway MAC and pod cgroup of every pod', async () => {
    const { m } = await upSandbox(layout, wiring);
    const mount = cgroup2Root();
    // the sandbox lays pods out as that kubelet driver would
    for (const p of m.pods) {
      expect(p.uid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(p.cgroup.startsWith(`${m.cgroupRoot}/${layout === 'systemd' ? 'kubepods.slice/' : 'kubepods/'}`)).toBe(true);
      expect(p.cgroup).toContain(layout === 'systemd' ? `pod${p.uid!.replace(/-/g, '_')}.slice` : `pod${p.uid}`);
      expect(alive(p.holderPid!)).toBe(true);
    }
    // guaranteed (directly in kubepods), burstable, besteffort (in their QoS cgroup)
    expect(m.pods.map((p) => p.cgroup.split('/').length)).toEqual([4, 5, 5]);
    const index = podCgroupIndex(mount);
    for (const p of m.pods) expect(index.get(p.uid!)).toBe(p.cgroup);

    const hostLinks = await ipr.links();
    const snap = snapOf(m.pods.map((p) => kubePod(p)));
    const facts = await gatherFacts(snap, { cache: new FactsCache() });
    expect(Object.fromEntries(facts.missing)).toEqual({});
    for (const p of m.pods) {
      const f = facts.pods.get(podKey(p))!;
      expect(f).toBeDefined();
      const host = hostLinks.find((l) => l.ifname === p.hostInterface)!;
      expect(f.ifindex).toBe(host.ifindex);
      expect(f.hostInterface).toBe(p.hostInterface);
      expect(f.mac).toBe((await ipr.link('eth0', p.netns))!.address!.toLowerCase());
      const gw = m.bridge ? hostLinks.find((l) => l.ifname === m.bridge)! : host;
      expect(f.gwMac).toBe(gw.address!.toLowerCase());
      // the pod cgroup is the one that holds the holder
      expect(f.cgroup).toBe(p.cgroup);
      expect(podPids(mount, f.cgroup!)).toContain(p.holderPid);
      const own = fs
        .readFileSync(`/proc/${p.holderPid}/cgroup`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('0::'))!
        .slice(3);
      expect(own).toBe(p.holderCgroup);
      expect(own.startsWith(f.cgroup! + '/')).toBe(true);
      // and podNetByPid alone says the same
      expect(await podNetByPid(p.holderPid!, p.ip)).toEqual({
        hostIfindex: host.ifindex,
        podInterface: 'eth0',
        mac: f.mac,
        podIfindex: expect.any(Number),
      });
    }
    // desired() takes the interface and the cgroup from the facts
    const d = desired(snap, facts);
    expect(Object.fromEntries(d.attach)).toEqual(
      Object.fromEntries(m.pods.map((p) => [p.hostInterface, hostLinks.find((l) => l.ifname === p.hostInterface)!.ifindex])),
    );
    expect([...d.cgroups.keys()].sort()).toEqual(m.pods.map((p) => p.cgroup).sort());
    expect(d.skipped.size).toBe(0);
  });

  it('says why when a pod has no process and no route, and never guesses', async () => {
    const { m } = await upSandbox(layout, wiring);
    const [a, b] = m.pods as [sandbox.SandboxPod, sandbox.SandboxPod];
    await killHolder(m, a);
    if (wiring === 'routed') await run('del route', ['ip', 'route', 'del', `${a.ip}/32`, 'dev', a.hostInterface]);
    const ghost = kubePod(b, { name: 'ghost', uid: crypto.randomUUID(), ip: '10.255.255.254' });
    const nouid = kubePod(b, { name: 'no-uid', uid: undefined });
    const facts = await gatherFacts(snapOf([kubePod(a), kubePod(b), ghost, nouid]), { cache: new FactsCache() });
    expect(facts.pods.has(podKey(a))).toBe(false);
    expect(facts.missing.get(podKey(a))).toMatch(
      new RegExp(
        `no process in pod cgroup ${a.cgroup.replace(/[.]/g, '\\.')}; no single on-link /32 route to ${a.ip.replace(/[.]/g, '\\.')}$`,
      ),
    );
    expect(facts.missing.get(podKey(ghost))).toMatch(
      /^no pod cgroup for uid [0-9a-f-]{36} below .*; no single on-link \/32 route to 10\.255\.255\.254$/,
    );
    // a pod with neither hostInterface nor uid is not looked for (desired: no-interface)
    expect(facts.missing.has(podKey(nouid))).toBe(false);
    expect(facts.pods.has(podKey(nouid))).toBe(false);
    expect(facts.pods.get(podKey(b))?.hostInterface).toBe(b.hostInterface);
    const d = desired(snapOf([kubePod(a), kubePod(b), ghost, nouid]), facts);
    expect(Object.fromEntries(d.skipped)).toEqual({
      [podKey(a)]: 'facts-missing',
      [podKey(ghost)]: 'facts-missing',
      [podKey(nouid)]: 'no-interface',
    });
  });

  if (wiring === 'routed') {
    it('falls back to the /32 route and a neighbour entry when the pod has no process', async () => {
      const { m } = await upSandbox(layout, wiring);
      const a = m.pods[0]!;
      await killHolder(m, a);
      const cache = new FactsCache();
      // no IPv4 traffic yet: no neighbour entry, so no MAC
      const before = await gatherFacts(snapOf([kubePod(a)]), { cache });
      expect(before.missing.get(podKey(a))).toMatch(
        new RegExp(
          `no process in pod cgroup .*; route to ${a.ip.replace(/[.]/g, '\\.')} on ${a.hostInterface} but no neighbour entry for it$`,
        ),
      );
      // one connection attempt from the host resolves the pod's MAC (the pod answers with a RST)
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: a.ip, port: 9, timeout: 2000 });
        s.on('error', () => resolve());
        s.on('timeout', () => (s.destroy(), resolve()));
        s.on('connect', () => (s.destroy(), resolve()));
      });
      const after = await gatherFacts(snapOf([kubePod(a)]), { cache });
      expect(Object.fromEntries(after.missing)).toEqual({});
      const host = (await ipr.link(a.hostInterface))!;
      expect(after.pods.get(podKey(a))).toEqual({
        ifindex: host.ifindex,
        hostInterface: a.hostInterface,
        mac: (await ipr.link('eth0', a.netns))!.address!.toLowerCase(),
        gwMac: host.address!.toLowerCase(),
        cgroup: a.cgroup, // found by UID even with no process in it
      });
    });
  }
});

describe('sandbox with kubeLayout', () => {
  it('reuses what it found while it holds (cache), and notices a pod that moved', async () => {
    const { m } = await upSandbox('cgroupfs', 'routed');
    const cache = new FactsCache();
    const snap = snapOf(m.pods.map((p) => kubePod(p)));
    const first = await gatherFacts(snap, { cache });
    expect(cache.byUid.size).toBe(m.pods.length);
    expect(await gatherFacts(snap, { cache })).toEqual(first);
    // the host veth of pod-0 is replaced (a new sandbox for the same pod): the cached facts must not be used
    const p = m.pods[0]!;
    const lines = [
      ['link', 'del', p.hostInterface],
      ['link', 'add', p.hostInterface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns],
      ['addr', 'add', `${m.gateway}/32`, 'dev', p.hostInterface],
      ['link', 'set', p.hostInterface, 'up'],
      ['route', 'add', `${p.ip}/32`, 'dev', p.hostInterface, 'scope', 'link'],
    ];
    await ipr.batch('rewire pod-0', lines);
    await ipr.batch(
      'rewire pod-0 inside',
      [
        ['addr', 'add', `${p.ip}/32`, 'dev', 'eth0'],
        ['link', 'set', 'eth0', 'up'],
      ],
      p.netns,
    );
    const again = await gatherFacts(snap, { cache });
    const host = (await ipr.link(p.hostInterface))!;
    expect(again.pods.get(podKey(p))!.ifindex).toBe(host.ifindex);
    expect(again.pods.get(podKey(p))!.ifindex).not.toBe(first.pods.get(podKey(p))!.ifindex);
    expect(again.pods.get(podKey(p))!.mac).toBe((await ipr.link('eth0', p.netns))!.address!.toLowerCase());
    // pods gone from the snapshot are forgotten
    await gatherFacts(snapOf([]), { cache });
    expect(cache.byUid.size).toBe(0);
  });

  it('`sandbox down` from another process kills the holders and removes every cgroup', async () => {
    const { m, dir, id } = await upSandbox('systemd', 'bridge');
    const pids = m.pods.map((p) => p.holderPid!);
    expect(sandbox.readManifest(dir).pods.map((p) => p.holderPid)).toEqual(pids);
    expect(pids.every(alive)).toBe(true);
    const r = await run('podwarp sandbox down', [CLI, 'sandbox', 'down', '--dir', dir], { reject: false });
    expect(r.stderr).not.toMatch(/left things behind/);
    expect(r.exitCode).toBe(0);
    expect(await waitGone(pids)).toEqual([]);
    expect(fs.existsSync(path.join(cgroup2Root(), m.cgroupRoot))).toBe(false);
    expect(await leftovers(noDatapath(id))).toEqual([]);
  });

  it('without kubeLayout the sandbox is as before: no UIDs, no holders, per-pod cgroups', async () => {
    requireRoot();
    const id = crypto.randomBytes(2).toString('hex');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pwfacts-${id}-`));
    sb = { id, dir, m: undefined as unknown as sandbox.SandboxManifest };
    sb.m = await sandbox.up({ dir, id, pods: 2 });
    expect(sb.m.kubeLayout).toBeUndefined();
    for (const p of sb.m.pods) {
      expect(p).toEqual({
        namespace: p.namespace,
        name: p.name,
        ip: p.ip,
        netns: p.netns,
        hostInterface: p.hostInterface,
        cgroup: `${sb.m.cgroupRoot}/${p.namespace}_${p.name}`,
      });
      expect(podPids(cgroup2Root(), p.cgroup)).toEqual([]);
    }
    expect(fs.readFileSync(sb.m.stateFile, 'utf8')).not.toMatch(/uid/);
  });
});
