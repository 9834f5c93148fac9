// The agent with the Kubernetes source, for real: @kubernetes/client-node
// informers against the API server double (test/k8s/apiserver.ts), sandbox
// pods laid out like a kubelet's (pod UIDs, pod cgroups, a holder process),
// real maps, real traffic. Every scenario of issue 5 is one `it`.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { EP_FLAGS } from '../../abi/schema.js';
import { ACCELERATE_LABEL } from '../../src/model.js';
import { conn, rr, startServer, type Server } from '../../devtools/perf.js';
import { readActual } from '../../src/pods/apply.js';
import { vip, type SandboxPod } from '../../devtools/sandbox.js';
import { FakeApiServer, type ApiObject } from '../k8s/apiserver.js';
import {
  CLI,
  agentMetric as metric,
  counters,
  delta,
  nodePasses,
  setUp,
  SLOWDOWN,
  spawnKubeAgent,
  tearDown,
  until,
  type Agent,
  type Env,
} from './helpers.js';
import { BpfServiceMaps } from '../../src/services/maps.js';

describe('agent --source kubernetes against an API server double', () => {
  let env: Env | undefined;
  let api: FakeApiServer | undefined;
  let kubeconfig = '';
  let node = '';
  let runDir = '';
  let configz: http.Server | undefined;
  const agents: Agent[] = [];
  const servers: Server[] = [];
  const WEB = vip(3);
  const pods = () => env!.m.pods;

  const podObj = (
    p: SandboxPod,
    over: { name?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string> } = {},
  ): ApiObject => ({
    metadata: {
      name: over.name ?? p.name,
      namespace: p.namespace,
      uid: over.uid ?? p.uid,
      labels: over.labels ?? { app: p.name },
      annotations: over.annotations ?? {},
    },
    spec: { nodeName: node, containers: [{ name: 'app', image: 'pwperf' }] },
    status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] },
  });
  const sliceObj = (name: string, ips: string[], notReady: string[] = []): ApiObject => ({
    metadata: { name, namespace: 'team-b', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: !notReady.includes(ip) } })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
  const ns = (name: string, on: boolean): ApiObject => ({ metadata: { name, labels: on ? { [ACCELERATE_LABEL]: 'true' } : {} } });

  function startAgent(extra: string[] = []): Agent {
    const a = spawnKubeAgent(env!, kubeconfig, node, extra);
    agents.push(a);
    return a;
  }
  const ready = (a: Agent) => until('agent ready', () => a.lines.find((l) => l.msg === 'ready'), 30_000);
  const endpoints = async () => (await readActual(env!.dp)).endpoints;
  const enabled = async (p: SandboxPod) => {
    const e = (await endpoints()).get(p.ip);
    return e ? (e.flags & EP_FLAGS.ENABLED ? 'enabled' : 'disabled') : 'absent';
  };
  const webBackends = async () => {
    const have = await new BpfServiceMaps(env!.dp).read();
    const key = `${WEB}:80/6`;
    const count = have.masters.get(key)?.count ?? 0;
    const slots = have.slots.get(key) ?? new Map<number, number>();
    return Array.from({ length: count }, (_, i) => have.backends.get(slots.get(i + 1) ?? -1)?.ip ?? '?').sort();
  };

  beforeAll(async () => {
    env = await setUp({ pods: 4, namespaces: ['team-a', 'team-b'], kubeLayout: 'cgroupfs', load: false });
    node = `pw-node-${env.id}`;
    runDir = path.join(env.dir, 'run');
    api = await FakeApiServer.start({ bookmarkMs: 300 });
    kubeconfig = api.kubeconfig(env.dir);
    api.create('namespaces', ns('team-a', false));
    api.create('namespaces', ns('team-b', false));
    for (const p of pods()) api.create('pods', podObj(p));
    // a pod of another node must never show up
    api.create('pods', {
      ...podObj(pods()[0]!, { name: 'elsewhere', uid: '00000000-0000-0000-0000-000000000001' }),
      spec: { nodeName: 'other-node', containers: [] },
    });
    api.create('services', {
      metadata: { name: 'web', namespace: 'team-b' },
      spec: { clusterIP: WEB, clusterIPs: [WEB], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }] },
    });
    api.create('endpointslices', sliceObj('web-1', [pods()[1]!.ip, pods()[3]!.ip]));
    for (const p of pods().slice(1)) servers.push(await startServer(p, 8080));
    // kube-proxy's /configz as kube-proxy 1.36 serves it (v1alpha1)
    configz = http.createServer((_req, res) =>
      res.end(JSON.stringify({ 'kubeproxy.config.k8s.io': { iptables: { masqueradeAll: false }, mode: 'nftables' } })),
    );
    await new Promise<void>((r) => configz!.listen(0, '127.0.0.1', r));
  });

  afterAll(async () => {
    for (const a of agents) {
      a.child.kill('SIGKILL');
      await a.child.catch(() => {});
    }
    for (const s of servers) await s.stop();
    await api?.stop();
    await new Promise((r) => (configz ? configz.close(r) : r(undefined)));
    expect(await tearDown(env)).toEqual([]);
  });

  it("lists, watches and writes this node's pods (disabled) and the services once the caches are synced", async () => {
    const a = startAgent(['--kube-proxy-configz', `http://127.0.0.1:${(configz!.address() as AddressInfo).port}/configz`]);
    await ready(a);
    for (const p of pods()) expect(await enabled(p)).toBe('disabled');
    expect((await endpoints()).size).toBe(pods().length); // 'elsewhere' (another node) is not there
    expect(await webBackends()).toEqual([pods()[1]!.ip, pods()[3]!.ip].sort());
    expect(api!.stats.list.pods).toBeGreaterThanOrEqual(1);
    // the pods' cgroups were found by UID (cgroupfs layout): nothing attached while disabled
    expect((await readActual(env!.dp)).cgroups).toEqual([]);
  });

  it('namespace labelled → its endpoints enabled and its pod cgroups hooked; unlabelled → disabled again', async () => {
    api!.update('namespaces', ns('team-a', true));
    const teamA = pods().filter((p) => p.namespace === 'team-a');
    const teamB = pods().filter((p) => p.namespace === 'team-b');
    await until('team-a enabled', async () => (await Promise.all(teamA.map(enabled))).every((s) => s === 'enabled'));
    for (const p of teamB) expect(await enabled(p)).toBe('disabled');
    const cgs = (await readActual(env!.dp)).cgroups.map((c) => c.path).sort();
    expect(cgs).toEqual(teamA.map((p) => p.cgroup).sort());
    api!.update('namespaces', ns('team-a', false));
    await until('team-a disabled', async () => (await Promise.all(teamA.map(enabled))).every((s) => s === 'disabled'));
    await until('cgroups detached', async () => (await readActual(env!.dp)).cgroups.length === 0);
  });

  it('`podwarp enable` / `disable` set the label through the API and the agent follows', async () => {
    const cli = (verb: string, n: string) =>
      run(CLI, [CLI, verb, n, '--kubeconfig', kubeconfig], {
        env: { ...process.env, PODWARP_LOG_LEVEL: 'warn' } as Record<string, string>,
      });
    expect((await cli('enable', 'team-b')).stdout).toContain('namespace team-b: acceleration on');
    expect(api!.get('namespaces', undefined, 'team-b')?.metadata.labels?.[ACCELERATE_LABEL]).toBe('true');
    expect((await cli('enable', 'team-a')).stdout).toContain('acceleration on');
    await until('all enabled', async () => (await Promise.all(pods().map(enabled))).every((s) => s === 'enabled'));
    expect((await cli('enable', 'team-a')).stdout).toContain('(unchanged)');
    const bad = await run(CLI, [CLI, 'enable', 'no-such-ns', '--kubeconfig', kubeconfig], { reject: false });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toContain('namespace "no-such-ns" does not exist');
    // status: enabled namespaces and per-namespace endpoint counts, from the agent's report
    const st = JSON.parse(
      (
        await run(CLI, [CLI, 'status', '-o', 'json'], {
          env: { ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_RUN_DIR: runDir } as Record<string, string>,
        })
      ).stdout,
    ) as {
      agent: {
        running: boolean;
        source: string;
        namespaces: Record<string, { accelerate: boolean; enabled: number; disabled: number }>;
        kubeProxy?: unknown;
      };
    };
    expect(st.agent.running).toBe(true);
    expect(st.agent.source).toBe('kubernetes');
    // kube-proxy's configuration as read from its /configz (--masquerade-all auto)
    expect(st.agent.kubeProxy).toEqual({ masqueradeAll: false, from: 'configz', mode: 'nftables' });
    for (const n of ['team-a', 'team-b'])
      expect(st.agent.namespaces[n]).toMatchObject({
        accelerate: true,
        enabled: pods().filter((p) => p.namespace === n).length,
        disabled: 0,
      });
  });

  it('real traffic between the pods is accelerated and the ClusterIP is resolved at connect()', async () => {
    const before = await counters(env!.dp);
    const r = await rr(pods()[0]!, pods()[1]!.ip, 8080, { n: 200, size: 64 });
    expect(r.n).toBe(200);
    const c = await conn(pods()[0]!, WEB, 80, { n: 50 });
    expect(c.error).toBeUndefined();
    const after = await counters(env!.dp);
    // sockmap on (the default): the rr exchanges go socket to socket
    expect(delta(before, after, 'pw_sk_msg').redirected).toBeGreaterThan(100);
    expect(delta(before, after, 'pw_lb').translated).toBeGreaterThanOrEqual(50);
  });

  it('a NetworkPolicy selecting a pod excludes it from bypass; deleting the policy includes it again', async () => {
    const target = pods()[1]!;
    api!.create('networkpolicies', {
      metadata: { name: 'lock', namespace: target.namespace },
      spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: [target.name] }] }, policyTypes: ['Ingress'] },
    });
    await until('policy-selected pod disabled', async () => (await enabled(target)) === 'disabled');
    for (const p of pods().filter((x) => x !== target)) expect(await enabled(p)).toBe('enabled');
    api!.delete('networkpolicies', target.namespace, 'lock');
    await until('pod enabled again', async () => (await enabled(target)) === 'enabled');
  });

  it('pod deleted → endpoint gone; IP reused by a new pod → endpoint back; duplicate and IPv6-only pods are skipped, logged once, counted', async () => {
    const a = agents[0]!;
    const p = pods()[2]!;
    api!.delete('pods', p.namespace, p.name);
    await until('endpoint removed', async () => (await enabled(p)) === 'absent');
    // the same sandbox pod comes back as a new object (the IP is reused)
    api!.create('pods', podObj(p, { name: `${p.name}-v2` }));
    await until('endpoint back', async () => (await enabled(p)) === 'enabled');
    // churn: the old object still terminating with the same IP, the new one live → the live one wins
    api!.create('pods', { ...podObj(p), metadata: { ...podObj(p).metadata, deletionTimestamp: new Date().toISOString() } });
    // an IPv6-only pod and a pod with no status at all
    api!.create('pods', {
      metadata: { name: 'v6', namespace: 'team-a', uid: '00000000-0000-0000-0000-000000000006' },
      spec: { nodeName: node, containers: [] },
      status: { phase: 'Running', podIP: 'fd00::6', podIPs: [{ ip: 'fd00::6' }] },
    });
    api!.create('pods', { metadata: { name: 'bare', namespace: 'team-a' }, spec: { nodeName: node } });
    // a hostNetwork pod has the node's address: never an endpoint
    api!.create('pods', {
      metadata: { name: 'hostnet', namespace: 'team-a', uid: '00000000-0000-0000-0000-0000000000a1' },
      spec: { nodeName: node, hostNetwork: true, containers: [] },
      status: { phase: 'Running', podIP: '192.0.2.10', podIPs: [{ ip: '192.0.2.10' }] },
    });
    const v6Lines = () =>
      a.lines.filter((l) => l.msg === 'skipped' && l.object === 'pod team-a/v6' && String(l.reason).startsWith('no IPv4 address'));
    await until('v6 skipped', () => v6Lines().length > 0);
    expect(await enabled(p)).toBe('enabled');
    await until('hostNetwork pod seen and skipped', () => a.lines.find((l) => l.msg === 'skipped' && l.object === 'pod team-a/hostnet'));
    expect((await endpoints()).has('192.0.2.10')).toBe(false);
    // two live pods claiming one IP: neither is used (no guess)
    api!.create('pods', podObj(p, { name: `${p.name}-clone`, uid: '00000000-0000-0000-0000-0000000000c1' }));
    await until('duplicate IP excluded', async () => (await enabled(p)) === 'absent');
    api!.delete('pods', p.namespace, `${p.name}-clone`);
    await until('endpoint back after the clone left', async () => (await enabled(p)) === 'enabled');
    // each skip was logged once, though the node-local part ran many times since (--resync 1): two more of them
    await nodePasses(env!, a, 2);
    expect(v6Lines()).toHaveLength(1);
    expect(await metric(a, /^podwarp_objects_skipped_total\{kind="pod",reason="no IPv4 address"/)).toBe(1);
    expect(await metric(a, /^podwarp_objects_skipped_total\{kind="pod",reason="duplicate IP"/)).toBe(2);
    expect(a.lines.filter((l) => l.msg === 'skipped' && String(l.reason).startsWith('duplicate IP')).length).toBe(2);
    api!.delete('pods', 'team-a', 'v6');
    api!.delete('pods', 'team-a', 'bare');
    api!.delete('pods', 'team-a', 'hostnet');
    api!.delete('pods', p.namespace, p.name); // the terminating one
    // a node-local pass that saw the deletions: its object count (set at the end of a pass) is back to the sandbox's
    // pods, and the pass after it started with them gone
    await until(
      'a node-local pass without the deleted pods',
      async () => (await metric(a, /^podwarp_objects\{kind="pods"\}/)) === pods().length,
    );
    await nodePasses(env!, a, 1);
    expect(await enabled(p)).toBe('enabled');
    expect(a.child.exitCode).toBeNull();
  });

  it('EndpointSlice churn: 30 quick updates end in exactly the last state, and connects keep working', async () => {
    const ips = pods()
      .slice(1)
      .map((p) => p.ip);
    const traffic = conn(pods()[0]!, WEB, 80, { seconds: 2 * SLOWDOWN });
    for (let i = 0; i < 30; i++) {
      const pick = ips.filter((_, j) => (i + j) % 3 !== 0);
      api!.update('endpointslices', sliceObj('web-1', pick, i % 4 === 0 ? [pick[0]!] : []));
      await new Promise((r) => setTimeout(r, 20));
    }
    api!.update('endpointslices', sliceObj('web-1', ips, [ips[1]!]));
    await until('final backends', async () => JSON.stringify(await webBackends()) === JSON.stringify([ips[0]!, ips[2]!].sort()));
    // a second slice of the same service adds its endpoints; deleting it removes them
    api!.create('endpointslices', {
      ...sliceObj('web-2', [ips[1]!]),
      metadata: { name: 'web-2', namespace: 'team-b', labels: { 'kubernetes.io/service-name': 'web' } },
    });
    await until('second slice merged', async () => (await webBackends()).length === 3);
    api!.delete('endpointslices', 'team-b', 'web-2');
    await until('second slice gone', async () => (await webBackends()).length === 2);
    const c = await traffic;
    expect(c.error).toBeUndefined();
    expect(c.connections).toBeGreaterThan(50);
    expect(c.errors).toBe(0);
    expect(c.peer_mismatch).toBe(0);
  });

  it('watches dropped mid-stream, history compacted (410 Gone → relist) and an API server restart: the agent converges each time', async () => {
    const a = agents[0]!;
    const ips = pods()
      .slice(1)
      .map((p) => p.ip);
    const lists0 = await metric(a, /^podwarp_lists_total/);
    // 1. dropped connections: the informers re-watch from their resourceVersion (no relist)
    expect(api!.dropWatches()).toBeGreaterThanOrEqual(5);
    api!.update('endpointslices', sliceObj('web-1', [ips[0]!]));
    await until('change after a dropped watch', async () => JSON.stringify(await webBackends()) === JSON.stringify([ips[0]!]));
    // 2. 410 Gone: a deletion made while nobody watches is only seen by relisting
    api!.compact();
    api!.dropWatches();
    api!.update('endpointslices', sliceObj('web-1', ips));
    await until('relisted after 410', async () => (await metric(a, /^podwarp_lists_total/)) > lists0);
    await until('converged after 410', async () => (await webBackends()).length === 3);
    // 3. restart: connections refused for a second, history lost; a namespace changes meanwhile
    const restarting = api!.restart(1000);
    api!.update('namespaces', ns('team-b', false));
    await restarting;
    await until(
      'converged after API restart',
      async () =>
        (
          await Promise.all(
            pods()
              .filter((p) => p.namespace === 'team-b')
              .map(enabled),
          )
        ).every((s) => s === 'disabled'),
      30_000,
    );
    expect(await metric(a, /^podwarp_errors_total\{reason="watch_/)).toBeGreaterThan(0);
    expect(a.child.exitCode).toBeNull();
    api!.update('namespaces', ns('team-b', true));
    await until('team-b on again', async () =>
      (
        await Promise.all(
          pods()
            .filter((p) => p.namespace === 'team-b')
            .map(enabled),
        )
      ).every((s) => s === 'enabled'),
    );
  });

  it('exposes objects seen, frontends in maps and watch events on /metrics', async () => {
    const a = agents[0]!;
    expect(await metric(a, /^podwarp_objects\{kind="pods"\}/)).toBe(pods().length);
    expect(await metric(a, /^podwarp_objects\{kind="services"\}/)).toBe(1);
    expect(await metric(a, /^podwarp_service_frontends /)).toBe(1);
    expect(await metric(a, /^podwarp_watch_events_total\{kind="endpointslices"/)).toBeGreaterThan(30);
    // one observation per batch of events; passes slower than the 20 ms between the churn
    // test's updates (an emulated machine) coalesce them into fewer batches
    expect(await metric(a, /^podwarp_change_to_maps_seconds_count/)).toBeGreaterThan(SLOWDOWN > 1 ? 0 : 10);
  });

  it('externalIPs and a status-only LoadBalancer update reach pw_svc (externalTrafficPolicy Local), with their kind in dump services and status', async () => {
    const EXT = vip(5);
    const LB = vip(6);
    const PROXY = vip(7);
    const original = api!.get('services', 'team-b', 'web')!;
    const spec = original.spec as Record<string, unknown>;
    const counts = async () => {
      const have = await new BpfServiceMaps(env!.dp).read();
      return [EXT, LB, PROXY].map((ip) => have.masters.get(`${ip}:80/6`)?.count);
    };
    const n = (await webBackends()).length;
    expect(n).toBeGreaterThan(0);
    api!.update('services', { ...original, spec: { ...spec, type: 'LoadBalancer', externalIPs: [EXT], externalTrafficPolicy: 'Local' } });
    await until('external IP frontend', async () => JSON.stringify(await counts()) === JSON.stringify([n, undefined, undefined]));
    // the load balancer controller writes only the status
    const withSpec = api!.get('services', 'team-b', 'web')!;
    api!.update('services', {
      ...withSpec,
      status: { loadBalancer: { ingress: [{ ip: LB }, { ip: PROXY, ipMode: 'Proxy' }, { hostname: 'lb.example' }] } },
    });
    await until('ingress frontends', async () => JSON.stringify(await counts()) === JSON.stringify([n, n, 0]));
    // a pod dialling the LoadBalancer IP is translated at connect() and sees the address it dialled
    const before = await counters(env!.dp);
    const c = await conn(pods()[0]!, LB, 80, { n: 20 });
    expect(c.errors, c.error).toBe(0);
    expect(c.peer_mismatch).toBe(0);
    expect(delta(before, await counters(env!.dp), 'pw_lb').translated).toBeGreaterThanOrEqual(20);
    const cliEnv = { ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_RUN_DIR: runDir } as Record<string, string>;
    await until('report with the kinds', async () => {
      const st = JSON.parse((await run(CLI, [CLI, 'status', '-o', 'json'], { env: cliEnv })).stdout) as {
        agent?: { services: { kinds?: Record<string, number>; leftCounts?: Record<string, number> } };
      };
      return (
        JSON.stringify(st.agent?.services.kinds) === JSON.stringify({ cluster: 1, external_ip: 1, lb_ingress: 2 }) &&
        st.agent!.services.leftCounts!.ip_mode_proxy === 1
      );
    });
    const rows = JSON.parse((await run(CLI, [CLI, 'dump', 'services', '-o', 'json'], { env: cliEnv })).stdout) as {
      frontend: string;
      kind?: string;
      service?: string;
      count: number;
      left?: { reason: string };
    }[];
    const row = (ip: string) => rows.find((r) => r.frontend === `${ip}:80`);
    expect(row(WEB)).toMatchObject({ kind: 'cluster', service: 'team-b/web:http', count: n });
    expect(row(EXT)).toMatchObject({ kind: 'external_ip', service: 'team-b/web:http', count: n });
    expect(row(LB)).toMatchObject({ kind: 'lb_ingress', service: 'team-b/web:http', count: n });
    expect(row(PROXY)).toMatchObject({ kind: 'lb_ingress', count: 0, left: { reason: 'ip_mode_proxy' } });
    const table = (await run(CLI, [CLI, 'dump', 'services'], { env: cliEnv })).stdout;
    expect(table).toMatch(new RegExp(`${PROXY.replace(/\./g, '\\.')}:80 \\(TCP\\)\\s+lb-ingress team-b/web:http .*ip_mode_proxy`));
    // back as it was: the external frontends go
    api!.update('services', { ...original, metadata: { ...original.metadata, resourceVersion: undefined } });
    await until('external frontends removed', async () => (await counts()).every((x) => x === undefined));
  });

  it("this node's zone label set, changed and removed: the running agent re-plans the hinted Service's backends (topology hints, as kube-proxy)", async () => {
    const a = agents[0]!;
    const [near, far] = [pods()[1]!.ip, pods()[3]!.ip];
    const ZONE = 'topology.kubernetes.io/zone';
    const nodeObj = (zone?: string): ApiObject => ({
      metadata: { name: node, labels: { 'kubernetes.io/hostname': node, ...(zone ? { [ZONE]: zone } : {}) } },
    });
    // every endpoint hinted (trafficDistribution PreferClose): near for zone-a, far for zone-b
    api!.update('endpointslices', {
      ...sliceObj('web-1', [near, far]),
      endpoints: [near, far].map((ip, i) => ({
        addresses: [ip],
        conditions: { ready: true },
        hints: { forZones: [{ name: i === 0 ? 'zone-a' : 'zone-b' }] },
      })),
    });
    const backendsAre = (what: string, ips: string[]) =>
      until(what, async () => JSON.stringify(await webBackends()) === JSON.stringify([...ips].sort()));
    // the agent started before this Node existed: no zone, every ready endpoint
    await backendsAre('no zone: every endpoint', [near, far]);
    const rezoned = () => a.lines.filter((l) => l.msg === "planning every Service for this node's new zone").length;
    const before = rezoned();
    api!.create('nodes', nodeObj('zone-a'));
    await backendsAre('zone-a: the endpoint hinted for it', [near]);
    api!.update('nodes', nodeObj('zone-b'));
    await backendsAre('zone-b: the endpoint hinted for it', [far]);
    api!.update('nodes', nodeObj());
    await backendsAre('the label removed: every endpoint again', [near, far]);
    // each change was seen by the same agent process, through its Node watch
    expect(rezoned() - before).toBe(3);
    expect(a.child.exitCode).toBeNull();
    api!.update('endpointslices', sliceObj('web-1', [near, far]));
  });

  it('a restarted agent converges without rewriting one unchanged entry', async () => {
    const a1 = agents[0]!;
    // the first agent idle first: no pass of its changed anything for two node-local resyncs
    // (--resync 1; a pass logs only when it changes something). On a loaded machine a change
    // from the tests above may still be on its way, and the second agent would rightly finish it.
    const changes = () => a1.lines.filter((l) => l.msg === 'reconciled' || l.msg === 'reconciled pods').length;
    await until(
      'the first agent idle (two node-local passes that changed nothing)',
      async () => {
        const seen = changes();
        await nodePasses(env!, a1, 2);
        return changes() === seen;
      },
      60_000,
    );
    const before = await readActual(env!.dp);
    const svcBefore = await new BpfServiceMaps(env!.dp).read();
    const ids = { ep: await env!.dp.maps.mapId('pw_endpoints'), svc: await env!.dp.maps.mapId('pw_svc') };
    a1.child.kill('SIGTERM');
    await a1.child.catch(() => {});
    const a2 = startAgent();
    await ready(a2);
    await nodePasses(env!, a2, 2); // past its first pass, two node-local resyncs (--resync 1)
    expect(a2.lines.filter((l) => l.msg === 'reconciled' || l.msg === 'reconciled pods')).toEqual([]);
    expect(await env!.dp.maps.mapId('pw_endpoints')).toBe(ids.ep);
    expect(await env!.dp.maps.mapId('pw_svc')).toBe(ids.svc);
    expect((await readActual(env!.dp)).endpoints).toEqual(before.endpoints);
    expect(await new BpfServiceMaps(env!.dp).read()).toEqual(svcBefore);
    // and it still follows changes
    api!.update('endpointslices', sliceObj('web-1', [pods()[3]!.ip]));
    await until('restarted agent follows', async () => JSON.stringify(await webBackends()) === JSON.stringify([pods()[3]!.ip]));
  });

  it('refuses to start without a reachable API, with a clear message, leaving the maps alone', async () => {
    const bad = path.join(env!.dir, 'bad.kubeconfig');
    fs.writeFileSync(bad, fs.readFileSync(kubeconfig, 'utf8').replace(/127\.0\.0\.1:\d+/, '127.0.0.1:1'));
    const r = await run(
      CLI,
      [CLI, 'agent', '--source', 'kubernetes', '--kubeconfig', bad, '--node', node, '--metrics-addr', '', '--sync-timeout', '3'],
      {
        reject: false,
        timeoutMs: 90_000 * SLOWDOWN,
        env: { ...process.env, PODWARP_PIN_NAME: env!.pinName, PODWARP_RUN_DIR: runDir } as Record<string, string>,
      },
    );
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('did not answer the initial list');
    expect(r.stderr).toContain('ECONNREFUSED'); // the cause, per kind
    const missing = await run(CLI, [CLI, 'agent', '--source', 'kubernetes', '--kubeconfig', path.join(env!.dir, 'nope'), '--node', node], {
      reject: false,
    });
    expect(missing.stderr).toContain('does not exist');
  });
});
