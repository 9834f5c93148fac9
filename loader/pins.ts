// Where podwarp's kernel objects live in bpffs: one directory per datapath
// (default "podwarp"; tests and the demo use their own names).
//
//   <bpffs>/<name>/maps/<map>    one pin per map of abi/schema.ts
//   <bpffs>/<name>/progs/<prog>  one pin per program
//   <bpffs>/<name>/iter/<iter>   bpf_iter links: reading the pin runs the iterator
//   <bpffs>/<name>/links/<fn>    tracing links (fexit on kernel function <fn>)
import fs from 'node:fs';
import path from 'node:path';
import { MAPS } from '../abi/schema.js';
import { ensureBpffs } from '../host/mounts.js';

/** The tc program; its pin decides whether a datapath counts as loaded. */
export const TC_PROG = 'pw_tc_egress';
/** The sk_msg program attached to pw_sock. */
export const MSG_PROG = 'pw_sk_msg';
/** The flow-control read counter (bpf/trace/), attached by a link under links/. */
export const READ_PROG = 'pw_read_acct';

export class Pins {
  readonly mapsDir: string;
  readonly progsDir: string;
  readonly iterDir: string;
  readonly linksDir: string;

  constructor(readonly root: string) {
    this.mapsDir = path.join(root, 'maps');
    this.progsDir = path.join(root, 'progs');
    this.iterDir = path.join(root, 'iter');
    this.linksDir = path.join(root, 'links');
  }

  /** name: directory under the bpffs mount (default $PODWARP_PIN_NAME or "podwarp"). */
  static async open(name = process.env.PODWARP_PIN_NAME ?? 'podwarp'): Promise<Pins> {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      throw new Error(`invalid pin directory name "${name}" (bpffs forbids dots; use letters, digits, _ and -)`);
    }
    return new Pins(path.join(await ensureBpffs(), name));
  }

  map(name: string): string {
    return path.join(this.mapsDir, name);
  }

  prog(name: string): string {
    return path.join(this.progsDir, name);
  }

  iter(name: string): string {
    return path.join(this.iterDir, name);
  }

  link(name: string): string {
    return path.join(this.linksDir, name);
  }

  /** Pinned tracing links: the kernel functions hooked. */
  links(): string[] {
    return fs.existsSync(this.linksDir) ? fs.readdirSync(this.linksDir).filter((l) => !l.endsWith('_new')) : [];
  }

  hasMap(name: string): boolean {
    return fs.existsSync(this.map(name));
  }

  hasProg(name: string): boolean {
    return fs.existsSync(this.prog(name));
  }

  /** Every map of the schema and the tc program are pinned. */
  isLoaded(): boolean {
    return MAPS.every((m) => this.hasMap(m.name)) && this.hasProg(TC_PROG);
  }

  /** Pinned program names. */
  progs(): string[] {
    return fs.existsSync(this.progsDir) ? fs.readdirSync(this.progsDir) : [];
  }
}
