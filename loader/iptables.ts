// iptables rules the sandbox adds so its pods can be forwarded when the host's
// FORWARD policy is DROP (as a Docker engine sets it). Every rule carries a
// comment naming its owner, and only rules with that comment are removed.
import { run, which } from './exec.js';

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

/** Deletes every rule of `chain` whose comment is `owner`. */
export async function removeOwned(chain: string, owner: string): Promise<number> {
  const r = await run(`list ${chain}`, ['iptables', '-w', '-S', chain], { reject: false });
  if (r.exitCode !== 0) return 0;
  let n = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith(`-A ${chain} `) || !line.includes(`--comment ${owner}`)) continue;
    const words = line.split(' ').slice(2);
    await run(`delete ${chain} rule`, ['iptables', '-w', '-D', chain, ...words]);
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
    'ip', 'netns', 'exec', netns, 'iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '!', '-d', '127.0.0.0/8',
    '-m', 'owner', '!', '--uid-owner', String(proxyUid), '-m', 'comment', '--comment', 'podwarp-sidecar-baseline',
    '-j', 'REDIRECT', '--to-ports', String(proxyPort),
  ]);
}

export async function removeOutboundRedirect(netns: string, proxyPort: number, proxyUid: number): Promise<void> {
  await run('remove outbound REDIRECT', [
    'ip', 'netns', 'exec', netns, 'iptables', '-w', '-t', 'nat', '-D', 'OUTPUT', '-p', 'tcp', '!', '-d', '127.0.0.0/8',
    '-m', 'owner', '!', '--uid-owner', String(proxyUid), '-m', 'comment', '--comment', 'podwarp-sidecar-baseline',
    '-j', 'REDIRECT', '--to-ports', String(proxyPort),
  ], { reject: false });
}
