// Flow control of the sockmap (bpf/pw_sk_msg.c): where pw_sk_msg gets a peer
// socket's unread bytes. A kernel whose psock keeps msg_tot_len needs nothing
// more; otherwise the read counter (bpf/trace/<fn>.c, an fexit program
// attached by a pinned link); with neither, every redirected byte counts as
// unread. Datapath.load() calls loadReadCounter; status reads the pins.
import fs from 'node:fs';
import path from 'node:path';
import { FLOW_CONTROL } from '../abi/schema.js';
import { run } from '../host/exec.js';
import { TRACE_LINK_BIN } from './build.js';
import { NOT_PINNED, TEST_REFUSAL, activePart, joinReasons, kernelReason, refusedPart, testRefused, type Part } from './parts.js';
import { READ_PROG, type Pins } from './pins.js';
import { kernelStructHasMember } from './kbtf.js';

/** Where pw_sk_msg's flow control gets a peer's unread bytes. */
export interface FlowControl {
  /** psock: the kernel's msg_tot_len; fexit: bpf/trace/ counts reads at `fn`; none: bound on all redirected bytes. */
  source: 'psock' | 'fexit' | 'none';
  fn?: string;
  error?: string;
}

const PSOCK_COUNTS = "the kernel's psock msg_tot_len counts unread bytes";

/** Flow control as the pins show it (for a process that did not load: status). */
export function flowControlOf(pins: Pins, kernelHasMsgLen: boolean): FlowControl {
  if (kernelHasMsgLen) return { source: 'psock' };
  const fn = pins.links()[0];
  return fn ? { source: 'fexit', fn } : { source: 'none' };
}

/** The read-counter part as the pins show it (status); the kernel's reason is known only to the loading process. */
export function readCounterOf(pins: Pins, kernelHasMsgLen: boolean): Part {
  const fc = flowControlOf(pins, kernelHasMsgLen);
  return fc.source === 'psock'
    ? { part: 'read-counter', state: 'not-needed', objects: [], effect: PSOCK_COUNTS }
    : fc.source === 'fexit'
      ? activePart('read-counter', [fc.fn!], `fexit on ${fc.fn}`)
      : refusedPart('read-counter', ['bpf/trace/*.o'], NOT_PINNED);
}

/** Flow control as a load left it, from its read-counter part. */
export function flowControlFrom(readCounter: Part): FlowControl {
  return readCounter.state === 'not-needed'
    ? { source: 'psock' }
    : readCounter.state === 'active'
      ? { source: 'fexit', fn: readCounter.objects[0] }
      : { source: 'none', error: readCounter.reason };
}

/** One line for status and doctor. */
export function describeFlowControl(fc: FlowControl): string {
  const bound = `${FLOW_CONTROL.QUEUE_MAX_BYTES >> 20} MiB`;
  if (fc.source === 'psock') return `a redirected flow moves to TCP when its reader holds ${bound} unread (the kernel's psock msg_tot_len)`;
  if (fc.source === 'fexit')
    return `a redirected flow moves to TCP when its reader holds ${bound} unread (reads counted by fexit on ${fc.fn ?? '?'})`;
  return `NO read counter on this kernel (neither psock msg_tot_len nor fentry${fc.error ? `: ${fc.error}` : ''}): every redirected flow moves to TCP after ${bound}`;
}

/**
 * The read counter, where the kernel's psock has no msg_tot_len (or
 * pw_sk_msg's fallback, which does not read it, is loaded: `kernelReadRefused`):
 * the first bpf/trace object whose kernel function the running kernel has (its
 * load fails on the others), attached by a link pinned at links/<fn>. A reload
 * attaches the new program before it replaces the old link's pin (dropping the
 * pin detaches the old one): no read goes uncounted, a few count twice, which
 * lets a queue pass the bound by that much. With neither, pw_sk_msg counts
 * every redirected byte as unread: flows move to TCP after PW_QUEUE_MAX_BYTES
 * (safe, slower); status and doctor say so. `loadObject` is the datapath's
 * (programs pinned, the schema's maps shared).
 */
export async function loadReadCounter(
  pins: Pins,
  traces: string[],
  kernelReadRefused: string | undefined,
  loadObject: (obj: string) => Promise<void>,
): Promise<Part> {
  const objects = traces.map((t) => path.basename(t));
  if (kernelStructHasMember('sk_psock', 'msg_tot_len') && kernelReadRefused === undefined) {
    for (const l of pins.links()) fs.rmSync(pins.link(l), { force: true });
    return { part: 'read-counter', state: 'not-needed', objects: [], effect: PSOCK_COUNTS };
  }
  const errors: [string, string][] = [];
  for (const obj of traces) {
    const fn = path.basename(obj, '.o');
    try {
      if (testRefused('read-counter')) throw new Error(TEST_REFUSAL);
      await loadObject(obj);
      fs.mkdirSync(pins.linksDir, { recursive: true });
      const tmp = pins.link(`${fn}_new`);
      fs.rmSync(tmp, { force: true });
      await run(`attach ${READ_PROG} to ${fn}`, [TRACE_LINK_BIN, pins.prog(READ_PROG), tmp]);
      fs.renameSync(tmp, pins.link(fn));
      for (const other of pins.links()) if (other !== fn) fs.rmSync(pins.link(other), { force: true });
      return activePart('read-counter', [fn], `fexit on ${fn}`);
    } catch (e) {
      errors.push([`${fn}.o`, kernelReason(e)]);
    }
  }
  for (const l of pins.links()) fs.rmSync(pins.link(l), { force: true });
  if (pins.hasProg(READ_PROG)) fs.rmSync(pins.prog(READ_PROG), { force: true });
  const psock = kernelReadRefused === undefined ? [] : [`psock msg_tot_len read: ${kernelReadRefused}`];
  return refusedPart(
    'read-counter',
    objects,
    [...psock, traces.length ? joinReasons(errors) : 'no bpf/trace objects were built'].join('; '),
  );
}
