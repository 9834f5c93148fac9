// The node lock: one writer per datapath. Every command that writes a pin
// root's maps, programs or attachments (the agent, `podwarp uninstall`) holds
// an exclusive flock(2) on the pin root directory itself, on bpffs. That is
// where every writer of those pins must look anyway (a DaemonSet pod, a
// surge pod of a rolling update, an agent started by hand, an uninstall pod
// all mount the host's bpffs), and the lock covers exactly one pin root: the
// tests' and the demo's datapaths under their own names never wait for the
// node's agent.
//
// Node has no flock API, so a child holds it: `flock` (util-linux) locks the
// directory and runs `cat` with this process' pipe as stdin. The lock is the
// kernel's, on flock's open file: when this process dies, even by SIGKILL,
// the kernel closes the pipe, cat reads EOF and exits, flock exits, and the
// lock goes with its descriptor: a lock is never stale, so there is nothing
// to break by hand. (A native addon could call flock(2) itself;
// podwarp spawns tools rather than binding syscalls, as for bpftool and tc.)
//
// Who holds it comes from the kernel too: /proc/locks names the flock
// process; its parents up to the first that is not our own sh/flock/cat is
// the podwarp process. Nothing is written anywhere for this (bpffs holds no
// regular files), so no record can outlive its writer.
//
// `podwarp uninstall` removes the pin root, so a waiter may be granted the
// lock of a directory that is gone (or was made again by someone else): after
// locking, the locked inode is compared with the path's, and on a mismatch
// the lock is dropped and taken again on the directory that is there now.
import fs from 'node:fs';
import { spawnHolder } from './exec.js';
import { ToolError } from './errors.js';
import { log } from './log.js';

/** The process holding a pin root's lock, as far as this process can see it. */
export interface LockHolder {
  /** Its PID in our PID namespace; undefined when it is in another one (a container without hostPID). */
  pid?: number;
  /** Its command line, shortened. */
  command?: string;
}

/** "pid 1234 (podwarp agent --source kubernetes)". */
export function describeHolder(h: LockHolder | undefined): string {
  if (!h) return 'a process that has just exited';
  if (h.pid === undefined) return 'a process in another PID namespace (its PID is not visible here)';
  return `pid ${h.pid}${h.command ? ` (${h.command})` : ''}`;
}

/** The lock is held by someone else and the caller did not want to wait. */
export class LockBusyError extends Error {
  constructor(
    readonly root: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(`${root} is locked by ${describeHolder(holder)}: another podwarp process writes this datapath`);
    this.name = 'LockBusyError';
  }
}

/** One flock entry of /proc/locks. */
export interface ProcLock {
  pid: number;
  /** Device as /proc/locks prints it: "MAJ:MIN" in hex. */
  dev: string;
  ino: bigint;
  /** A process blocked waiting for the lock ("->" lines), not a holder. */
  waiting: boolean;
}

/** The FLOCK lines of /proc/locks (POSIX and OFD locks are left out). */
export function parseProcLocks(text: string): ProcLock[] {
  const out: ProcLock[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+(->\s+)?FLOCK\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (!m) continue;
    out.push({ pid: Number(m[2]), dev: `${m[3]}:${m[4]}`, ino: BigInt(m[5]!), waiting: !!m[1] });
  }
  return out;
}

/** A st_dev (glibc's encoding) as /proc/locks prints it. */
export function procLocksDev(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  const hex = (n: bigint) => n.toString(16).padStart(2, '0');
  return `${hex(major)}:${hex(minor)}`;
}

const inode = (p: string): { dev: string; ino: bigint } | undefined => {
  try {
    const st = fs.statSync(p, { bigint: true });
    return { dev: procLocksDev(st.dev), ino: st.ino };
  } catch {
    return undefined;
  }
};

const readProcLocks = (): ProcLock[] => parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'));

/** Our own helpers between the flock entry and the podwarp process above them. */
const HELPERS = new Set(['flock', 'sh', 'dash', 'bash', 'cat']);

/** The podwarp process above a flock helper: its first ancestor that is not sh/flock/cat. */
export function ownerOf(pid: number, proc = '/proc'): LockHolder {
  if (pid <= 0) return {};
  let p = pid;
  for (let i = 0; i < 8; i++) {
    let stat: string;
    try {
      stat = fs.readFileSync(`${proc}/${p}/stat`, 'utf8');
    } catch {
      return i === 0 ? {} : { pid: p };
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (!HELPERS.has(comm) || !(ppid > 1)) {
      let command: string | undefined;
      try {
        command = fs.readFileSync(`${proc}/${p}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      } catch {
        command = undefined;
      }
      return { pid: p, command: command ? shorten(command) : comm };
    }
    p = ppid;
  }
  return { pid: p };
}

/** "node --import …/tsx/dist/loader.mjs /x/src/main.ts agent --state f" → "podwarp agent --state f". */
function shorten(cmd: string): string {
  const m = /\S*(?:bin\/podwarp|(?:src|bundle)\/main\.[jt]s)\s+(.*)$/.exec(cmd);
  const s = m ? `podwarp ${m[1]}` : cmd;
  return s.length > 120 ? `${s.slice(0, 117)}…` : s;
}

/** Who holds the lock of `root` now, and how many wait for it (reads /proc/locks; takes nothing). */
export function lockState(root: string): { holder?: LockHolder; waiters: number } | undefined {
  const me = inode(root);
  if (!me) return undefined;
  const mine = readProcLocks().filter((l) => l.dev === me.dev && l.ino === me.ino);
  const held = mine.find((l) => !l.waiting);
  return { holder: held ? ownerOf(held.pid) : undefined, waiters: mine.filter((l) => l.waiting).length };
}

// $0 the directory, $1 what runs under the lock, $2 "wait" or not. Try
// without blocking first, so that the caller hears "busy" before it blocks.
// -o: the command does not inherit the lock's descriptor, so the lock lives
// exactly as long as the flock process (a killed flock frees it at once).
const SCRIPT = `flock -o -n -E 75 "$0" sh -c "$1"
r=$?
[ "$r" -eq 75 ] || exit "$r"
echo busy
[ "$2" = wait ] || exit 75
exec flock -o "$0" sh -c "$1"`;
// under the lock: say so with flock's PID (our parent), then hold it until stdin closes
const HOLD = 'echo locked $PPID; exec cat >/dev/null';

export interface LockOptions {
  /** Wait for the holder to exit (else throw LockBusyError). */
  wait: boolean;
  /** Called when the lock is found busy and this process starts waiting. */
  onWait?: (holder: LockHolder | undefined) => void;
  /** Called if the lock is lost while held (its helper process was killed). */
  onLost?: () => void;
}

export class PinLock {
  private releasing = false;
  private exited = false;

  private constructor(
    readonly root: string,
    private readonly child: ReturnType<typeof spawnHolder>,
    /** This process waited for another holder before it got the lock. */
    readonly waited: boolean,
  ) {}

  /** Takes the lock of `root` (created if missing), waiting for its holder if asked to. */
  static async acquire(root: string, opts: LockOptions): Promise<PinLock> {
    let waited = false;
    for (let attempt = 0; ; attempt++) {
      fs.mkdirSync(root, { recursive: true });
      const argv = ['sh', '-c', SCRIPT, root, HOLD, opts.wait ? 'wait' : 'nowait'];
      const child = spawnHolder(argv);
      // a helper that exited already makes the pipe fail on release: that is fine
      child.stdin.on('error', () => undefined);
      const got = await new Promise<{ flockPid: number } | { busy: true } | { exit: number | undefined; stderr: string }>((resolve) => {
        let buf = '';
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line === 'busy') {
              if (!opts.wait) resolve({ busy: true });
              else {
                waited = true;
                opts.onWait?.(lockState(root)?.holder);
              }
            } else if (line.startsWith('locked ')) resolve({ flockPid: Number(line.slice(7)) });
          }
        });
        void child.then((r) => resolve({ exit: r.exitCode, stderr: err || String(r.message ?? '') }));
      });
      if ('busy' in got) {
        const holder = lockState(root)?.holder;
        await child;
        throw new LockBusyError(root, holder);
      }
      if ('exit' in got) throw new ToolError(`take the lock of ${root}`, argv, got.exit, got.stderr);
      const lock = new PinLock(root, child, waited);
      // the directory we locked must still be the one at `root` (uninstall removes it)
      const locked = readProcLocks().find((l) => l.pid === got.flockPid && !l.waiting);
      const now = inode(root);
      if (locked && now && locked.dev === now.dev && locked.ino === now.ino) {
        lock.watch(opts.onLost);
        return lock;
      }
      log.debug({ root, attempt }, 'locked a pin root that was removed or replaced meanwhile; locking again');
      await lock.release();
      if (attempt >= 20) throw new Error(`cannot lock ${root}: it keeps being removed and made again`);
    }
  }

  private watch(onLost: (() => void) | undefined): void {
    void this.child.then(() => {
      this.exited = true;
      if (!this.releasing) {
        log.error({ root: this.root }, 'the node lock was lost: its flock helper exited');
        onLost?.();
      }
    });
    // the lock must not keep a finished command alive: it goes when this process does
    this.child.unref();
    for (const s of [this.child.stdin, this.child.stdout, this.child.stderr]) (s as unknown as { unref?: () => void }).unref?.();
  }

  get held(): boolean {
    return !this.exited && !this.releasing;
  }

  /** Drops the lock: closing the helper's stdin ends it (and the kernel's lock with it). */
  async release(): Promise<void> {
    if (this.releasing) return;
    this.releasing = true;
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.child;
    clearTimeout(timer);
  }
}
