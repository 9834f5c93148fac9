// plan = diff(desired, actual). Pure. `actual` is read back from the pinned
// maps and the live attachments, never remembered.
import { EP_FLAGS } from '../../abi/schema.js';
import type { DesiredEndpoint, DesiredState, SockConfig } from './desired.js';

export interface ActualEndpoint {
  ip: string;
  ifindex: number;
  flags: number;
  mac: string;
  gwMac: string;
}

export interface ActualIface {
  ifindex: number;
  name: string;
  flags: number;
  /** Device exists with that name. */
  present: boolean;
  /** Our filter is on it. */
  attached: boolean;
}

export interface ActualCgroup {
  path: string;
  /** The cgroup directory still exists. */
  present: boolean;
  /** Ledger bits whose programs are all attached now. */
  hooks: number;
}

export interface ActualState {
  endpoints: Map<string, ActualEndpoint>;
  ifaces: ActualIface[];
  cgroups: ActualCgroup[];
  config?: SockConfig;
}

export interface Plan {
  /** Interfaces to attach (new, or our filter went missing). */
  attach: { name: string; ifindex: number }[];
  upsert: DesiredEndpoint[];
  delete: string[];
  /** Ledger entries to detach (no longer desired, or the device is gone/renamed). */
  detach: ActualIface[];
  /** Pod cgroups whose attached hooks must become exactly `hooks` (0: detach all). */
  cgroups: { path: string; hooks: number }[];
  /** Pod IPs that stop being enabled: their accelerated sockets are drained out of pw_sock. */
  drainIps: string[];
  /** New pw_config value, when it differs. */
  config?: SockConfig;
  /** pw_pod_cgroup as desired (pod IP → cgroup path): apply diffs it against the map (it needs the cgroup ids). */
  podCgroups: Map<string, string>;
  /** pw_lb_client as desired (pod IP → cgroup path), the pods with the socket LB. */
  lbClients: Map<string, string>;
  /**
   * Per pod that desired() enables and that needs any step (its tc filter, its
   * cgroup hooks, its entry): what to do, so that apply can do it pod by pod
   * and write the enabled entry only once the pod's hooks are in place.
   * Derived from attach/cgroups/upsert above (the same items, grouped).
   */
  enable: PodEnable[];
}

export interface PodEnable {
  endpoint: DesiredEndpoint;
  /** Its host veth needs the tc filter. */
  attach?: { name: string; ifindex: number };
  /** Its cgroup hooks must become `hooks`. */
  cgroup?: { path: string; hooks: number };
  /** Its entry differs from pw_endpoints. */
  upsert: boolean;
  /** pw_endpoints holds it enabled now. */
  wasEnabled: boolean;
  /** pw_endpoints already holds exactly this entry, disabled (a pod left off by an earlier pass). */
  heldDisabled: boolean;
  /** Its cgroup is in the ledger (some hooks may be attached). */
  cgroupHooked: boolean;
}

const same = (a: ActualEndpoint, b: DesiredEndpoint) =>
  a.ifindex === b.ifindex && a.flags === b.flags && a.mac === b.mac && a.gwMac === b.gwMac;

export function plan(want: DesiredState, have: ActualState): Plan {
  const p: Plan = {
    attach: [],
    upsert: [],
    delete: [],
    detach: [],
    cgroups: [],
    drainIps: [],
    enable: [],
    podCgroups: want.podCgroups,
    lbClients: want.lbClients,
  };
  // a name can be in the ledger twice (pod recreated, veth name reused): match name and ifindex
  const ledger = new Map(have.ifaces.map((i) => [`${i.name}#${i.ifindex}`, i]));
  for (const [name, ifindex] of want.attach) {
    const cur = ledger.get(`${name}#${ifindex}`);
    if (!cur || !cur.present || !cur.attached) p.attach.push({ name, ifindex });
  }
  for (const i of have.ifaces) {
    const wantIdx = want.attach.get(i.name);
    if (wantIdx === undefined || wantIdx !== i.ifindex || !i.present) p.detach.push(i);
  }
  for (const [ip, e] of want.endpoints) {
    const cur = have.endpoints.get(ip);
    if (!cur || !same(cur, e)) p.upsert.push(e);
  }
  for (const ip of have.endpoints.keys()) if (!want.endpoints.has(ip)) p.delete.push(ip);
  for (const [ip, e] of have.endpoints) {
    if (e.flags & EP_FLAGS.ENABLED && !((want.endpoints.get(ip)?.flags ?? 0) & EP_FLAGS.ENABLED)) p.drainIps.push(ip);
  }
  const haveCg = new Map(have.cgroups.map((c) => [c.path, c]));
  // a vanished cgroup is always re-set: that drops its ledger entry (or reports it, when still wanted)
  for (const [path, hooks] of want.cgroups) {
    const cur = haveCg.get(path);
    if (!cur || !cur.present || cur.hooks !== hooks) p.cgroups.push({ path, hooks });
  }
  for (const [path] of haveCg) if (!want.cgroups.has(path)) p.cgroups.push({ path, hooks: 0 });
  if (!have.config || JSON.stringify(have.config) !== JSON.stringify(want.config)) p.config = want.config;
  const attachBy = new Map(p.attach.map((a) => [`${a.name}#${a.ifindex}`, a]));
  const cgroupBy = new Map(p.cgroups.map((c) => [c.path, c]));
  const upserts = new Set(p.upsert);
  for (const e of want.endpoints.values()) {
    if (!(e.flags & EP_FLAGS.ENABLED)) continue;
    const attach = attachBy.get(`${e.iface}#${e.ifindex}`);
    const cgroup = e.cgroup ? cgroupBy.get(e.cgroup) : undefined;
    const upsert = upserts.has(e);
    if (!attach && !cgroup && !upsert) continue;
    const cur = have.endpoints.get(e.ip);
    const wasEnabled = !!((cur?.flags ?? 0) & EP_FLAGS.ENABLED);
    const heldDisabled = !!cur && cur.flags === 0 && same(cur, { ...e, flags: 0 });
    const cgroupHooked = !!e.cgroup && haveCg.has(e.cgroup);
    p.enable.push({
      endpoint: e,
      ...(attach ? { attach } : {}),
      ...(cgroup ? { cgroup } : {}),
      upsert,
      wasEnabled,
      heldDisabled,
      cgroupHooked,
    });
  }
  return p;
}

export function planSize(p: Plan): number {
  return p.attach.length + p.upsert.length + p.delete.length + p.detach.length + p.cgroups.length + p.drainIps.length + (p.config ? 1 : 0);
}
