// bpftool wrapper: always -j, every answer validated with ajv before use.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToolError } from '../host/errors.js';
import { run } from '../host/exec.js';
import { checks, type SchemaCheck } from '../host/validate.js';

/** statfs f_type of a bpffs. */
const BPF_FS_MAGIC = 0xcafe4a11;

const validator = checks({ allErrors: true, allowUnionTypes: true });

async function bpftoolJson<T>(what: string, args: string[], check: SchemaCheck<T>, input?: string): Promise<T> {
  const argv = ['bpftool', '-j', ...args];
  const r = await run(what, argv, { input });
  let parsed: unknown;
  try {
    parsed = r.stdout.trim() === '' ? null : JSON.parse(r.stdout);
  } catch (e) {
    throw new ToolError(`${what}: bpftool printed invalid JSON`, argv, r.exitCode, r.stdout.slice(0, 300));
  }
  if (!check(parsed)) {
    throw new ToolError(`${what}: unexpected bpftool JSON (${check.text()})`, argv, r.exitCode, r.stdout.slice(0, 300));
  }
  return parsed;
}

const hexBytes = { type: 'array', items: { type: 'string', pattern: '^0x[0-9a-f]{2}$' } };

export interface RawEntry {
  key: string[];
  value?: string[];
  values?: { cpu: number; value: string[] }[];
}
const dumpSchema = validator<(RawEntry | { key: string[]; value: { error: string } })[] | null>({
  anyOf: [
    { type: 'null' },
    {
      type: 'array',
      items: {
        type: 'object',
        required: ['key'],
        properties: {
          key: hexBytes,
          // an entry deleted between bpftool's get-next-key and lookup comes as {"error": …}
          value: { anyOf: [hexBytes, { type: 'object', required: ['error'], properties: { error: { type: 'string' } } }] },
          values: {
            type: 'array',
            items: { type: 'object', required: ['cpu', 'value'], properties: { cpu: { type: 'integer' }, value: hexBytes } },
          },
        },
      },
    },
  ],
});

export interface MapInfo {
  id: number;
  type: string;
  name?: string;
  bytes_key: number;
  bytes_value: number;
  max_entries: number;
}
const mapInfoProps = {
  id: { type: 'integer' },
  type: { type: 'string' },
  name: { type: 'string' },
  bytes_key: { type: 'integer' },
  bytes_value: { type: 'integer' },
  max_entries: { type: 'integer' },
};
const mapInfoSchema = validator<MapInfo>({
  type: 'object',
  required: ['id', 'type', 'bytes_key', 'bytes_value', 'max_entries'],
  properties: mapInfoProps,
});

export interface ProgInfo {
  id: number;
  type: string;
  name?: string;
  tag: string;
  map_ids?: number[];
  pinned?: string[];
}
const progInfoItem = {
  type: 'object',
  required: ['id', 'type', 'tag'],
  properties: {
    id: { type: 'integer' },
    type: { type: 'string' },
    name: { type: 'string' },
    tag: { type: 'string' },
    map_ids: { type: 'array', items: { type: 'integer' } },
    pinned: { type: 'array', items: { type: 'string' } },
  },
};
const progInfoSchema = validator<ProgInfo>(progInfoItem);

/** Dump a pinned map: raw key/value bytes (per-CPU maps give one value per CPU). */
export async function mapDump(pin: string): Promise<RawEntry[]> {
  const all = (await bpftoolJson('dump map', ['map', 'dump', 'pinned', pin], dumpSchema)) ?? [];
  // entries that vanished while bpftool walked the map are not there any more
  return all.filter((e): e is RawEntry => !(e.value && !Array.isArray(e.value)));
}

/** `bpftool map create`: a map without BTF (user space and the programs use it by layout), pinned at `pin`. */
export async function mapCreate(
  pin: string,
  m: { type: string; key: number; value: number; entries: number; name: string },
): Promise<void> {
  const args = [
    'map',
    'create',
    pin,
    'type',
    m.type,
    'key',
    String(m.key),
    'value',
    String(m.value),
    'entries',
    String(m.entries),
    'name',
    m.name,
  ];
  await run(`create map ${m.name}`, ['bpftool', ...args]);
}

export async function mapShow(pin: string): Promise<MapInfo> {
  return bpftoolJson('show map', ['map', 'show', 'pinned', pin], mapInfoSchema);
}

export async function progShow(pin: string): Promise<ProgInfo> {
  return bpftoolJson('show program', ['prog', 'show', 'pinned', pin], progInfoSchema);
}

/**
 * Whether the program with this id is still loaded (`bpftool prog show id`,
 * BPF_PROG_GET_FD_BY_ID): true, false (ENOENT: freed), or undefined when the
 * kernel does not say (it hides other processes' objects, EPERM). It needs
 * no listing of every program, which some kernels refuse (BPF_PROG_GET_NEXT_ID).
 */
export async function progAlive(id: number): Promise<boolean | undefined> {
  const r = await run('show program', ['bpftool', 'prog', 'show', 'id', String(id)], { reject: false });
  if (r.exitCode === 0) return true;
  return /No such file or directory|can't get prog by id \(\d+\): No such/.test(r.stderr) ? false : undefined;
}

/**
 * `bpftool prog loadall`: pins every program of OBJ under progDir; maps named
 * in `reuse` are taken from their pins instead of being created; the others
 * are pinned under pinMapsDir.
 */
export async function progLoadAll(obj: string, progDir: string, reuse: { name: string; pin: string }[], pinMapsDir: string): Promise<void> {
  // bpftool mounts a bpffs of its own on the parent of a pin path that is not on bpffs (even on `/`): refuse instead
  for (const d of [progDir, pinMapsDir]) {
    const parent = path.dirname(path.resolve(d));
    if (fs.statfsSync(parent).type !== BPF_FS_MAGIC) throw new Error(`refusing to pin under ${d}: ${parent} is not on a bpffs`);
  }
  const args = ['prog', 'loadall', obj, progDir];
  for (const r of reuse) args.push('map', 'name', r.name, 'pinned', r.pin);
  args.push('pinmaps', pinMapsDir);
  await run('load programs', ['bpftool', ...args]);
}

/** One bpftool batch command line (words separated by single spaces, none needing quotes). */
export type BatchLine = string;

/**
 * Map updates/deletes in one bpftool process (`bpftool batch file -`),
 * executed in order: a caller relying on ordering (services: backends, then
 * slots, then masters, then prunes) gets it within one call.
 */
export async function batch(lines: Iterable<BatchLine>): Promise<void> {
  const CHUNK = 5000;
  let chunk: string[] = [];
  const flush = async () => {
    if (!chunk.length) return;
    const text = chunk.join('\n') + '\n';
    const n = chunk.length;
    chunk = [];
    await run(`apply ${n} map operations`, ['bpftool', 'batch', 'file', '-'], { input: text });
  };
  for (const l of lines) {
    if (/['"\\\n\t]| {2}|^ | $/.test(l) || l === '') throw new Error(`batch line "${l}" needs quoting`);
    chunk.push(l);
    if (chunk.length >= CHUNK) await flush();
  }
  await flush();
}

export function updateLine(pin: string, key: Buffer, value: Buffer, flag: 'any' | 'exist' | 'noexist' = 'any'): BatchLine {
  return `map update pinned ${pin} key hex ${hexWords(key)} value hex ${hexWords(value)} ${flag}`;
}

export function deleteLine(pin: string, key: Buffer): BatchLine {
  return `map delete pinned ${pin} key hex ${hexWords(key)}`;
}

function hexWords(b: Buffer): string {
  return b.toString('hex').replace(/(..)(?!$)/g, '$1 ');
}

// ---- BTF (for the schema test) ----

export interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
  vars?: { type_id: number; offset: number; size: number }[];
}
const btfSchema = validator<{ types: BtfType[] }>({
  type: 'object',
  required: ['types'],
  properties: {
    types: { type: 'array', items: { type: 'object', required: ['id', 'kind', 'name'] } },
  },
});

export async function btfDumpFile(obj: string): Promise<BtfType[]> {
  return (await bpftoolJson('dump BTF', ['btf', 'dump', 'file', obj], btfSchema)).types;
}

// ---- feature probes ----

export interface FeatureProbe {
  helpers: Record<string, string[]>;
  mapTypes: Record<string, boolean>;
}
/** `bpftool feature probe kernel -j`, the parts podwarp reads: have_<t>_prog_type, have_<t>_map_type, <t>_available_helpers. */
export interface KernelFeatures {
  program_types?: Record<string, boolean>;
  map_types?: Record<string, boolean>;
  helpers?: Record<string, string[]>;
}
const featureSchema = validator<KernelFeatures>({
  type: 'object',
  properties: {
    program_types: { type: 'object', additionalProperties: { type: 'boolean' } },
    map_types: { type: 'object', additionalProperties: { type: 'boolean' } },
    helpers: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } } },
  },
});

export async function featureProbeRaw(): Promise<KernelFeatures> {
  return bpftoolJson('probe kernel features', ['feature', 'probe', 'kernel'], featureSchema);
}

/** Whether this bpftool knows tcx attachments (`bpftool net help` names tcx_ingress, tcx_egress). */
export async function knowsTcx(): Promise<boolean> {
  const r = await run('bpftool net help', ['bpftool', 'net', 'help'], { reject: false });
  return /tcx_(ingress|egress)/.test(r.stdout + r.stderr);
}

export async function featureProbeKernel(): Promise<FeatureProbe> {
  const j = await featureProbeRaw();
  const mapTypes: Record<string, boolean> = {};
  for (const [k, v] of Object.entries(j.map_types ?? {})) mapTypes[k] = v === true;
  return { helpers: j.helpers ?? {}, mapTypes };
}

// ---- cgroup attachments ----

export interface CgroupProg {
  id: number;
  attach_type: string;
  attach_flags?: string;
  name?: string;
}
const cgroupShowSchema = validator<CgroupProg[] | null>({
  anyOf: [
    { type: 'null' },
    {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'attach_type'],
        properties: { id: { type: 'integer' }, attach_type: { type: 'string' }, name: { type: 'string' } },
      },
    },
  ],
});

/**
 * How cgroup attachments are listed, learnt on the first listing:
 * - 'query': `bpftool cgroup show CG` (BPF_PROG_QUERY with attach flags);
 * - 'effective': `bpftool cgroup show CG effective` minus the parent's
 *   effective list. bpftool ≥ 7.0 passes prog_attach_flags to BPF_PROG_QUERY,
 *   which kernels before 6.0 reject with EINVAL (exit 255, output `[]`) as
 *   soon as a program is attached; the effective query has no such field.
 * `podwarp status` shows which one is in use.
 */
export type CgroupListing = 'query' | 'effective';
let cgroupListing: CgroupListing | undefined;
export function cgroupListingPath(): CgroupListing | undefined {
  return cgroupListing;
}

/** Programs attached to one cgroup (absolute path), inherited ones not included. */
export async function cgroupShow(cgroupPath: string): Promise<CgroupProg[]> {
  if (cgroupListing !== 'effective') {
    let plainError: unknown;
    try {
      const r = (await bpftoolJson(`list programs of ${cgroupPath}`, ['cgroup', 'show', cgroupPath], cgroupShowSchema)) ?? [];
      cgroupListing = 'query';
      return r;
    } catch (e) {
      if (!(e instanceof ToolError) || e.exitCode === undefined) throw e;
      plainError = e;
    }
    // the plain query failed on a cgroup the effective query can list: the
    // kernel rejects the attach-flags query; use the effective one from now on
    const r = await cgroupShowEffective(cgroupPath).catch(() => undefined);
    if (!r) throw plainError;
    cgroupListing = 'effective';
    return r;
  }
  return cgroupShowEffective(cgroupPath);
}

async function effective(cgroupPath: string): Promise<CgroupProg[]> {
  return (
    (await bpftoolJson(`list effective programs of ${cgroupPath}`, ['cgroup', 'show', cgroupPath, 'effective'], cgroupShowSchema)) ?? []
  );
}

/**
 * The effective list holds the cgroup's own programs and every program
 * inherited from its ancestors (multi-attach): the parent's effective list is
 * exactly the inherited part, so the own programs are the difference (as a
 * multiset of attach type and id: one program may sit on both).
 */
async function cgroupShowEffective(cgroupPath: string): Promise<CgroupProg[]> {
  const all = await effective(cgroupPath);
  const parent = path.dirname(cgroupPath);
  if (parent === cgroupPath || !fs.existsSync(path.join(parent, 'cgroup.procs'))) return all;
  return ownPrograms(all, await effective(parent));
}

/** A cgroup's effective programs minus its parent's effective ones (multiset, by attach type and id). */
export function ownPrograms(effectiveHere: CgroupProg[], effectiveParent: CgroupProg[]): CgroupProg[] {
  const inherited = new Map<string, number>();
  for (const p of effectiveParent) inherited.set(`${p.attach_type}/${p.id}`, (inherited.get(`${p.attach_type}/${p.id}`) ?? 0) + 1);
  return effectiveHere.filter((p) => {
    const k = `${p.attach_type}/${p.id}`;
    const n = inherited.get(k) ?? 0;
    if (n > 0) inherited.set(k, n - 1);
    return n === 0;
  });
}

/** bpftool attach-type word for each hook, and how `cgroup show` names it. */
export const CGROUP_ATTACH = {
  sock_ops: { word: 'sock_ops', shown: 'cgroup_sock_ops' },
  connect4: { word: 'connect4', shown: 'cgroup_inet4_connect' },
  connect6: { word: 'connect6', shown: 'cgroup_inet6_connect' },
  getsockopt: { word: 'getsockopt', shown: 'cgroup_getsockopt' },
  sendmsg4: { word: 'sendmsg4', shown: 'cgroup_udp4_sendmsg' },
  recvmsg4: { word: 'recvmsg4', shown: 'cgroup_udp4_recvmsg' },
  getpeername4: { word: 'getpeername4', shown: 'cgroup_inet4_getpeername' },
  recvmsg6: { word: 'recvmsg6', shown: 'cgroup_udp6_recvmsg' },
  getpeername6: { word: 'getpeername6', shown: 'cgroup_inet6_getpeername' },
} as const;
export type CgroupHook = keyof typeof CGROUP_ATTACH;

/** One attach (multi: other tools' programs on the cgroup stay and keep running) or detach on a cgroup. */
export type CgroupOp = { op: 'attach'; hook: CgroupHook; progPin: string } | { op: 'detach'; hook: CgroupHook; progId: number };

function cgroupOpArgs(cgroupPath: string, o: CgroupOp): string[] {
  const word = CGROUP_ATTACH[o.hook].word;
  return o.op === 'attach'
    ? ['cgroup', 'attach', cgroupPath, word, 'pinned', o.progPin, 'multi']
    : ['cgroup', 'detach', cgroupPath, word, 'id', String(o.progId)];
}

export async function cgroupAttach(cgroupPath: string, hook: CgroupHook, progPin: string): Promise<void> {
  await cgroupApply(cgroupPath, [{ op: 'attach', hook, progPin }]);
}

export async function cgroupDetach(cgroupPath: string, hook: CgroupHook, progId: number): Promise<void> {
  await cgroupApply(cgroupPath, [{ op: 'detach', hook, progId }]);
}

/**
 * Several attaches and detaches, in order, in one bpftool run (`batch`): a
 * pass that switches a pod on or off changes up to 14 hooks, and a process
 * each cost seconds per pod on an emulated kernel. Stops at the first that
 * fails, as one call after another would. A path batch cannot carry
 * unquoted (space, quote, backslash) goes one call at a time.
 */
export async function cgroupApply(cgroupPath: string, ops: CgroupOp[]): Promise<void> {
  const lines = ops.map((o) => cgroupOpArgs(cgroupPath, o));
  if (ops.length < 2 || lines.some((l) => l.some((w) => w === '' || /[\s'"\\]/.test(w)))) {
    for (const [i, o] of ops.entries())
      await run(`${o.op} ${o.hook} ${o.op === 'attach' ? 'to' : 'from'} ${cgroupPath}`, ['bpftool', ...lines[i]!]);
    return;
  }
  const what = ops.map((o) => `${o.op} ${o.hook}`).join(', ');
  await run(`${what} on ${cgroupPath}`, ['bpftool', 'batch', 'file', '-'], { input: lines.map((l) => l.join(' ')).join('\n') + '\n' });
}

/** sk_msg verdict program on a sockhash (replaces the one attached before). */
export async function msgVerdictAttach(progPin: string, mapPin: string): Promise<void> {
  await run('attach sk_msg verdict', ['bpftool', 'prog', 'attach', 'pinned', progPin, 'msg_verdict', 'pinned', mapPin]);
}

export async function msgVerdictDetach(progPin: string, mapPin: string): Promise<void> {
  await run('detach sk_msg verdict', ['bpftool', 'prog', 'detach', 'pinned', progPin, 'msg_verdict', 'pinned', mapPin]);
}

/** Pins a map-element iterator; reading the pin runs it. */
export async function iterPin(obj: string, pin: string, mapPin: string): Promise<void> {
  await run('pin iterator', ['bpftool', 'iter', 'pin', obj, pin, 'map', 'pinned', mapPin]);
}

// ---- BPF_PROG_TEST_RUN (BPF unit tests) ----

export interface ProgRunResult {
  /** The program's return value (tc: TC_ACT_OK 0, TC_ACT_REDIRECT 7, …). */
  retval: number;
  /** The packet after the program ran (tc programs: from the Ethernet header). */
  dataOut: Buffer;
  /** The context after the run (`__sk_buff` for tc), when `ctx` was given. */
  ctxOut?: Buffer;
  /** The kernel's measured run time of one repetition, ns. */
  durationNs: number;
}
const progRunSchema = validator<{ retval: number; duration: number }>({
  type: 'object',
  required: ['retval', 'duration'],
  properties: { retval: { type: 'integer' }, duration: { type: 'integer' } },
});

/**
 * Runs a pinned program once on `data` (and `ctx`, e.g. a `struct __sk_buff`)
 * with BPF_PROG_TEST_RUN (`bpftool prog run`). Program types without test-run
 * support in the kernel (sk_msg, sock_ops, cgroup sock_addr) fail with
 * ENOTSUPP ("Unknown error 524"). Map side effects are real: use a scratch
 * datapath.
 */
export async function progRun(pin: string, data: Buffer, ctx?: Buffer): Promise<ProgRunResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-progrun-'));
  try {
    const f = (n: string) => path.join(dir, n);
    fs.writeFileSync(f('data_in'), data);
    const args = ['prog', 'run', 'pinned', pin, 'data_in', f('data_in'), 'data_out', f('data_out')];
    // room for a program that grows the packet (bpf_skb_adjust_room and the like)
    args.push('data_size_out', String(data.length + 4096));
    if (ctx) {
      fs.writeFileSync(f('ctx_in'), ctx);
      args.push('ctx_in', f('ctx_in'), 'ctx_out', f('ctx_out'), 'ctx_size_out', String(ctx.length));
    }
    args.push('repeat', '1');
    const r = await bpftoolJson(`run program ${path.basename(pin)}`, args, progRunSchema);
    return {
      retval: r.retval,
      dataOut: fs.existsSync(f('data_out')) ? fs.readFileSync(f('data_out')) : Buffer.alloc(0),
      ctxOut: ctx && fs.existsSync(f('ctx_out')) ? fs.readFileSync(f('ctx_out')) : undefined,
      durationNs: r.duration,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
