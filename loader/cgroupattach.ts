// Socket programs on pod cgroups, and their ledger pw_cgroups: which pod
// cgroups podwarp attached to and with which hooks. Multi-attach: other
// tools' programs on the same cgroup keep running and are never touched.
import fs from 'node:fs';
import { CGROUP_HOOKS } from '../abi/schema.js';
import * as bpftool from './bpftool.js';
import { cgroupPath } from '../host/cgroup.js';
import type { Maps } from './maps.js';
import type { Pins } from './pins.js';

/** Cgroup hook → ledger bit → program. */
export const HOOK_PROGS: [bpftool.CgroupHook, number, string][] = [
  ['sock_ops', CGROUP_HOOKS.SOCK_OPS, 'pw_sockops'],
  ['connect4', CGROUP_HOOKS.CONNECT4, 'pw_proxy_conn4'],
  ['connect6', CGROUP_HOOKS.CONNECT4, 'pw_proxy_conn6'],
  ['getpeername4', CGROUP_HOOKS.CONNECT4, 'pw_proxy_peer4'],
  ['getpeername6', CGROUP_HOOKS.CONNECT4, 'pw_proxy_peer6'],
  ['getsockopt', CGROUP_HOOKS.GETSOCKOPT, 'pw_proxy_odst'],
  ['connect4', CGROUP_HOOKS.LB, 'pw_lb_conn4'],
  ['sendmsg4', CGROUP_HOOKS.LB, 'pw_lb_send4'],
  ['recvmsg4', CGROUP_HOOKS.LB, 'pw_lb_recv4'],
  ['getpeername4', CGROUP_HOOKS.LB, 'pw_lb_peer4'],
  // AF_INET6 sockets talking to v4-mapped addresses (a v4-mapped sendmsg runs sendmsg4: no sendmsg6 program)
  ['connect6', CGROUP_HOOKS.LB, 'pw_lb_conn6'],
  ['recvmsg6', CGROUP_HOOKS.LB, 'pw_lb_recv6'],
  ['getpeername6', CGROUP_HOOKS.LB, 'pw_lb_peer6'],
];

export interface CgroupRecord {
  id: bigint;
  /** Below the cgroup2 mount. */
  path: string;
  hooks: number;
}

export interface CgroupStatus extends CgroupRecord {
  present: boolean;
  /** podwarp programs attached to the cgroup now */
  attached: string[];
  /** ledger bits whose programs are all attached now */
  liveHooks: number;
}

export class CgroupAttachments {
  constructor(
    private readonly pins: Pins,
    private readonly maps: Maps,
  ) {}

  /** The ledger. */
  async list(): Promise<CgroupRecord[]> {
    if (!this.pins.hasMap('pw_cgroups')) return [];
    return (await this.maps.dump('pw_cgroups')).map((e) => ({
      id: BigInt(e.key.id as bigint),
      path: String(e.value.path),
      hooks: Number(e.value.hooks),
    }));
  }

  /**
   * Makes exactly `hooks` of podwarp's programs attached to the pod cgroup
   * `rel` (a path below the cgroup2 mount), current versions only.
   */
  async set(rel: string, hooks: number): Promise<void> {
    const abs = cgroupPath(rel);
    if (!fs.existsSync(abs)) {
      // the pod (and its attachments) are gone: forget it
      const gone = (await this.list()).filter((c) => c.path === rel).map((c) => ({ id: c.id }));
      await this.maps.write('pw_cgroups', [], gone);
      if (hooks !== 0) throw new Error(`cgroup ${rel} does not exist`);
      return;
    }
    const id = BigInt(fs.statSync(abs, { bigint: true }).ino);
    const rec = { id, path: rel, hooks };
    // the ledger first: a crash in between leaves a record, never an untracked attachment
    const prev = (await this.list()).find((c) => c.id === id);
    if (hooks !== 0 || prev)
      await this.maps.write('pw_cgroups', [{ key: { id }, value: { hooks: hooks | (prev?.hooks ?? 0), path: rel } }], []);
    await this.sync(rec, hooks);
    if (hooks === 0) await this.maps.write('pw_cgroups', [], prev ? [{ id }] : []);
    else await this.maps.write('pw_cgroups', [{ key: { id }, value: { hooks, path: rel } }], []);
  }

  /** After a (re)load: every recorded cgroup moves to the new programs (attach new, then detach old). */
  async reattach(): Promise<void> {
    for (const rec of await this.list()) await this.sync(rec, rec.hooks);
  }

  /** Detaches every recorded cgroup; a cgroup that vanished meanwhile is just forgotten. */
  async detachAll(): Promise<string[]> {
    const done: string[] = [];
    for (const c of await this.list()) {
      await this.set(c.path, 0).catch(async (e: unknown) => {
        if (fs.existsSync(cgroupPath(c.path))) throw e;
        await this.maps.write('pw_cgroups', [], [{ id: c.id }]);
      });
      done.push(c.path);
    }
    return done;
  }

  private async sync(rec: CgroupRecord, hooks: number): Promise<void> {
    const abs = cgroupPath(rec.path);
    if (!fs.existsSync(abs)) return; // pod gone: its attachments went with it
    const attached = await bpftool.cgroupShow(abs);
    // per hook: the new program attached before the old one goes (no gap), all in one bpftool run
    const ops: bpftool.CgroupOp[] = [];
    for (const [hook, bit, prog] of HOOK_PROGS) {
      const cur = this.pins.hasProg(prog) ? await this.maps.progId(prog) : undefined;
      const ours = attached.filter((a) => a.attach_type === bpftool.CGROUP_ATTACH[hook].shown && a.name === prog);
      if (hooks & bit && cur !== undefined && !ours.some((a) => a.id === cur))
        ops.push({ op: 'attach', hook, progPin: this.pins.prog(prog) });
      for (const a of ours) if (!(hooks & bit) || a.id !== cur) ops.push({ op: 'detach', hook, progId: a.id });
    }
    await bpftool.cgroupApply(abs, ops);
  }

  /** How bpftool lists a cgroup's programs on this kernel, once it has listed one ('query', or 'effective' before 6.0). */
  listingPath(): bpftool.CgroupListing | undefined {
    return bpftool.cgroupListingPath();
  }

  /** Ledger entries checked against what each cgroup really has attached. */
  async status(): Promise<CgroupStatus[]> {
    const out: CgroupStatus[] = [];
    for (const rec of await this.list()) {
      const abs = cgroupPath(rec.path);
      const present = fs.existsSync(abs);
      const live = present ? await bpftool.cgroupShow(abs) : [];
      const attached = HOOK_PROGS.filter(([hook, , prog]) =>
        live.some((a) => a.name === prog && a.attach_type === bpftool.CGROUP_ATTACH[hook].shown),
      ).map(([, , prog]) => prog);
      // a ledger bit counts as attached when every program of it is
      const liveHooks = [...new Set(HOOK_PROGS.map(([, bit]) => bit))]
        .filter((bit) => HOOK_PROGS.filter(([, b]) => b === bit).every(([, , prog]) => attached.includes(prog)))
        .reduce((a, b) => a | b, 0);
      out.push({ ...rec, present, attached, liveHooks });
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }
}
