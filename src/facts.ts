// Node facts: what the node itself says about each local pod (host veth
// ifindex, gateway MAC, pod MAC). I/O lives here, at the front of the
// pipeline; desired.ts only reads the result.
import * as ipr from '../loader/ip.js';
import { podKey, type Snapshot } from './model.js';

export interface PodFacts {
  ifindex: number;
  /** MAC of the pod's eth0. */
  mac: string;
  /** MAC the pod uses as its gateway: the host veth, or the bridge it is enslaved to. */
  gwMac: string;
}

export interface NodeFacts {
  pods: Map<string, PodFacts>;
  /** Pods whose facts could not be found yet, with why (retried, never guessed). */
  missing: Map<string, string>;
}

export async function gatherFacts(snap: Snapshot): Promise<NodeFacts> {
  const out: NodeFacts = { pods: new Map(), missing: new Map() };
  const hostLinks = await ipr.links();
  const byName = new Map(hostLinks.map((l) => [l.ifname, l]));
  for (const p of snap.pods) {
    if (p.hostNetwork || !p.ip || !p.hostInterface) continue; // never endpoints; desired.ts says why
    const k = podKey(p);
    const host = byName.get(p.hostInterface);
    if (!host) {
      out.missing.set(k, `host interface ${p.hostInterface} not found`);
      continue;
    }
    const gw = host.master ? byName.get(host.master)?.address : host.address;
    if (!gw) {
      out.missing.set(k, `no MAC for gateway of ${p.hostInterface}`);
      continue;
    }
    let mac = p.mac;
    if (!mac && p.netns) {
      try {
        mac = (await ipr.link(p.podInterface, p.netns))?.address;
      } catch {
        mac = undefined;
      }
    }
    if (!mac) {
      const n = (await ipr.neighbors(p.hostInterface)).find((x) => x.dst === p.ip && x.lladdr);
      mac = n?.lladdr;
    }
    if (!mac) {
      out.missing.set(k, `MAC of ${p.ip} unknown (no netns, no neighbour entry on ${p.hostInterface})`);
      continue;
    }
    out.pods.set(k, { ifindex: host.ifindex, mac: mac.toLowerCase(), gwMac: gw.toLowerCase() });
  }
  return out;
}
