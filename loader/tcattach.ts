// The tc program on pod veths, and its ledger pw_ifaces: which devices
// podwarp attached to and whether it created their clsact qdisc, so detach and
// uninstall remove exactly what podwarp made.
import { IFACE_FLAGS } from '../abi/schema.js';
import * as ipr from '../host/ip.js';
import { log } from '../host/log.js';
import type { Maps } from './maps.js';
import { TC_PROG, type Pins } from './pins.js';
import * as tc from '../host/tc.js';

/** Our cls_bpf filter identity on every device: prio 49, handle 0x7077 ("pw"). */
export const TC_PRIO = 49;
export const TC_HANDLE = 0x7077;

export interface IfaceRecord {
  ifindex: number;
  name: string;
  flags: number;
}

export interface AttachmentStatus extends IfaceRecord {
  /** Device still exists with the recorded name. */
  present: boolean;
  /** Our filter is on the device. */
  attached: boolean;
  progId?: number;
  progName?: string;
}

export class TcAttachments {
  constructor(
    private readonly pins: Pins,
    private readonly maps: Maps,
  ) {}

  /** The ledger. */
  async list(): Promise<IfaceRecord[]> {
    if (!this.pins.hasMap('pw_ifaces')) return [];
    return (await this.maps.dump('pw_ifaces')).map((e) => ({
      ifindex: Number(e.key.ifindex),
      name: String(e.value.name),
      flags: Number(e.value.flags),
    }));
  }

  /** Attaches the tc program to ingress of `dev` (idempotent) and records it. */
  async attach(dev: string): Promise<void> {
    const l = await ipr.link(dev);
    if (!l) throw new Error(`attach: no interface ${dev}`);
    const known = (await this.list()).find((r) => r.ifindex === l.ifindex && r.name === dev);
    const created = await tc.ensureClsact(dev);
    const flags = (known?.flags ?? 0) | (created ? IFACE_FLAGS.QDISC_OWNED : 0);
    // record before attaching: a crash in between leaves a ledger entry, never an untracked filter
    await this.maps.write('pw_ifaces', [{ key: { ifindex: l.ifindex }, value: { flags, name: dev } }], []);
    await tc.replaceBpfFilter(dev, 'ingress', TC_PRIO, TC_HANDLE, this.pins.prog(TC_PROG));
  }

  /** Removes our filter (and the qdisc if we created it and it is now empty), and the ledger entry. */
  async detach(rec: IfaceRecord): Promise<void> {
    const l = await ipr.link(rec.name);
    if (l && l.ifindex === rec.ifindex && (await tc.hasClsact(rec.name))) {
      if (tc.findFilter(await tc.listFilters(rec.name, 'ingress'), TC_PRIO, TC_HANDLE)) {
        await tc.deleteBpfFilter(rec.name, 'ingress', TC_PRIO, TC_HANDLE);
      }
      if (rec.flags & IFACE_FLAGS.QDISC_OWNED) {
        const rest = [...(await tc.listFilters(rec.name, 'ingress')), ...(await tc.listFilters(rec.name, 'egress'))];
        if (rest.length === 0) await tc.deleteClsact(rec.name);
        else log.info({ dev: rec.name }, 'clsact qdisc kept: other filters were added to it');
      }
    }
    await this.maps.write('pw_ifaces', [], [{ ifindex: rec.ifindex }]);
  }

  /** After a (re)load: every recorded attachment switched to the new program (atomic `tc filter replace`). */
  async reattach(): Promise<void> {
    for (const rec of await this.list()) {
      const l = await ipr.link(rec.name);
      if (l && l.ifindex === rec.ifindex) await tc.replaceBpfFilter(rec.name, 'ingress', TC_PRIO, TC_HANDLE, this.pins.prog(TC_PROG));
    }
  }

  /** Ledger entries checked against the live devices and filters. */
  async status(): Promise<AttachmentStatus[]> {
    const recs = await this.list();
    const live = new Map((await ipr.links()).map((l) => [l.ifindex, l]));
    const out: AttachmentStatus[] = [];
    for (const r of recs) {
      const l = live.get(r.ifindex);
      const present = !!l && l.ifname === r.name;
      const f = present ? tc.findFilter(await tc.listFilters(r.name, 'ingress'), TC_PRIO, TC_HANDLE) : undefined;
      out.push({ ...r, present, attached: !!f, progId: f?.options?.prog?.id, progName: f?.options?.prog?.name });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Filters at our prio/handle that run one of `progIds` but are missing from the ledger: removed. */
  async sweep(progIds: Set<number>): Promise<string[]> {
    const swept: string[] = [];
    if (progIds.size === 0) return swept;
    for (const l of await ipr.links()) {
      if (!(await tc.hasClsact(l.ifname).catch(() => false))) continue;
      const f = tc.findFilter(await tc.listFilters(l.ifname, 'ingress'), TC_PRIO, TC_HANDLE);
      if (f?.options?.prog && progIds.has(f.options.prog.id)) {
        await tc.deleteBpfFilter(l.ifname, 'ingress', TC_PRIO, TC_HANDLE);
        swept.push(l.ifname);
      }
    }
    return swept;
  }
}
