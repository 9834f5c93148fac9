// KubeSource start-up failures say why, per kind.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { KubeSource } from '../../src/sources/kubernetes.js';

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
