// kube-proxy's /configz → masqueradeAll, and the agent's view of it: the
// operator's flag first, else /configz, else "unknown" (taken as off, said so).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubeProxyView, parseConfigz, readKubeProxyConfig } from '../../src/sources/kube-proxy-config.js';

const configz = (cfg: object) => JSON.stringify({ 'kubeproxy.config.k8s.io': cfg });

describe('parseConfigz()', () => {
  it('reads what kube-proxy 1.36 serves (v1alpha1: iptables.masqueradeAll, mode)', () => {
    // the shape of a real kube-proxy 1.36's /configz (the real-cluster e2e reads it from the agent)
    const real = { mode: 'nftables', iptables: { masqueradeBit: 14, masqueradeAll: false, localhostNodePorts: true }, nftables: {} };
    expect(parseConfigz(configz(real))).toEqual({ masqueradeAll: false, mode: 'nftables' });
    expect(parseConfigz(configz({ ...real, iptables: { masqueradeAll: true } }))).toEqual({ masqueradeAll: true, mode: 'nftables' });
  });
  it('reads other layouts and spellings (linux.masqueradeAll of v1alpha2, Go field names of an internal configuration)', () => {
    expect(parseConfigz(configz({ Linux: { MasqueradeAll: true, OOMScoreAdj: -999 }, Mode: 'nftables' }))).toEqual({
      masqueradeAll: true,
      mode: 'nftables',
    });
    expect(parseConfigz(configz({ Linux: { MasqueradeAll: false }, Mode: 'iptables' }))).toEqual({
      masqueradeAll: false,
      mode: 'iptables',
    });
  });
  it('reads IPTables.MasqueradeAll and linux.masqueradeAll too', () => {
    expect(parseConfigz(configz({ IPTables: { MasqueradeAll: true }, Mode: '' }))).toEqual({ masqueradeAll: true });
    expect(parseConfigz(configz({ iptables: { masqueradeAll: true }, mode: 'iptables' }))).toEqual({
      masqueradeAll: true,
      mode: 'iptables',
    });
    expect(parseConfigz(configz({ linux: { masqueradeAll: false } }))).toEqual({ masqueradeAll: false });
  });
  it('refuses what is not kube-proxy configuration, so the caller says "unknown" instead of guessing', () => {
    expect(() => parseConfigz('<html>')).toThrow('not JSON');
    expect(() => parseConfigz(JSON.stringify({ kubeletconfig: {} }))).toThrow('no "kubeproxy.config.k8s.io" section');
    expect(() => parseConfigz(configz({ Mode: 'iptables' }))).toThrow('no boolean masqueradeAll');
    expect(() => parseConfigz(configz({ Linux: { MasqueradeAll: 'yes' } }))).toThrow('no boolean masqueradeAll');
  });
});

describe('kubeProxyView(): the flag, else /configz, else unknown', () => {
  let server: http.Server;
  let base = '';
  let body = configz({ Linux: { MasqueradeAll: true }, Mode: 'iptables' });
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/configz') res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      else res.writeHead(404).end('404 page not found');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('auto: what kube-proxy serves, with its mode', async () => {
    expect(await kubeProxyView('auto', `${base}/configz`)).toEqual({ masqueradeAll: true, from: 'configz', mode: 'iptables' });
    body = configz({ Linux: { MasqueradeAll: false }, Mode: 'nftables' });
    expect(await kubeProxyView('auto', `${base}/configz`)).toEqual({ masqueradeAll: false, from: 'configz', mode: 'nftables' });
  });
  it("the operator's flag wins and nothing is read", async () => {
    expect(await kubeProxyView(true, 'http://127.0.0.1:9/configz')).toEqual({ masqueradeAll: true, from: 'flag' });
    expect(await kubeProxyView(false, `${base}/configz`)).toEqual({ masqueradeAll: false, from: 'flag' });
  });
  it('unreadable (nothing listening, HTTP 404, not kube-proxy): taken as off, with the reason', async () => {
    // a port nothing listens on: bound, then closed
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const closed = await kubeProxyView('auto', `http://127.0.0.1:${port}/configz`);
    expect(closed).toMatchObject({ masqueradeAll: false, from: 'unknown' });
    expect(closed.error).toBe(`http://127.0.0.1:${port}/configz: ECONNREFUSED`);
    expect(await kubeProxyView('auto', `${base}/metrics`)).toMatchObject({ from: 'unknown', error: expect.stringMatching(/HTTP 404$/) });
    body = 'not json';
    await expect(readKubeProxyConfig(`${base}/configz`)).rejects.toThrow(/configz: not JSON$/);
  });
});
