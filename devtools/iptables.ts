// iptables rules the sandbox adds so its pods can be forwarded when the host's
// FORWARD policy is DROP (as a Docker engine sets it). Every rule carries a
// comment naming its owner, and only rules with that comment are removed.
import { run, which } from '../loader/exec.js';

export interface Rule {
  chain: string;
  spec: string[];
}

export async function available(): Promise<boolean> {
  return (await which('iptables')) !== undefined;
}

export async function forwardPolicy(): Promise<string | undefined> {
  const r = await run('read FORWARD policy', ['iptables', '-w', '-S', 'FORWARD'], { reject: false });
  return /^-P FORWARD (\S+)/m.exec(r.stdout)?.[1];
}

function withComment(rule: Rule, owner: string): string[] {
  return [...rule.spec, '-m', 'comment', '--comment', owner];
}

export async function insert(rule: Rule, owner: string): Promise<void> {
  const spec = withComment(rule, owner);
  const exists = await run('check rule', ['iptables', '-w', '-C', rule.chain, ...spec], { reject: false });
  if (exists.exitCode !== 0) await run(`add ${rule.chain} rule`, ['iptables', '-w', '-I', rule.chain, ...spec]);
}

/** Deletes every rule of `chain` (in `table`) whose comment is `owner`. */
export async function removeOwned(chain: string, owner: string, table = 'filter'): Promise<number> {
  const r = await run(`list ${chain}`, ['iptables', '-w', '-t', table, '-S', chain], { reject: false });
  if (r.exitCode !== 0) return 0;
  let n = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith(`-A ${chain} `) || !line.includes(`--comment ${owner}`)) continue;
    const words = line.split(' ').slice(2);
    await run(`delete ${chain} rule`, ['iptables', '-w', '-t', table, '-D', chain, ...words]);
    n++;
  }
  return n;
}

/**
 * Istio's outbound capture today, for comparison: inside the pod's network
 * namespace, every TCP connect() not to loopback and not by the proxy uid is
 * NAT-redirected to the proxy port.
 */
export async function addOutboundRedirect(netns: string, proxyPort: number, proxyUid: number): Promise<void> {
  await run('add outbound REDIRECT', [
    'ip',
    'netns',
    'exec',
    netns,
    'iptables',
    '-w',
    '-t',
    'nat',
    '-A',
    'OUTPUT',
    '-p',
    'tcp',
    '!',
    '-d',
    '127.0.0.0/8',
    '-m',
    'owner',
    '!',
    '--uid-owner',
    String(proxyUid),
    '-m',
    'comment',
    '--comment',
    'podwarp-sidecar-baseline',
    '-j',
    'REDIRECT',
    '--to-ports',
    String(proxyPort),
  ]);
}

export async function removeOutboundRedirect(netns: string, proxyPort: number, proxyUid: number): Promise<void> {
  await run(
    'remove outbound REDIRECT',
    [
      'ip',
      'netns',
      'exec',
      netns,
      'iptables',
      '-w',
      '-t',
      'nat',
      '-D',
      'OUTPUT',
      '-p',
      'tcp',
      '!',
      '-d',
      '127.0.0.0/8',
      '-m',
      'owner',
      '!',
      '--uid-owner',
      String(proxyUid),
      '-m',
      'comment',
      '--comment',
      'podwarp-sidecar-baseline',
      '-j',
      'REDIRECT',
      '--to-ports',
      String(proxyPort),
    ],
    { reject: false },
  );
}

export interface KubeProxyService {
  vip: string;
  port: number;
  proto: 'tcp' | 'udp';
  backends: { ip: string; port: number }[];
  /**
   * Without backends, what kube-proxy does: `reject` (the Service has no
   * endpoints at all: REJECT, the client sees ECONNREFUSED / ICMP port
   * unreachable) or `drop` (internalTrafficPolicy Local with no endpoint on this
   * node: DROP, the client waits). Default drop.
   */
  empty?: 'reject' | 'drop';
}

/**
 * kube-proxy (iptables mode) in miniature, for the sandbox's normal path: a
 * services chain matched linearly, one chain per service choosing a backend
 * with `statistic --mode random`, DNAT. Only traffic entering from the
 * sandbox's interfaces (`ifacePattern`, e.g. pw1a2b+) is matched, and service
 * traffic that no rule translated is dropped rather than routed off the host.
 * Chains are named `<prefix>-SVC` and `<prefix>-S<n>`; all loaded with one
 * iptables-restore.
 */
export async function installKubeProxy(
  prefix: string,
  owner: string,
  ifacePattern: string,
  vipRange: string,
  services: KubeProxyService[],
): Promise<void> {
  const nat: string[] = ['*nat', `:${prefix}-SVC - [0:0]`];
  services.forEach((_, i) => nat.push(`:${prefix}-S${i} - [0:0]`));
  services.forEach((s, i) => nat.push(`-A ${prefix}-SVC -d ${s.vip}/32 -p ${s.proto} -m ${s.proto} --dport ${s.port} -j ${prefix}-S${i}`));
  services.forEach((s, i) => {
    s.backends.forEach((b, j) => {
      const left = s.backends.length - j;
      const stat = left > 1 ? `-m statistic --mode random --probability ${(1 / left).toFixed(11)} ` : '';
      nat.push(`-A ${prefix}-S${i} -p ${s.proto} ${stat}-j DNAT --to-destination ${b.ip}:${b.port}`);
    });
  });
  nat.push(`-A PREROUTING -i ${ifacePattern} -m comment --comment ${owner} -j ${prefix}-SVC`, 'COMMIT');
  const filter = ['*filter', `-I FORWARD 1 -i ${ifacePattern} -d ${vipRange} -m comment --comment ${owner} -j DROP`];
  // inserted after the DROP at position 1, so evaluated before it
  for (const s of services.filter((x) => !x.backends.length && x.empty === 'reject'))
    filter.push(
      `-I FORWARD 1 -i ${ifacePattern} -d ${s.vip}/32 -p ${s.proto} -m ${s.proto} --dport ${s.port} -m comment --comment ${owner} -j REJECT`,
    );
  filter.push('COMMIT');
  await run(`load ${services.length} kube-proxy-style services`, ['iptables-restore', '-w', '--noflush'], {
    input: [...nat, ...filter].join('\n') + '\n',
  });
}

/** Removes what installKubeProxy made (chains by prefix, rules by owner comment). Idempotent. */
export async function removeKubeProxy(prefix: string, owner: string): Promise<void> {
  await removeOwned('PREROUTING', owner, 'nat');
  await removeOwned('FORWARD', owner);
  const r = await run('list nat chains', ['iptables', '-w', '-t', 'nat', '-S'], { reject: false });
  const chains = [...r.stdout.matchAll(/^-N (\S+)$/gm)].map((m) => m[1]!).filter((c) => c.startsWith(`${prefix}-`));
  if (chains.length === 0) return;
  const lines = ['*nat', ...chains.map((c) => `-F ${c}`), ...chains.map((c) => `-X ${c}`), 'COMMIT'];
  await run(`remove ${chains.length} kube-proxy-style chains`, ['iptables-restore', '-w', '--noflush'], { input: lines.join('\n') + '\n' });
}

/** Packets that went through a service chain (iptables counters): proof of the normal path. */
export async function kubeProxyPackets(prefix: string): Promise<number> {
  const r = await run('read service chain counters', ['iptables', '-w', '-t', 'nat', '-L', `${prefix}-SVC`, '-v', '-x', '-n'], {
    reject: false,
  });
  return r.stdout
    .split('\n')
    .slice(2)
    .reduce((a, l) => a + (Number(l.trim().split(/\s+/)[0]) || 0), 0);
}
