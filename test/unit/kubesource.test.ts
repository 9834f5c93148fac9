// KubeSource start-up failures say why, per kind; it sees what kube-proxy's informers see.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { desiredServices } from '../../src/services/desired.js';
import { KubeSource, type Change } from '../../src/sources/kubernetes.js';
import { FakeApiServer } from '../k8s/apiserver.js';

describe('KubeSource.start()', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-kubesource-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives up after the sync timeout naming every kind that did not list, with its HTTP status (RBAC missing)', async () => {
    // an API server that forbids everything but namespaces
    const server = http.createServer((req, res) => {
      const ok = req.url?.startsWith('/api/v1/namespaces');
      res.writeHead(ok ? 200 : 403, { 'Content-Type': 'application/json' });
      res.end(
        ok && !req.url?.includes('watch=')
          ? JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] })
          : ok
            ? ''
            : JSON.stringify({
                kind: 'Status',
                apiVersion: 'v1',
                status: 'Failure',
                reason: 'Forbidden',
                code: 403,
                message: 'pods is forbidden',
              }),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    const kc = path.join(dir, 'kubeconfig');
    fs.writeFileSync(
      kc,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: 't' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );
    const errors: string[] = [];
    const src = new KubeSource(
      { kubeconfig: kc, node: 'n1', backoffMs: 100 },
      { onChange: () => {}, onSkip: () => {}, onError: (k, e) => errors.push(`${k}: ${e}`) },
    );
    try {
      const err = await src.start(1500).then(
        () => undefined,
        (e: Error) => e.message,
      );
      expect(err).toMatch(/did not answer the initial list of: pods \(HTTP 403[^)]*\), services \(HTTP 403/);
      expect(err).not.toMatch(/namespaces/);
      expect(errors.some((e) => e.startsWith('pods: HTTP 403'))).toBe(true);
    } finally {
      await src.stop();
      server.close();
    }
  });
});

describe('KubeSource: Services and slices meant for another proxy', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-kubesource-proxy-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const OTHER = { 'service.kubernetes.io/service-proxy-name': 'other-proxy' };
  const svc = (name: string, ip: string, labels?: Record<string, string>) => ({
    metadata: { name, namespace: 'team-a', ...(labels ? { labels } : {}) },
    spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  });
  const slice = (svcName: string, ip: string, labels: Record<string, string> = {}) => ({
    metadata: { name: `${svcName}-x`, namespace: 'team-a', labels: { 'kubernetes.io/service-name': svcName, ...labels } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });

  it('are never seen, as by kube-proxy; labelled later they leave, unlabelled they come', async () => {
    const api = await FakeApiServer.start();
    api.load('namespaces', [{ metadata: { name: 'team-a' } }]);
    api.load('services', [svc('mine', '10.96.0.10'), svc('theirs', '10.96.0.11', OTHER)]);
    api.load('endpointslices', [slice('mine', '10.244.0.10'), slice('theirs', '10.244.0.11', OTHER)]);
    const changed: string[] = [];
    const src = new KubeSource(
      { kubeconfig: api.kubeconfig(dir), node: 'n1' },
      { onChange: (c) => changed.push(...c.services), onSkip: () => {} },
    );
    const waitFor = async (what: string, ok: () => boolean) => {
      const end = Date.now() + 5000;
      while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(ok(), what).toBe(true);
    };
    try {
      await src.start(10_000);
      expect(src.service('team-a/mine')?.clusterIP).toBe('10.96.0.10');
      expect(src.service('team-a/mine')?.endpoints.map((e) => e.ip)).toEqual(['10.244.0.10']);
      expect(src.service('team-a/theirs')).toBeUndefined();
      expect(src.snapshot().services.map((x) => `${x.namespace}/${x.name}`)).not.toContain('team-a/theirs');

      // another proxy takes "mine": the watch ends it for podwarp (a DELETED for the selector)
      api.update('services', svc('mine', '10.96.0.10', OTHER));
      await waitFor('team-a/mine gone once labelled for another proxy', () => src.service('team-a/mine') === undefined);
      // "theirs" is handed back (the label removed from the Service and its slice)
      api.update('services', svc('theirs', '10.96.0.11'));
      api.update('endpointslices', slice('theirs', '10.244.0.11'));
      await waitFor('team-a/theirs served with its endpoint once unlabelled', () => src.service('team-a/theirs')?.endpoints.length === 1);
      expect(changed).toEqual(expect.arrayContaining(['team-a/mine', 'team-a/theirs']));
    } finally {
      await src.stop();
      await api.stop();
    }
  });
});

describe("KubeSource: this node's zone label is watched (topology hints follow it, as kube-proxy's do)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-kubesource-zone-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ZONE = 'topology.kubernetes.io/zone';
  const nodeObj = (name: string, zone?: string) => ({
    metadata: { name, labels: { 'kubernetes.io/hostname': name, ...(zone ? { [ZONE]: zone } : {}) } },
    status: { images: [{ names: ['big'], sizeBytes: 1 }] },
  });
  const hinted = {
    metadata: { name: 'web-x', namespace: 'team-a', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: [
      { addresses: ['10.244.0.1'], conditions: { ready: true }, hints: { forZones: [{ name: 'zone-a' }] } },
      { addresses: ['10.244.0.2'], conditions: { ready: true }, hints: { forZones: [{ name: 'zone-b' }] } },
    ],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
  const web = {
    metadata: { name: 'web', namespace: 'team-a' },
    spec: { clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };

  it('a zone label change is a zone Change, and the Services planned with the new zone use its endpoints, without a restart', async () => {
    const api = await FakeApiServer.start();
    api.load('namespaces', [{ metadata: { name: 'team-a' } }]);
    api.load('nodes', [nodeObj('n1', 'zone-a'), nodeObj('n2', 'zone-b')]);
    api.load('services', [web]);
    api.load('endpointslices', [hinted]);
    const changes: Change[] = [];
    const src = new KubeSource(
      { kubeconfig: api.kubeconfig(dir), node: 'n1', backoffMs: 50 },
      { onChange: (c) => changes.push(c), onSkip: () => {} },
    );
    const waitFor = async (what: string, ok: () => boolean) => {
      const end = Date.now() + 5000;
      while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(ok(), what).toBe(true);
    };
    // what the agent's service lane plans from the source (src/agent.ts: sync.node follows src.zone)
    const backends = () =>
      desiredServices({ services: [src.service('team-a/web')!], node: 'n1', zone: src.snapshot().zone })
        .services.get('10.96.0.10:80/6')!
        .backends.map((b) => b.ip);
    try {
      await src.start(10_000);
      expect(src.zone).toBe('zone-a');
      expect(src.zoneError).toBeUndefined();
      expect(backends()).toEqual(['10.244.0.1']);
      // only this node is listed and watched
      expect(src.counts().nodes).toBe(1);
      expect(api.watchCount('nodes')).toBe(1);
      changes.length = 0;

      api.update('nodes', nodeObj('n2', 'zone-a')); // another node: no event reaches this source
      api.update('nodes', nodeObj('n1', 'zone-b'));
      await waitFor('the new zone', () => src.zone === 'zone-b');
      expect(changes.filter((c) => c.zone)).toHaveLength(1);
      expect(backends()).toEqual(['10.244.0.2']);

      // a change of another label is no zone change
      changes.length = 0;
      api.update('nodes', { ...nodeObj('n1', 'zone-b'), metadata: { ...nodeObj('n1', 'zone-b').metadata, annotations: { x: 'y' } } });
      await new Promise((r) => setTimeout(r, 200));
      expect(changes.filter((c) => c.zone)).toEqual([]);

      // the label removed: no zone, every ready endpoint (kube-proxy without a zone ignores zone hints)
      api.update('nodes', nodeObj('n1'));
      await waitFor('no zone', () => src.zone === undefined);
      expect(changes.filter((c) => c.zone)).toHaveLength(1);
      expect(backends()).toEqual(['10.244.0.1', '10.244.0.2']);

      // a dropped watch resumes, a compacted history relists: the label set meanwhile is seen either way
      api.dropWatches();
      api.compact();
      api.update('nodes', nodeObj('n1', 'zone-a'));
      await waitFor('the zone after the watch came back', () => src.zone === 'zone-a');
      expect(backends()).toEqual(['10.244.0.1']);
    } finally {
      await src.stop();
      await api.stop();
    }
  });

  it('a Node the source may not list (RBAC) or that does not exist: the source starts without a zone and says why', async () => {
    const api = await FakeApiServer.start();
    api.load('namespaces', [{ metadata: { name: 'team-a' } }]);
    api.failResource('nodes', 403);
    const src = new KubeSource({ kubeconfig: api.kubeconfig(dir), node: 'n1', backoffMs: 50 }, { onChange: () => {}, onSkip: () => {} });
    try {
      await src.start(10_000);
      expect(src.zone).toBeUndefined();
      expect(src.zoneError).toMatch(/HTTP 403/);
      // allowed again, and the Node created: its zone arrives through the retried list and watch
      api.failResource('nodes', undefined);
      api.create('nodes', nodeObj('n1', 'zone-c'));
      const end = Date.now() + 5000;
      while (src.zone !== 'zone-c' && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(src.zone).toBe('zone-c');
      expect(src.zoneError).toBeUndefined();
    } finally {
      await src.stop();
      await api.stop();
    }
    const none = await FakeApiServer.start();
    const src2 = new KubeSource({ kubeconfig: none.kubeconfig(dir), node: 'n1' }, { onChange: () => {}, onSkip: () => {} });
    try {
      await src2.start(10_000);
      expect(src2.zone).toBeUndefined();
      expect(src2.zoneError).toBe('Node n1 not found');
    } finally {
      await src2.stop();
      await none.stop();
    }
  });
});
