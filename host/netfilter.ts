// The node's netfilter state that podwarp reads and writes besides its own
// objects: kube-proxy's nat rules (both iptables backends), its nftables
// table, and the xt_recent lists its sessionAffinity rules keep
// (src/sources/kube-proxy-affinity.ts reads them).
import fs from 'node:fs';
import { run, which } from './exec.js';

const XT_RECENT = '/proc/net/xt_recent';

/**
 * `iptables-save -t nat` of every iptables backend installed (legacy, nft): kube-proxy may use either. Plain
 * `iptables-save` (one of the two under another name) only where neither is installed by its own name.
 */
export async function natRulesets(): Promise<string[]> {
  const out: string[] = [];
  const both = [];
  for (const bin of ['iptables-legacy-save', 'iptables-nft-save']) if (await which(bin)) both.push(bin);
  for (const bin of both.length ? both : ['iptables-save']) {
    if (!(await which(bin))) continue;
    const r = await run(`read nat rules (${bin})`, [bin, '-t', 'nat'], { reject: false });
    if (r.exitCode === 0) out.push(r.stdout);
  }
  return out;
}

/** `nft -j list table FAMILY NAME`; undefined when nft is missing or the table does not exist. */
export async function nftTableJson(family: string, name: string): Promise<string | undefined> {
  if (!(await which('nft'))) return undefined;
  const r = await run(`list nftables table ${family} ${name}`, ['nft', '-j', 'list', 'table', family, name], { reject: false });
  return r.exitCode === 0 ? r.stdout : undefined;
}

/** Runs an nft script as one transaction. */
export async function nftApply(what: string, script: string): Promise<void> {
  await run(what, ['nft', '-f', '-'], { input: script });
}

/** An xt_recent list's lines; '' when the list does not exist (made by the first packet that reaches its rule). */
export function xtRecentRead(list: string): string {
  try {
    return fs.readFileSync(`${XT_RECENT}/${list}`, 'utf8');
  } catch {
    return '';
  }
}

/** One command to an xt_recent list: `+IP` remembers IP now, `-IP` forgets it, `/` flushes the list. */
export function xtRecentWrite(list: string, command: string): void {
  fs.writeFileSync(`${XT_RECENT}/${list}`, `${command}\n`);
}

/** /proc/timer_list (root): the kernel's jiffies and its monotonic clock. */
export function timerList(): string {
  return fs.readFileSync('/proc/timer_list', 'utf8');
}
