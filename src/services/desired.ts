// Services → the frontends and backends podwarp load-balances at connect():
// pure, from the snapshot's Services and EndpointSlices.
import { PROTO } from '../../abi/schema.js';
import type { Service, Snapshot } from '../model.js';

export type Proto = (typeof PROTO)[keyof typeof PROTO];

export interface Frontend {
  ip: string;
  port: number;
  proto: Proto;
}

export interface BackendAddr {
  ip: string;
  port: number;
  proto: Proto;
}

export interface DesiredService {
  fe: Frontend;
  /** "namespace/name:port-name" for humans */
  name: string;
  backends: BackendAddr[];
}

const ipNum = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);

export const feKey = (f: Frontend): string => `${f.ip}:${f.port}/${f.proto}`;
/**
 * A backend address as one number (IPv4 · port · TCP/UDP, 49 bits): map keys
 * for 100,000 backends cost a fraction of what string keys do.
 */
export const beKey = (b: BackendAddr): number => ipNum(b.ip) * 131072 + b.port * 2 + (b.proto === PROTO.UDP ? 1 : 0);

const cmpAddr = (a: BackendAddr, b: BackendAddr) => ipNum(a.ip) - ipNum(b.ip) || a.port - b.port || a.proto - b.proto;

/**
 * Ready, non-terminating endpoints of every service port. A port is resolved
 * through the endpoint's (EndpointSlice's) port of the same name; without
 * one, a numeric targetPort (or the service port) is used; a named targetPort
 * the endpoint does not list cannot be resolved and that endpoint is left
 * out (reported in `unresolved`).
 */
export function desiredServices(snap: Pick<Snapshot, 'services'>): { services: Map<string, DesiredService>; unresolved: string[] } {
  const services = new Map<string, DesiredService>();
  const unresolved: string[] = [];
  for (const svc of snap.services) {
    for (const sp of svc.ports) {
      const proto = PROTO[sp.protocol];
      const fe: Frontend = { ip: svc.clusterIP, port: sp.port, proto };
      const seen = new Set<number>();
      const backends: BackendAddr[] = [];
      for (const e of svc.endpoints) {
        if (!e.ready || e.terminating) continue; // never chosen for new connections
        const port = resolvePort(sp, e);
        if (port === undefined) {
          unresolved.push(`${svc.namespace}/${svc.name}:${sp.name ?? sp.port} → ${e.ip}`);
          continue;
        }
        const b = { ip: e.ip, port, proto };
        if (!seen.has(beKey(b))) backends.push(b);
        seen.add(beKey(b));
      }
      backends.sort(cmpAddr);
      services.set(feKey(fe), { fe, name: `${svc.namespace}/${svc.name}:${sp.name ?? sp.port}`, backends });
    }
  }
  return { services, unresolved };
}

function resolvePort(sp: Service['ports'][number], e: Service['endpoints'][number]): number | undefined {
  const named = e.ports.find((p) => (p.name ?? '') === (sp.name ?? '') && p.protocol === sp.protocol);
  if (named) return named.port;
  if (typeof sp.targetPort === 'number') return sp.targetPort;
  if (sp.targetPort === undefined) return sp.port;
  return undefined;
}
