import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../host/errors.js';
import { loadStateFile, parseState, toSnapshot, writeStateFile, type StateFile } from '../../src/state/load.js';

const loadState = (text: string) => toSnapshot(parseState(text));

const good = `
apiVersion: podwarp.io/v1alpha1
kind: NodeState
node: n1
namespaces:
  - { name: team-a, accelerate: true }
  - { name: team-b }
pods:
  - { namespace: team-a, name: web-0, ip: 10.1.0.2, hostInterface: veth0, labels: { app: web } }
  - { namespace: team-b, name: db-0, ip: 10.1.0.3, hostInterface: veth1, annotations: { podwarp.io/accelerate: "false" } }
  - { namespace: team-b, name: host-0, hostNetwork: true }
networkPolicies:
  - { namespace: team-a, name: deny, podSelector: { matchLabels: { app: web } } }
services:
  - namespace: team-a
    name: web
    clusterIP: 10.96.0.10
    ports: [{ name: http, port: 80, targetPort: http }]
    endpoints: [{ ip: 10.1.0.2, ports: [{ name: http, port: 8080 }] }]
`;

function problems(text: string): { path: string; message: string }[] {
  try {
    parseState(text);
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return (e as InputError).problems;
  }
  throw new Error('expected the state to be rejected');
}

describe('state file', () => {
  it('accepts a complete YAML file and fills defaults', () => {
    const st = parseState(good);
    expect(st.pods).toHaveLength(3);
    expect(st.namespaces[1]!.accelerate).toBe(false);
    expect(st.services![0]!.ports[0]!.protocol).toBe('TCP');
    expect(st.services![0]!.endpoints![0]!.ready).toBe(true);
  });

  it('reads sessionAffinity as a Service spec has it: ClientIP with timeoutSeconds (default 10800), None', () => {
    const sticky = (extra: string) =>
      loadState(good.replace('    clusterIP: 10.96.0.10\n', `    clusterIP: 10.96.0.10\n${extra}`)).services[0]!.affinityTimeout;
    expect(sticky('    sessionAffinity: ClientIP\n    sessionAffinityConfig: { clientIP: { timeoutSeconds: 5 } }\n')).toBe(5);
    expect(sticky('    sessionAffinity: ClientIP\n')).toBe(10800);
    expect(sticky('    sessionAffinity: None\n')).toBeUndefined();
    expect(sticky('')).toBeUndefined();
    expect(problems(good.replace('    clusterIP: 10.96.0.10\n', '    clusterIP: 10.96.0.10\n    sessionAffinity: Cookie\n'))).toEqual([
      expect.objectContaining({ path: '/services/0/sessionAffinity' }),
    ]);
    expect(
      problems(
        good.replace(
          '    clusterIP: 10.96.0.10\n',
          '    clusterIP: 10.96.0.10\n    sessionAffinity: ClientIP\n    sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } }\n',
        ),
      ),
    ).toEqual([{ path: '/services/0/sessionAffinityConfig/clientIP/timeoutSeconds', message: 'must be <= 86400' }]);
  });

  it('reads externalIPs, externalTrafficPolicy, loadBalancerSourceRanges and status.loadBalancer.ingress as a Service has them', () => {
    const st = loadState(
      good.replace(
        '    clusterIP: 10.96.0.10\n',
        '    clusterIP: 10.96.0.10\n    externalIPs: [192.0.2.10]\n    externalTrafficPolicy: Local\n    loadBalancerSourceRanges: [" 10.0.0.0/8"]\n' +
          '    status: { loadBalancer: { ingress: [{ ip: 198.51.100.1 }, { ip: 198.51.100.2, ipMode: Proxy }, { hostname: lb.example }] } }\n',
      ),
    ).services[0]!;
    expect(st).toMatchObject({
      externalIPs: ['192.0.2.10'],
      externalTrafficPolicy: 'Local',
      loadBalancerSourceRanges: ['10.0.0.0/8'],
      loadBalancerIngress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.2', ipMode: 'Proxy' }],
    });
    const plain = loadState(good).services[0]!;
    for (const k of ['externalIPs', 'loadBalancerIngress', 'externalTrafficPolicy', 'loadBalancerSourceRanges'])
      expect(plain).not.toHaveProperty(k);
    expect(problems(good.replace('    clusterIP: 10.96.0.10\n', '    clusterIP: 10.96.0.10\n    externalIPs: [example.com]\n'))).toEqual([
      expect.objectContaining({ path: '/services/0/externalIPs/0' }),
    ]);
    expect(
      problems(
        good.replace(
          '    clusterIP: 10.96.0.10\n',
          '    clusterIP: 10.96.0.10\n    status: { loadBalancer: { ingress: [{ ip: 198.51.100.1, ipMode: Direct }] } }\n',
        ),
      ),
    ).toEqual([expect.objectContaining({ path: '/services/0/status/loadBalancer/ingress/0/ipMode' })]);
  });

  it("endpoints without ports get one per service port with a numeric or no targetPort; ports: [] is no port (as a slice's)", () => {
    const withEndpoints = (eps: string) =>
      loadState(
        good
          .replace(
            'ports: [{ name: http, port: 80, targetPort: http }]',
            'ports: [{ name: http, port: 80, targetPort: http }, { name: dns, port: 53, protocol: UDP, targetPort: 5353 }, { port: 9000 }]',
          )
          .replace('endpoints: [{ ip: 10.1.0.2, ports: [{ name: http, port: 8080 }] }]', `endpoints: ${eps}`),
      ).services[0]!.endpoints[0]!.ports;
    expect(withEndpoints('[{ ip: 10.1.0.2 }]')).toEqual([
      { name: 'dns', port: 5353, protocol: 'UDP' },
      { name: undefined, port: 9000, protocol: 'TCP' },
    ]);
    expect(withEndpoints('[{ ip: 10.1.0.2, ports: [] }]')).toEqual([]);
    expect(withEndpoints('[{ ip: 10.1.0.2, ports: [{ name: http, port: 8080 }] }]')).toEqual([
      { name: 'http', port: 8080, protocol: 'TCP' },
    ]);
  });

  it('accepts the same content as JSON', () => {
    const st = parseState(good);
    expect(parseState(JSON.stringify(st))).toEqual(st);
  });

  it('reports every schema problem with its JSON path and reason', () => {
    const bad = good
      .replace('ip: 10.1.0.2,', 'ip: 10.1.0.300,')
      .replace('{ name: team-b }', '{ name: team-b, accelerated: true }')
      .replace('port: 80,', 'port: 0,');
    expect(problems(bad)).toEqual(
      expect.arrayContaining([
        { path: '/namespaces/1', message: 'unknown property "accelerated"' },
        { path: '/pods/0/ip', message: 'not an IPv4 address' },
        { path: '/services/0/ports/0/port', message: 'must be >= 1' },
      ]),
    );
  });

  it('names a missing required field and a wrong kind', () => {
    const ps = problems(good.replace('kind: NodeState', 'kind: Node').replace('name: web-0, ', ''));
    expect(ps).toEqual(
      expect.arrayContaining([
        { path: '/kind', message: 'must be equal to constant: "NodeState"' },
        { path: '/pods/0', message: "must have required property 'name'" },
      ]),
    );
  });

  it('checks references and uniqueness across the file', () => {
    const ps = problems(
      good.replace(
        '{ namespace: team-b, name: db-0, ip: 10.1.0.3, hostInterface: veth1',
        '{ namespace: team-c, name: db-0, ip: 10.1.0.2, hostInterface: veth0',
      ),
    );
    expect(ps).toEqual([
      { path: '/pods/1/namespace', message: 'namespace "team-c" is not listed in /namespaces' },
      { path: '/pods/1/ip', message: 'IP 10.1.0.2 is also pod "team-a/web-0"' },
      { path: '/pods/1/hostInterface', message: 'interface veth0 is also pod "team-a/web-0"' },
    ]);
  });

  it('rejects text that is not YAML', () => {
    expect(problems('pods: [')[0]!.path).toBe('');
  });

  it('never writes a file it would reject, and leaves the old file intact', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-state-'));
    try {
      const file = path.join(dir, 'state.yaml');
      const st = parseState(good);
      writeStateFile(file, st);
      const before = fs.readFileSync(file, 'utf8');
      const broken = { ...st, pods: [{ ...st.pods[0]!, ip: 'nope' }] } as StateFile;
      expect(() => writeStateFile(file, broken)).toThrow(InputError);
      expect(fs.readFileSync(file, 'utf8')).toBe(before);
      expect(loadStateFile(file).snapshot.pods[0]!.labels).toEqual({ app: 'web' });
      expect(fs.readdirSync(dir)).toEqual(['state.yaml']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
