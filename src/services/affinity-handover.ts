// sessionAffinity ClientIP across a pod's switch between kube-proxy's path
// and podwarp's socket LB: one memory at a time, handed over at the switch,
// so a sticky client keeps its backend in both directions.
//
//  - on (the pod gets the socket LB): its entries in pw_affinity become what
//    kube-proxy remembers for its IP (the endpoint kube-proxy's rules would
//    choose now, with its age), written before the hooks are attached;
//  - off (the socket LB leaves the pod): kube-proxy is made to remember what
//    pw_affinity holds for its IP (live entries only), before the hooks are
//    detached; the entries are forgotten once they are.
//
// kube-proxy's side is src/sources/kube-proxy-affinity.ts; the apply pass
// that calls this is src/pods/apply.ts. Nothing is read or written when no
// frontend has affinity.
import type { Datapath } from '../../loader/datapath.js';
import type { Entry } from '../../loader/maps.js';
import { log } from '../../host/log.js';
import { readAffinityState, rememberedBy, writeAffinityState, type AffinityState, type HandBack } from '../sources/kube-proxy-affinity.js';
import { feKey, type Proto } from './desired.js';
import { BpfServiceMaps } from './maps.js';
import type { ActualServices } from './plan.js';

const NS = 1_000_000_000n;

export interface HandoverResult {
  /** entries moved (into pw_affinity, or into kube-proxy's lists) */
  entries: number;
  /** kube-proxy's modes that held affinity rules */
  modes: string[];
}

/** Reads the service maps and kube-proxy's state, unless no frontend has affinity. */
async function context(dp: Datapath): Promise<{ have: ActualServices; states: AffinityState[] } | undefined> {
  if (!dp.pins.hasMap('pw_affinity') || !dp.pins.hasMap('pw_svc')) return undefined;
  const have = await new BpfServiceMaps(dp).read();
  if (![...have.masters.values()].some((m) => m.affinity)) return undefined;
  return { have, states: await readAffinityState() };
}

/** pw_affinity's entries of these clients. */
async function entriesOf(dp: Datapath, clients: Set<string>) {
  return (await dp.maps.dump('pw_affinity')).filter((e) => clients.has(String(e.key.client)));
}

/** The clients' memory in pw_affinity becomes kube-proxy's (their old entries go first). */
export async function seedFromKubeProxy(dp: Datapath, clients: string[]): Promise<HandoverResult> {
  const want = new Set(clients);
  if (!want.size) return { entries: 0, modes: [] };
  const ctx = await context(dp);
  const stale = ctx ? await entriesOf(dp, want) : [];
  if (!ctx) return { entries: 0, modes: [] };
  const { have, states } = ctx;
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns
  const upserts: Entry[] = [];
  for (const [k, m] of have.masters) {
    if (!m.affinity) continue;
    const ids = [...(have.matches.get(k) ?? [])];
    for (const client of want) {
      for (const s of states) {
        const r = rememberedBy(s, k, client, m.affinity);
        const id = r && ids.find((i) => have.backends.get(i)?.ip === r.backend.ip && have.backends.get(i)?.port === r.backend.port);
        if (!r || id === undefined) continue;
        const age = BigInt(Math.round(r.ageS * 1e9));
        upserts.push({
          key: { client, ip: m.fe.ip, port: m.fe.port, proto: m.fe.proto },
          value: { backend_id: id, last_ns: now > age ? now - age : 0n },
        });
        break;
      }
    }
  }
  const keep = new Set(upserts.map((u) => JSON.stringify(u.key)));
  const deletes = stale.map((e) => e.key).filter((k) => !keep.has(JSON.stringify(k)));
  if (upserts.length || deletes.length) await dp.maps.write('pw_affinity', upserts, deletes);
  if (upserts.length) log.info({ clients: clients.length, entries: upserts.length }, 'sessionAffinity taken over from kube-proxy');
  return { entries: upserts.length, modes: states.map((s) => s.mode) };
}

/** kube-proxy is made to remember what pw_affinity holds (live) for these clients. */
export async function handBackToKubeProxy(dp: Datapath, clients: string[]): Promise<HandoverResult> {
  const want = new Set(clients);
  if (!want.size) return { entries: 0, modes: [] };
  const ctx = await context(dp);
  if (!ctx) return { entries: 0, modes: [] };
  const { have, states } = ctx;
  const now = process.hrtime.bigint();
  const back: HandBack[] = [];
  for (const e of await entriesOf(dp, want)) {
    const fe = { ip: String(e.key.ip), port: Number(e.key.port), proto: Number(e.key.proto) as Proto };
    const k = feKey(fe);
    const timeout = have.masters.get(k)?.affinity;
    const id = Number(e.value.backend_id);
    const b = have.backends.get(id);
    const last = BigInt(e.value.last_ns as bigint);
    const ageS = Number(now > last ? (now - last) / (NS / 1000n) : 0n) / 1000;
    // expired, or its backend left: kube-proxy chooses anew too (its own older entry is expired or gone with its chain)
    if (!timeout || !b || ageS > timeout || !have.matches.get(k)?.has(id)) continue;
    back.push({ k, client: String(e.key.client), backend: { ip: b.ip, port: b.port }, ageS, timeout });
  }
  let n = 0;
  for (const s of states) n += await writeAffinityState(s, back);
  if (back.length)
    log.info(
      { clients: clients.length, entries: back.length, modes: states.map((s) => s.mode) },
      'sessionAffinity handed back to kube-proxy',
    );
  return { entries: n, modes: states.map((s) => s.mode) };
}

/** Forgets the clients' entries (their hooks are off: kube-proxy holds their memory now). */
export async function forgetClients(dp: Datapath, clients: string[]): Promise<void> {
  if (!clients.length || !dp.pins.hasMap('pw_affinity')) return;
  const gone = await entriesOf(dp, new Set(clients));
  if (gone.length)
    await dp.maps.write(
      'pw_affinity',
      [],
      gone.map((e) => e.key),
    );
}

/** Every client of the socket LB (pw_lb_client) handed back: `podwarp uninstall`. The entries handed. */
export async function handBackAll(dp: Datapath): Promise<number> {
  if (!dp.pins.hasMap('pw_lb_client')) return 0;
  const clients = (await dp.maps.dump('pw_lb_client')).map((e) => String(e.value.ip));
  return (await handBackToKubeProxy(dp, clients)).entries;
}
