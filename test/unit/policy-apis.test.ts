// Issue 10, pod exclusions through the API server double: the real informers of
// KubeSource (API discovery, policy CRDs, pods, namespaces) → snapshot → desired(),
// with node facts made up for every pod (no root needed).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EP_FLAGS } from '../../abi/schema.js';
import type { NodeFacts } from '../../src/facts/gather.js';
import { ACCELERATE_LABEL } from '../../src/model.js';
import { desired } from '../../src/pods/desired.js';
import { KubeSource } from '../../src/sources/kubernetes.js';
import { FakeApiServer, type ApiObject } from '../k8s/apiserver.js';

const NODE = 'n1';

describe('policy APIs, bandwidth, ambient and native sidecars through the API server double', { timeout: 60_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-policyapis-'));
  let api: FakeApiServer;
  let kubeconfig = '';
  const sources: KubeSource[] = [];
  let changes = 0;
  const apiErrors: string[] = [];

  const ns = (name: string, labels: Record<string, string> = {}): ApiObject => ({
    metadata: { name, labels: { [ACCELERATE_LABEL]: 'true', ...labels } },
  });
  let n = 0;
  const pod = (namespace: string, name: string, over: { annotations?: Record<string, string>; spec?: Record<string, unknown> } = {}) => ({
    metadata: { name, namespace, uid: `uid-${name}`, labels: { app: name }, annotations: over.annotations ?? {} },
    spec: { nodeName: NODE, containers: [{ name: 'app' }], ...over.spec },
    status: { phase: 'Running', podIP: `10.1.0.${++n}` },
  });

  beforeAll(async () => {
    api = await FakeApiServer.start({ bookmarkMs: 200 });
    kubeconfig = api.kubeconfig(dir);
    api.load('namespaces', [ns('x', { team: 'x' }), ns('y', { team: 'y' }), ns('mesh', { 'istio.io/dataplane-mode': 'ambient' })]);
    api.load('pods', [
      pod('x', 'x1'),
      pod('y', 'y1'),
      pod('y', 'shaped', { annotations: { 'kubernetes.io/egress-bandwidth': '1M' } }),
      pod('mesh', 'ambient1'),
      pod('y', 'native', { spec: { initContainers: [{ name: 'istio-proxy', restartPolicy: 'Always' }] } }),
    ]);
  });
  afterEach(async () => {
    for (const s of sources.splice(0)) await s.stop();
    for (const r of ['adminnetworkpolicies', 'globalnetworkpolicies.crd.projectcalico.org'] as const) {
      for (const o of api.list(r)) api.delete(r, o.metadata.namespace, o.metadata.name);
      api.serve(r, false);
      api.failResource(r, undefined);
    }
    api.failDiscovery(undefined);
  });
  afterAll(async () => {
    await api.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function source(): Promise<KubeSource> {
    const s = new KubeSource(
      { kubeconfig, node: NODE, backoffMs: 100, maxBackoffMs: 200, discoveryMs: 200 },
      { onChange: () => void changes++, onSkip: () => {}, onPolicyError: (a, e) => apiErrors.push(`${a}: ${e}`) },
    );
    sources.push(s);
    await s.start(20_000);
    return s;
  }
  /** pod → reason (or 'accelerated'), as desired() says from the source's snapshot */
  function outcome(s: KubeSource): Record<string, string> {
    const snap = s.snapshot();
    const facts: NodeFacts = {
      pods: new Map(
        snap.pods.map((p, i) => [
          `${p.namespace}/${p.name}`,
          { ifindex: 10 + i, hostInterface: `v${i}`, mac: '02:00:00:00:00:01', gwMac: '02:00:00:00:00:02', cgroup: `/pod${i}` },
        ]),
      ),
      missing: new Map(),
    };
    const d = desired(snap, facts);
    return Object.fromEntries(
      [...d.endpoints.values()]
        .map((e) => [e.pod, e.flags & EP_FLAGS.ENABLED ? 'accelerated' : d.disabled.get(e.pod)!])
        .sort(([a], [b]) => a!.localeCompare(b!)),
    );
  }
  const until = async <T>(what: string, f: () => T | undefined | false, ms = 15_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = f();
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('no policy API served: bandwidth-shaped and ambient pods are excluded, the rest accelerated; a native sidecar is a sidecar', async () => {
    const s = await source();
    expect(s.policyGaps()).toEqual([]);
    expect(outcome(s)).toEqual({
      'mesh/ambient1': 'ambient-mesh',
      'x/x1': 'accelerated',
      'y/native': 'accelerated',
      'y/shaped': 'bandwidth-shaped',
      'y/y1': 'accelerated',
    });
    expect(s.snapshot().pods.find((p) => p.name === 'native')?.sidecar).toBe(true);
    expect(s.snapshot().pods.find((p) => p.name === 'y1')?.sidecar).toBe(false);
  });

  it('a served Calico GlobalNetworkPolicy excludes every pod of the node; served at run time, it is found by rediscovery', async () => {
    const s = await source();
    expect(outcome(s)['x/x1']).toBe('accelerated');
    api.serve('globalnetworkpolicies.crd.projectcalico.org');
    api.create('globalnetworkpolicies.crd.projectcalico.org', { metadata: { name: 'deny-all' }, spec: { selector: 'all()' } });
    await until('the GlobalNetworkPolicy in the snapshot', () => s.snapshot().networkPolicies.some((p) => p.name === 'deny-all'));
    const o = outcome(s);
    expect(new Set(Object.values(o))).toEqual(new Set(['policy-selected']));
    expect(Object.keys(o)).toHaveLength(5);
    // the policy deleted: acceleration comes back (bandwidth and ambient stay excluded)
    api.delete('globalnetworkpolicies.crd.projectcalico.org', undefined, 'deny-all');
    await until('the policy gone', () => !s.snapshot().networkPolicies.length);
    expect(outcome(s)['x/x1']).toBe('accelerated');
  });

  it('an AdminNetworkPolicy selecting namespace x excludes x’s pods, not y’s', async () => {
    api.serve('adminnetworkpolicies');
    api.create('adminnetworkpolicies', {
      metadata: { name: 'x-only' },
      spec: { priority: 10, subject: { namespaces: { matchLabels: { team: 'x' } } }, ingress: [] },
    });
    const changesBefore = changes;
    const s = await source();
    expect(s.policyApis().map((a) => a.api)).toEqual(['adminnetworkpolicies.policy.networking.k8s.io']);
    const o = outcome(s);
    expect(o['x/x1']).toBe('policy-selected');
    expect(o['y/y1']).toBe('accelerated');
    // the subject moves to y: the informer's watch event changes the outcome
    api.update('adminnetworkpolicies', {
      metadata: { name: 'x-only' },
      spec: { priority: 10, subject: { namespaces: { matchLabels: { team: 'y' } } }, ingress: [] },
    });
    await until('the update seen', () => outcome(s)['y/y1'] === 'policy-selected');
    expect(outcome(s)['x/x1']).toBe('accelerated');
    expect(changes).toBeGreaterThan(changesBefore);
  });

  it('a served policy API failing (list and watch) fails closed: no pod accelerated until it answers again', async () => {
    api.serve('adminnetworkpolicies');
    const s = await source();
    expect(outcome(s)['y/y1']).toBe('accelerated');
    api.failResource('adminnetworkpolicies', 500);
    await until('the gap', () => s.policyGaps().includes('adminnetworkpolicies.policy.networking.k8s.io'));
    expect(new Set(Object.values(outcome(s)))).toEqual(new Set(['policy-api-unavailable']));
    // the open watch is cut first; the relist then gets the 500
    await until('the 500 reported', () =>
      apiErrors.some((e) => /^adminnetworkpolicies\.policy\.networking\.k8s\.io: (HTTP 500|Internal Server Error)/.test(e)),
    );
    expect(new Set(Object.values(outcome(s)))).toEqual(new Set(['policy-api-unavailable']));
    api.failResource('adminnetworkpolicies', undefined);
    await until('the API relisted', () => !s.policyGaps().length);
    expect(outcome(s)['y/y1']).toBe('accelerated');
  });

  it('forbidden at start (RBAC missing for a served API): the agent starts, every pod on the normal path', async () => {
    api.serve('globalnetworkpolicies.crd.projectcalico.org');
    api.failResource('globalnetworkpolicies.crd.projectcalico.org', 403);
    const s = await source();
    expect(s.policyGaps()).toEqual(['globalnetworkpolicies.crd.projectcalico.org']);
    expect(new Set(Object.values(outcome(s)))).toEqual(new Set(['policy-api-unavailable']));
  });

  it('discovery failing fails closed, and recovers', async () => {
    api.failDiscovery(503);
    const s = await source();
    expect(s.policyGaps()).toEqual(['discovery']);
    expect(new Set(Object.values(outcome(s)))).toEqual(new Set(['policy-api-unavailable']));
    api.failDiscovery(undefined);
    await until('discovery answers', () => !s.policyGaps().length);
    expect(outcome(s)['x/x1']).toBe('accelerated');
  });
});
