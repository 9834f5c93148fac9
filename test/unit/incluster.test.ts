// In-cluster configuration: the service account's token and CA, HTTPS to
// KUBERNETES_SERVICE_HOST:PORT, as in a pod. The API server double serves
// TLS with a certificate made here; the client must verify it with the
// account's ca.crt (no skip-verify) and present the token.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { ROOT } from '../../loader/build.js';
import { KubeSource, loadKubeConfig } from '../../src/sources/kubernetes.js';
import { FakeApiServer } from '../k8s/apiserver.js';

const CLI = path.join(ROOT, 'bin', 'podwarp');

// the last two tests spawn the CLI (a node process loading the Kubernetes client): seconds on a busy machine
describe('in-cluster configuration (service account, HTTPS)', { timeout: 30_000 }, () => {
  let dir = '';
  let api: FakeApiServer | undefined;
  let env: Record<string, string> = {};
  const saved = { ...process.env };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-incluster-'));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    await run('make a certificate', [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    api = await FakeApiServer.start({ tls: { key: fs.readFileSync(key, 'utf8'), cert: fs.readFileSync(cert, 'utf8') } });
    const sa = path.join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
    fs.mkdirSync(sa, { recursive: true });
    fs.copyFileSync(cert, path.join(sa, 'ca.crt'));
    fs.writeFileSync(path.join(sa, 'token'), 'in-cluster-token');
    fs.writeFileSync(path.join(sa, 'namespace'), 'podwarp-system');
    env = {
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: String(new URL(api.url).port),
      PODWARP_INCLUSTER_ROOT: dir,
      HOME: dir,
      KUBECONFIG: '',
    };
    api.create('namespaces', { metadata: { name: 'team-a' } });
  });

  afterAll(async () => {
    process.env = saved;
    await api?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('picks the service account when KUBERNETES_SERVICE_HOST is set and no --kubeconfig is given', () => {
    Object.assign(process.env, env);
    delete process.env.KUBECONFIG;
    const kc = loadKubeConfig();
    expect(kc.getCurrentCluster()?.server).toBe(api!.url);
    expect(kc.getCurrentCluster()?.caFile).toBe(path.join(dir, 'var/run/secrets/kubernetes.io/serviceaccount/ca.crt'));
    process.env = { ...saved };
  });

  it('the informers list and watch over verified TLS', async () => {
    Object.assign(process.env, env);
    delete process.env.KUBECONFIG;
    const changes: string[] = [];
    const src = new KubeSource(
      { node: 'n1' },
      { onChange: (c) => changes.push(c.pods ? 'pods' : [...c.services].join(',')), onSkip: () => {} },
    );
    process.env = { ...saved };
    try {
      await src.start(10_000);
      expect(src.snapshot().namespaces.map((n) => n.name)).toContain('team-a');
      api!.create('services', { metadata: { name: 'web', namespace: 'team-a' }, spec: { clusterIP: '10.96.0.9', ports: [{ port: 80 }] } });
      const end = Date.now() + 5000;
      while (!changes.includes('team-a/web') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(changes).toContain('team-a/web');
      expect(src.service('team-a/web')?.clusterIP).toBe('10.96.0.9');
    } finally {
      await src.stop();
    }
  });

  it('`podwarp enable` labels the namespace with the service account', async () => {
    const r = await run(CLI, [CLI, 'enable', 'team-a'], { env: { ...process.env, ...env, PODWARP_LOG_LEVEL: 'warn' } });
    expect(r.stdout).toContain('namespace team-a: acceleration on');
    expect(api!.get('namespaces', undefined, 'team-a')?.metadata.labels?.['podwarp.io/accelerate']).toBe('true');
  });

  it("refuses a server whose certificate the account's CA did not sign", async () => {
    const other = path.join(dir, 'other');
    fs.mkdirSync(path.join(other, 'var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
    await run('make another certificate', [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      path.join(other, 'k.pem'),
      '-out',
      path.join(other, 'var/run/secrets/kubernetes.io/serviceaccount/ca.crt'),
      '-days',
      '1',
      '-subj',
      '/CN=other',
    ]);
    fs.writeFileSync(path.join(other, 'var/run/secrets/kubernetes.io/serviceaccount/token'), 't');
    const r = await run(CLI, [CLI, 'disable', 'team-a'], {
      reject: false,
      env: { ...process.env, ...env, PODWARP_INCLUSTER_ROOT: other, PODWARP_LOG_LEVEL: 'warn' },
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/certificate/i);
    expect(api!.get('namespaces', undefined, 'team-a')?.metadata.labels?.['podwarp.io/accelerate']).toBe('true');
  });
});
