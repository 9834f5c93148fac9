// The counters that prove which path a benchmark round took. A round labelled
// "tc + sockmap" whose bytes never went through sk_msg, or a "socket LB" round
// that translated nothing, would put a wrong figure under a right name; every
// comparison (demo, bench, service bench) reads these around each round and
// refuses a round whose counters contradict its path.
import { STAT_GROUPS } from '../abi/schema.js';
import type { Datapath } from '../loader/datapath.js';

export interface PathEvidence {
  /** packets pw_tc_egress handed to the peer pod (TC redirected) */
  tcRedirected: number;
  /** bytes pw_sk_msg moved straight into the peer socket (MSG redirected) */
  msgRedirectedBytes: number;
  /** connects/sendmsgs the socket LB sent to a backend (LB translated) */
  lbTranslated: number;
}

function slot(prog: string, reason: string): number {
  const g = STAT_GROUPS.find((x) => x.prog === prog)!;
  const i = g.reasons.indexOf(reason);
  if (i < 0) throw new Error(`no ${reason} reason in ${prog}`);
  return g.base + i;
}

async function read(dp: Datapath): Promise<PathEvidence> {
  const c = await dp.maps.counters();
  const get = (prog: string, reason: string) => c.get(slot(prog, reason)) ?? { packets: 0n, bytes: 0n };
  return {
    tcRedirected: Number(get('pw_tc_egress', 'redirected').packets),
    msgRedirectedBytes: Number(get('pw_sk_msg', 'redirected').bytes),
    lbTranslated: Number(get('pw_lb', 'translated').packets),
  };
}

/** Runs `round` and returns its result with the counters' growth during it. */
export async function withEvidence<T>(dp: Datapath, round: () => Promise<T>): Promise<{ result: T; evidence: PathEvidence }> {
  const before = await read(dp);
  const result = await round();
  const after = await read(dp);
  return {
    result,
    evidence: {
      tcRedirected: after.tcRedirected - before.tcRedirected,
      msgRedirectedBytes: after.msgRedirectedBytes - before.msgRedirectedBytes,
      lbTranslated: after.lbTranslated - before.lbTranslated,
    },
  };
}

/** What a path must show: a counter that moved (`true`) or stayed still (`false`); unnamed ones are free. */
export type Expectation = Partial<Record<keyof PathEvidence, boolean>>;

/** pod→pod: tc redirects only on the tc path (sockmap off), sk_msg redirects on the sockmap path. */
export const POD_PATH: Record<'normal' | 'tc' | 'sockmap', Expectation> = {
  normal: { tcRedirected: false, msgRedirectedBytes: false },
  tc: { tcRedirected: true, msgRedirectedBytes: false },
  sockmap: { msgRedirectedBytes: true },
};
/** app → sidecar → pod: podwarp puts both hops on the sockmap; Istio's iptables REDIRECT none. */
export const SIDECAR_PATH: Record<'iptables' | 'podwarp', Expectation> = {
  iptables: { msgRedirectedBytes: false },
  podwarp: { msgRedirectedBytes: true },
};
/**
 * New connections to a ClusterIP (devtools/bench-flows.ts): on the normal path
 * iptables resolves it and podwarp does nothing; on the others the socket LB
 * translates and the tc fast path carries the connection, the sockmap its bytes.
 */
export const CONN_SVC_PATH: Record<'normal' | 'tc' | 'sockmap', Expectation> = {
  normal: { lbTranslated: false, tcRedirected: false, msgRedirectedBytes: false },
  tc: { lbTranslated: true, tcRedirected: true, msgRedirectedBytes: false },
  sockmap: { lbTranslated: true, msgRedirectedBytes: true },
};
/** ClusterIP connects: the socket LB translates at connect(); with iptables it translates nothing. */
export const SERVICES_PATH: Record<'iptables' | 'socket-lb', Expectation> = {
  iptables: { lbTranslated: false },
  'socket-lb': { lbTranslated: true },
};

/** The expectation of a bench group's path (group ids of devtools/bench.ts and devtools/bench-flows.ts). */
export function expectedFor(group: string, path: string): Expectation | undefined {
  const table: Record<string, Expectation> | undefined =
    group.startsWith('pod-pod-') || ['conn-pod-pod', 'long-transfer', 'slow-reader'].includes(group)
      ? POD_PATH
      : group === 'conn-clusterip'
        ? CONN_SVC_PATH
        : group === 'sidecar'
          ? SIDECAR_PATH
          : group.startsWith('services')
            ? SERVICES_PATH
            : undefined;
  return table?.[path];
}

/** The counters that contradict `want` (empty: the round took its path). */
export function contradictions(e: PathEvidence, want: Expectation): string[] {
  return (Object.entries(want) as [keyof PathEvidence, boolean][])
    .filter(([k, moved]) => e[k] > 0 !== moved)
    .map(([k, moved]) => `${k} ${moved ? 'did not move' : `moved by ${e[k]}`}`);
}

/** Throws when the counters contradict the path the round is labelled with. */
export function expectPath(what: string, e: PathEvidence, want: Expectation): void {
  const wrong = contradictions(e, want);
  if (wrong.length)
    throw new Error(
      `${what}: the counters contradict the path (${wrong.join(', ')}); the round did not take the path it names, so its figures are not reported`,
    );
}
