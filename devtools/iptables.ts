// iptables rules the sandbox adds so its pods can be forwarded when the host's
// FORWARD policy is DROP (as a Docker engine sets it). Every rule carries a
// comment naming its owner, and only rules with that comment are removed.
import crypto from 'node:crypto';
import { run, which } from '../host/exec.js';

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

/**
 * Istio's DNS capture (istio-iptables with DNS capture on), for comparison:
 * inside the pod's network namespace, UDP to port 53 goes to the agent's DNS
 * proxy port (15053). Istio adds `-d <nameserver>` and the uid/gid
 * exclusions; the sandbox pods' nameserver is whatever the test dials.
 */
export async function dnsRedirect(op: 'add' | 'remove', netns: string, toPort: number): Promise<void> {
  const spec = ['OUTPUT', '-p', 'udp', '--dport', '53', '-m', 'comment', '--comment', 'podwarp-dns-baseline', '-j', 'REDIRECT'];
  await run(
    `${op} DNS REDIRECT`,
    ['ip', 'netns', 'exec', netns, 'iptables', '-w', '-t', 'nat', op === 'add' ? '-A' : '-D', ...spec, '--to-ports', String(toPort)],
    { reject: op === 'add' },
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
  /**
   * sessionAffinity ClientIP with this timeoutSeconds: kube-proxy's rules
   * for it (pkg/proxy/iptables): in the service chain, per endpoint,
   * `-m recent --name <endpoint chain> --rcheck --seconds T --reap -j <endpoint chain>`
   * before the random choice; in each endpoint chain `-m recent --name <it> --set`
   * before the DNAT, so every new connection restarts the client's timer.
   */
  affinity?: number;
  /**
   * Masquerade what this rule translates, as kube-proxy does for a Service's
   * external destinations (externalIPs, LoadBalancer IPs) with
   * externalTrafficPolicy Cluster: KUBE-MARK-MASQ in the EXT chain for every
   * source, pods included, then MASQUERADE in POSTROUTING, so the backend sees
   * the node's address. Here: MASQUERADE in POSTROUTING for the connections
   * whose original destination is this vip:port (conntrack), no mark bit.
   */
  masquerade?: boolean;
}

/** An endpoint chain (and its `recent` list), named by a hash of service port and endpoint as kube-proxy's KUBE-SEP-… are: stable while the endpoint stays. */
function endpointChain(prefix: string, s: KubeProxyService, b: { ip: string; port: number }): string {
  const h = crypto.createHash('sha256').update(`${s.vip}:${s.port}/${s.proto}>${b.ip}:${b.port}`).digest('hex');
  return `${prefix}-E${h.slice(0, 8)}`;
}

/** The nat rules of service i: its chain `<prefix>-S<i>` and, with affinity, one chain per endpoint. */
function serviceNat(prefix: string, s: KubeProxyService, i: number): { chains: string[]; rules: string[] } {
  const chains: string[] = [];
  const rules: string[] = [];
  const svc = `${prefix}-S${i}`;
  if (s.affinity) {
    for (const b of s.backends) {
      const ep = endpointChain(prefix, s, b);
      chains.push(ep);
      rules.push(`-A ${svc} -m recent --name ${ep} --rcheck --seconds ${s.affinity} --reap -j ${ep}`);
      rules.push(`-A ${ep} -p ${s.proto} -m recent --name ${ep} --set -j DNAT --to-destination ${b.ip}:${b.port}`);
    }
  }
  s.backends.forEach((b, j) => {
    const left = s.backends.length - j;
    const stat = left > 1 ? `-m statistic --mode random --probability ${(1 / left).toFixed(11)} ` : '';
    const to = s.affinity ? `-j ${endpointChain(prefix, s, b)}` : `-j DNAT --to-destination ${b.ip}:${b.port}`;
    rules.push(`-A ${svc} -p ${s.proto} ${stat}${to}`);
  });
  return { chains, rules };
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
  const per = services.map((s, i) => serviceNat(prefix, s, i));
  services.forEach((_, i) => nat.push(`:${prefix}-S${i} - [0:0]`, ...per[i]!.chains.map((c) => `:${c} - [0:0]`)));
  services.forEach((s, i) => nat.push(`-A ${prefix}-SVC -d ${s.vip}/32 -p ${s.proto} -m ${s.proto} --dport ${s.port} -j ${prefix}-S${i}`));
  for (const p of per) nat.push(...p.rules);
  nat.push(`-A PREROUTING -i ${ifacePattern} -m comment --comment ${owner} -j ${prefix}-SVC`);
  const masq = services.filter((x) => x.masquerade);
  if (masq.length) {
    // a chain of its own (removed by prefix), jumped to by one plain owned rule
    nat.push(`:${prefix}-MASQ - [0:0]`, `-A POSTROUTING -m comment --comment ${owner} -j ${prefix}-MASQ`);
    for (const s of masq)
      nat.push(`-A ${prefix}-MASQ -m conntrack --ctproto ${s.proto} --ctorigdst ${s.vip}/32 --ctorigdstport ${s.port} -j MASQUERADE`);
  }
  nat.push('COMMIT');
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

/**
 * New backends for the services installKubeProxy loaded (same services, same
 * order), as kube-proxy applies an EndpointSlice change: the service chains
 * are rewritten and the chains of endpoints that left are deleted, in one
 * iptables-restore, while the endpoint chains that stay, and so their
 * `recent` lists (the clients' affinity), are kept.
 */
export async function updateKubeProxy(prefix: string, services: KubeProxyService[]): Promise<void> {
  if (services.some((s) => !s.backends.length)) throw new Error('updateKubeProxy: every service needs a backend (use installKubeProxy)');
  const r = await run('list nat chains', ['iptables', '-w', '-t', 'nat', '-S'], { reject: false });
  const have = new Set([...r.stdout.matchAll(/^-N (\S+)$/gm)].map((m) => m[1]!).filter((c) => c.startsWith(`${prefix}-E`)));
  const per = services.map((s, i) => serviceNat(prefix, s, i));
  const want = new Set(per.flatMap((p) => p.chains));
  const nat = ['*nat'];
  services.forEach((_, i) => nat.push(`:${prefix}-S${i} - [0:0]`)); // flushed (--noflush still flushes a declared chain)
  for (const c of want) if (!have.has(c)) nat.push(`:${c} - [0:0]`);
  for (const p of per) nat.push(...p.rules.filter((l) => !l.startsWith(`-A ${prefix}-E`) || !have.has(l.split(' ')[1]!)));
  for (const c of have) if (!want.has(c)) nat.push(`-F ${c}`, `-X ${c}`);
  nat.push('COMMIT');
  await run(`update ${services.length} kube-proxy-style services`, ['iptables-restore', '-w', '--noflush'], {
    input: nat.join('\n') + '\n',
  });
}

/** Removes what installKubeProxy made (chains by prefix, rules by owner comment). Idempotent. */
export async function removeKubeProxy(prefix: string, owner: string): Promise<void> {
  await removeOwned('PREROUTING', owner, 'nat');
  await removeOwned('POSTROUTING', owner, 'nat');
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

/**
 * kube-proxy's UDP cleanup when an endpoint leaves a Service: the conntrack
 * entries of flows from `client` to `vip` DNATed to `backend` are deleted
 * (kube-proxy: `conntrack -D --orig-dst <vip> --dst-nat <endpoint> -p udp`,
 * narrowed here to the sandbox's client), so a connected socket's next
 * datagram is NATed anew to a live backend. Without `backend`: every entry
 * client → vip (a test's clean slate). The number of entries deleted.
 */
export async function conntrackDeleteUdp(client: string, vip: string, backend?: string): Promise<number> {
  const r = await run(
    `delete UDP conntrack entries ${client} → ${vip}${backend ? ` (DNAT ${backend})` : ''}`,
    ['conntrack', '-D', '-p', 'udp', '--orig-src', client, '--orig-dst', vip, ...(backend ? ['--dst-nat', backend] : [])],
    { reject: false },
  );
  // exit 1 and "0 flow entries" when none matched
  const m = /(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout);
  if (!m) throw new Error(`conntrack -D: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
  return Number(m[1]);
}

/**
 * The conntrack entries of `proto` flows from `client` whose original
 * destination is `dest` (a Service address: only flows kube-proxy's rules
 * translated have one), each as the address the server saw as its peer (the
 * reply direction's destination: the client's own address, or the node's
 * when the flow was masqueraded). `remove` deletes them instead (a clean
 * slate between two phases of a test) and returns what was deleted.
 */
export async function conntrackPeers(proto: 'tcp' | 'udp', client: string, dest: string, remove = false): Promise<string[]> {
  const r = await run(
    `${remove ? 'delete' : 'list'} ${proto} conntrack entries ${client} → ${dest}`,
    ['conntrack', remove ? '-D' : '-L', '-p', proto, '--orig-src', client, '--orig-dst', dest],
    { reject: false },
  );
  // exit 1 with "0 flow entries" when none matched; the entries go to stdout, the count to stderr
  if (!/\d+ flow entries have been (shown|deleted)/.test(r.stderr + r.stdout))
    throw new Error(`conntrack: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes(`src=${client} `))
    .map((l) => [...l.matchAll(/\bdst=(\S+)/g)][1]?.[1] ?? '?');
}
