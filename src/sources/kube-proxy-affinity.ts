// kube-proxy's sessionAffinity ClientIP memory on this node, read and written
// so that switching a pod's acceleration on or off never moves a sticky
// client (src/services/affinity-handover.ts decides what to hand over).
//
// kube-proxy remembers, per Service port, which endpoint each client IP used
// last, in one list per endpoint:
//  - iptables mode: an `xt_recent` list named after the endpoint chain. The
//    service chain holds, in endpoint order, `-m recent --name E --rcheck
//    --seconds T --reap -j E`; the endpoint chain E holds `-m recent --name E
//    --set … -j DNAT --to-destination IP:PORT`. The lists live in
//    /proc/net/xt_recent/E, one line per client with its last use in
//    jiffies; `+IP` written to the file remembers IP now, `-IP` forgets it.
//  - nftables mode: a set `affinity-…` per endpoint in table `ip
//    kube-proxy`, with the Service's timeout. The service chain holds, in
//    endpoint order, `ip saddr @affinity-E goto endpoint-E`; the endpoint
//    chain `update @affinity-E { ip saddr }` and its `dnat to IP:PORT`; the
//    `service-ips` map sends the frontend to the service chain. Each element
//    carries the seconds until it expires.
// For both, the first endpoint (in chain order) whose list holds the client
// within the timeout wins, as kube-proxy's rules evaluate.
//
// Everything is found from the rules themselves (frontend → service chain →
// remembered endpoints), not from kube-proxy's chain names, so the same code
// reads the real kube-proxy and the sandbox's kube-proxy-style rules.
import { natRulesets, nftApply, nftTableJson, timerList, xtRecentRead, xtRecentWrite } from '../../host/netfilter.js';
import { PROTO } from '../../abi/schema.js';
import { feKey, type Frontend, type Proto } from '../services/desired.js';

/** One endpoint's memory: its list (xt_recent name or nft set) and where it DNATs to. */
export interface RememberingEndpoint {
  list: string;
  backend: { ip: string; port: number };
}

/** A frontend kube-proxy serves with affinity: its endpoints' lists, in rule order. */
export interface AffinityFrontend {
  fe: Frontend;
  endpoints: RememberingEndpoint[];
}

export type ProxyMode = 'iptables' | 'nftables';

/** kube-proxy's affinity rules and lists in one mode. */
export interface AffinityState {
  mode: ProxyMode;
  /** feKey → frontend */
  frontends: Map<string, AffinityFrontend>;
  /** list name → client IP → seconds since its last use */
  lists: Map<string, Map<string, number>>;
}

const PROTO_BY_NAME: Record<string, Proto> = { tcp: PROTO.TCP, udp: PROTO.UDP };

// ---- iptables ----

/**
 * `iptables-save -t nat` → the frontends with affinity: a rule matching
 * `-d IP/32 -p PROTO … --dport PORT -j CHAIN` where CHAIN (or a chain it jumps
 * to, as KUBE-EXT- jumps to KUBE-SVC-) holds `--rcheck` rules.
 */
export function parseIptablesAffinity(save: string): Map<string, AffinityFrontend> {
  const rules = new Map<string, string[]>();
  for (const line of save.split('\n')) {
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (!m) continue;
    let r = rules.get(m[1]!);
    if (!r) rules.set(m[1]!, (r = []));
    r.push(m[2]!);
  }
  const target = (rule: string) => / -j (\S+)/.exec(` ${rule}`)?.[1];
  // endpoint chain → where its --set rule DNATs
  const dnatOf = (chain: string): RememberingEndpoint['backend'] | undefined => {
    for (const r of rules.get(chain) ?? []) {
      if (!/-m recent\b.*--set\b/.test(r)) continue;
      const d = /--to-destination (\d+\.\d+\.\d+\.\d+):(\d+)/.exec(r);
      if (d) return { ip: d[1]!, port: Number(d[2]) };
    }
    return undefined;
  };
  const remembering = (chain: string): RememberingEndpoint[] => {
    const out: RememberingEndpoint[] = [];
    for (const r of rules.get(chain) ?? []) {
      if (!/-m recent\b.*--rcheck\b/.test(r)) continue;
      const list = /--name (\S+)/.exec(r)?.[1];
      const to = target(r);
      const backend = to ? dnatOf(to) : undefined;
      if (list && backend) out.push({ list, backend });
    }
    return out;
  };
  const out = new Map<string, AffinityFrontend>();
  for (const chainRules of rules.values()) {
    for (const r of chainRules) {
      const d = /(?:^| )-d (\d+\.\d+\.\d+\.\d+)\/32\b/.exec(r);
      const p = / -p (tcp|udp)\b/.exec(` ${r}`);
      const port = /--dport (\d+)\b/.exec(r);
      const to = target(r);
      if (!d || !p || !port || !to || !rules.has(to)) continue;
      let endpoints = remembering(to);
      // one jump further (an external destination's chain jumps to the service chain)
      for (const r2 of endpoints.length ? [] : (rules.get(to) ?? [])) {
        const t2 = target(r2);
        if (t2 && rules.has(t2)) endpoints = remembering(t2);
        if (endpoints.length) break;
      }
      if (!endpoints.length) continue;
      const fe: Frontend = { ip: d[1]!, port: Number(port[1]), proto: PROTO_BY_NAME[p[1]!]! };
      if (!out.has(feKey(fe))) out.set(feKey(fe), { fe, endpoints });
    }
  }
  return out;
}

/** The kernel's jiffies now and HZ, from /proc/timer_list (`jiffies: N`, `now at NS nsecs`). */
export function jiffiesClock(timerList: string): { jiffies: bigint; hz: number } {
  const j = /^jiffies: (\d+)/m.exec(timerList);
  const now = /^now at (\d+) nsecs/m.exec(timerList);
  if (!j || !now) throw new Error('/proc/timer_list has no jiffies or no clock reading');
  const jiffies = BigInt(j[1]!);
  const up = Number(now[1]) / 1e9;
  // jiffies start at INITIAL_JIFFIES = (u32)(-300 * HZ) at boot and advance HZ per second
  // of CLOCK_MONOTONIC: the candidate HZ that predicts the reading best is the kernel's
  const err = (hz: number) => Math.abs(Number(2n ** 32n - BigInt(300 * hz)) + up * hz - Number(jiffies));
  const hz = [100, 250, 300, 1000].reduce((a, b) => (err(b) < err(a) ? b : a));
  return { jiffies, hz };
}

/** One /proc/net/xt_recent/<list> file → client IP → seconds since its last use. */
export function parseXtRecent(text: string, clock: { jiffies: bigint; hz: number }): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^src=(\d+\.\d+\.\d+\.\d+) .*last_seen: (\d+)/.exec(line);
    if (!m) continue;
    const d = clock.jiffies - BigInt(m[2]!);
    out.set(m[1]!, Math.max(0, Number(d)) / clock.hz);
  }
  return out;
}

// ---- nftables ----

type Json = unknown;
const obj = (x: Json): Record<string, Json> | undefined =>
  x && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, Json>) : undefined;

/** Every string `@name` set reference and goto/jump target inside an nft JSON expression list. */
function refs(x: Json, sets: string[], targets: string[]): void {
  if (typeof x === 'string') {
    if (x.startsWith('@')) sets.push(x.slice(1));
    return;
  }
  if (Array.isArray(x)) return x.forEach((y) => refs(y, sets, targets));
  const o = obj(x);
  if (!o) return;
  for (const [k, v] of Object.entries(o)) {
    const t = obj(v)?.target;
    if ((k === 'goto' || k === 'jump') && typeof t === 'string') targets.push(t);
    else refs(v, sets, targets);
  }
}

/**
 * `nft -j list table ip kube-proxy` → frontends with affinity and the sets'
 * members (age = the set's timeout − the element's seconds left).
 */
export function parseNftAffinity(text: string): { frontends: Map<string, AffinityFrontend>; lists: Map<string, Map<string, number>> } {
  const doc = obj(JSON.parse(text));
  const items = (Array.isArray(doc?.nftables) ? doc.nftables : []).map(obj).filter((x) => x !== undefined);
  const chains = new Map<string, Json[][]>();
  const lists = new Map<string, Map<string, number>>();
  const maps: Json[][] = [];
  for (const it of items) {
    const rule = obj(it.rule);
    if (rule && typeof rule.chain === 'string' && Array.isArray(rule.expr)) {
      let c = chains.get(rule.chain);
      if (!c) chains.set(rule.chain, (c = []));
      c.push(rule.expr);
    }
    const set = obj(it.set);
    if (set && typeof set.name === 'string' && set.name.startsWith('affinity-')) {
      const members = new Map<string, number>();
      const timeout = typeof set.timeout === 'number' ? set.timeout : undefined;
      for (const e of Array.isArray(set.elem) ? set.elem : []) {
        const el = obj(obj(e)?.elem);
        const val = typeof e === 'string' ? e : el?.val;
        if (typeof val !== 'string') continue;
        const t = typeof el?.timeout === 'number' ? el.timeout : timeout;
        const left = typeof el?.expires === 'number' ? el.expires : t;
        members.set(val, t !== undefined && left !== undefined ? Math.max(0, t - left) : 0);
      }
      lists.set(set.name, members);
    }
    const map = obj(it.map);
    if (map && map.map === 'verdict' && Array.isArray(map.elem)) maps.push(map.elem as Json[]);
  }
  const dnatOf = (chain: string): { list?: string; backend?: RememberingEndpoint['backend'] } => {
    const out: { list?: string; backend?: RememberingEndpoint['backend'] } = {};
    for (const expr of chains.get(chain) ?? []) {
      for (const e of expr) {
        const s = obj(obj(e)?.set);
        if (s?.op === 'update' && typeof s.set === 'string') out.list = s.set.replace(/^@/, '');
        const d = obj(obj(e)?.dnat);
        if (d && typeof d.addr === 'string' && typeof d.port === 'number') out.backend = { ip: d.addr, port: d.port };
      }
    }
    return out;
  };
  const remembering = (chain: string): RememberingEndpoint[] => {
    const out: RememberingEndpoint[] = [];
    for (const expr of chains.get(chain) ?? []) {
      const sets: string[] = [];
      const targets: string[] = [];
      refs(expr, sets, targets);
      const list = sets.find((s) => s.startsWith('affinity-'));
      if (!list || targets.length !== 1) continue;
      const ep = dnatOf(targets[0]!);
      if (ep.list === list && ep.backend) out.push({ list, backend: ep.backend });
    }
    return out;
  };
  const frontends = new Map<string, AffinityFrontend>();
  for (const elems of maps) {
    for (const el of elems) {
      if (!Array.isArray(el) || el.length !== 2) continue;
      const concat = obj(el[0])?.concat;
      const targets: string[] = [];
      refs(el[1], [], targets);
      if (!Array.isArray(concat) || concat.length !== 3 || targets.length !== 1) continue;
      const [ip, proto, port] = concat as Json[];
      const p = typeof proto === 'string' ? PROTO_BY_NAME[proto] : undefined;
      if (typeof ip !== 'string' || !p || typeof port !== 'number') continue;
      const endpoints = remembering(targets[0]!);
      if (!endpoints.length) continue;
      const fe: Frontend = { ip, port, proto: p };
      frontends.set(feKey(fe), { fe, endpoints });
    }
  }
  return { frontends, lists };
}

// ---- the node ----

export const NFT_TABLE = ['ip', 'kube-proxy'] as const;

/** kube-proxy's affinity state on this node, in every mode that has some (normally one). */
export async function readAffinityState(): Promise<AffinityState[]> {
  const out: AffinityState[] = [];
  const frontends = new Map<string, AffinityFrontend>();
  for (const save of await natRulesets()) {
    if (!save.includes('--rcheck')) continue;
    for (const [k, f] of parseIptablesAffinity(save)) if (!frontends.has(k)) frontends.set(k, f);
  }
  if (frontends.size) {
    const clock = jiffiesClock(timerList());
    const lists = new Map<string, Map<string, number>>();
    for (const f of frontends.values()) for (const e of f.endpoints) lists.set(e.list, parseXtRecent(xtRecentRead(e.list), clock));
    out.push({ mode: 'iptables', frontends, lists });
  }
  const json = await nftTableJson(...NFT_TABLE);
  if (json) {
    const n = parseNftAffinity(json);
    if (n.frontends.size) out.push({ mode: 'nftables', ...n });
  }
  return out;
}

/** What kube-proxy remembers for `client` at frontend `k`: the endpoint its rules would send it to now, and the age. */
export function rememberedBy(
  s: AffinityState,
  k: string,
  client: string,
  timeout: number,
): { backend: RememberingEndpoint['backend']; ageS: number } | undefined {
  for (const e of s.frontends.get(k)?.endpoints ?? []) {
    const age = s.lists.get(e.list)?.get(client);
    if (age !== undefined && age <= timeout) return { backend: e.backend, ageS: age };
  }
  return undefined;
}

/** One client's memory to hand to kube-proxy: at frontend `k`, `backend`, last used `ageS` ago. */
export interface HandBack {
  k: string;
  client: string;
  backend: { ip: string; port: number };
  ageS: number;
  timeout: number;
}

/**
 * Makes kube-proxy remember each client at its backend (and at no other
 * endpoint of the frontend, whose earlier rule would win). xt_recent can only
 * record "now": the client's timer restarts at the hand-back (it stays on its
 * backend up to ageS longer than without podwarp). nftables keeps the age.
 */
export async function writeAffinityState(s: AffinityState, entries: HandBack[]): Promise<number> {
  let n = 0;
  const nft: string[] = [];
  for (const h of entries) {
    const f = s.frontends.get(h.k);
    if (!f) continue;
    for (const e of f.endpoints) {
      const mine = e.backend.ip === h.backend.ip && e.backend.port === h.backend.port;
      const has = s.lists.get(e.list)?.has(h.client) ?? false;
      if (s.mode === 'iptables') {
        if (mine) xtRecentWrite(e.list, `+${h.client}`);
        else if (has) xtRecentWrite(e.list, `-${h.client}`);
      } else {
        const set = `${NFT_TABLE.join(' ')} ${e.list}`;
        if (has) nft.push(`delete element ${set} { ${h.client} }`);
        if (mine) {
          const left = Math.max(1, Math.floor(h.timeout - h.ageS));
          nft.push(`add element ${set} { ${h.client} timeout ${h.timeout}s expires ${left}s }`);
        }
      }
      if (mine) n++;
    }
  }
  if (nft.length) await nftApply('hand affinity back to kube-proxy (nftables)', nft.join('\n') + '\n');
  return n;
}
