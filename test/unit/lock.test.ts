// The node lock (host/lock.ts) on a scratch directory: exclusive, the
// waiter hears who holds it, a killed holder releases it, a removed and
// re-made directory is locked again, /proc/locks parsing. No root needed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LockBusyError, PinLock, describeHolder, lockState, parseProcLocks, procLocksDev, type LockHolder } from '../../host/lock.js';
import { spawnHolder } from '../../host/exec.js';

const dirs: string[] = [];
const locks: PinLock[] = [];
const scratch = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pwlock-'));
  dirs.push(d);
  return path.join(d, 'pins');
};

afterEach(async () => {
  for (const l of locks.splice(0)) await l.release();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Polls f() until truthy (events, not sleeps: each poll is a check of state). */
async function until<T>(what: string, f: () => T, ms = 10_000): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('/proc/locks', () => {
  it('parses flock holders and waiters, and encodes st_dev as the kernel prints it', () => {
    const text = [
      '1: FLOCK  ADVISORY  WRITE 26669 00:27:6711873 0 EOF',
      '1: -> FLOCK  ADVISORY  WRITE 26670 00:27:6711873 0 EOF',
      '2: POSIX  ADVISORY  WRITE 812 fd:01:1234 0 EOF',
      '3: OFDLCK ADVISORY  READ -1 00:05:9 0 EOF',
      '4: FLOCK  ADVISORY  WRITE 0 103:02:42 0 EOF',
    ].join('\n');
    expect(parseProcLocks(text)).toEqual([
      { pid: 26669, dev: '00:27', ino: 6711873n, waiting: false },
      { pid: 26670, dev: '00:27', ino: 6711873n, waiting: true },
      { pid: 0, dev: '103:02', ino: 42n, waiting: false },
    ]);
    // glibc's makedev(), as libuv builds st_dev from statx
    const makedev = (maj: bigint, min: bigint) =>
      ((maj & 0xfffn) << 8n) | ((maj & ~0xfffn) << 32n) | (min & 0xffn) | ((min & ~0xffn) << 12n);
    expect(procLocksDev(makedev(0n, 0x27n))).toBe('00:27');
    expect(procLocksDev(makedev(259n, 2n))).toBe('103:02'); // nvme: major 259
    expect(procLocksDev(makedev(0n, 0x123456n))).toBe('00:123456'); // a large minor
    expect(procLocksDev(makedev(0x12345n, 1n))).toBe('12345:01');
  });

  it('names the holder, or says it cannot see it', () => {
    expect(describeHolder({ pid: 42, command: 'podwarp agent --state s.yaml' })).toBe('pid 42 (podwarp agent --state s.yaml)');
    expect(describeHolder({})).toMatch(/another PID namespace/);
  });
});

describe('PinLock', () => {
  it('is exclusive: a second taker without --wait is refused with the holder, with wait it waits and then takes over', async () => {
    const root = scratch();
    const first = await PinLock.acquire(root, { wait: false });
    locks.push(first);
    expect(first.held).toBe(true);
    expect(first.waited).toBe(false);
    expect(fs.statSync(root).isDirectory()).toBe(true);
    // the holder is this process (the flock helper's podwarp ancestor)
    expect(lockState(root)).toEqual({ holder: { pid: process.pid, command: expect.any(String) }, waiters: 0 });

    const refused = await PinLock.acquire(root, { wait: false }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(LockBusyError);
    expect((refused as LockBusyError).holder?.pid).toBe(process.pid);
    expect((refused as Error).message).toContain(`${root} is locked by pid ${process.pid}`);

    const heard: (LockHolder | undefined)[] = [];
    let second: PinLock | undefined;
    const waiting = PinLock.acquire(root, { wait: true, onWait: (h) => heard.push(h) }).then((l) => (second = l));
    await until('the waiter to say so', () => heard.length === 1);
    expect(heard[0]?.pid).toBe(process.pid);
    await until('the waiter blocked in the kernel', () => lockState(root)?.waiters === 1);
    expect(second).toBeUndefined();
    await first.release();
    expect(first.held).toBe(false);
    await waiting;
    locks.push(second!);
    expect(second!.held).toBe(true);
    expect(second!.waited).toBe(true);
    expect(heard).toHaveLength(1);
  });

  it('is released by the kernel when its holder is killed (SIGKILL): a waiter gets it', async () => {
    const root = scratch();
    // the holder: another process holding the lock (flock, its command on a pipe of ours)
    fs.mkdirSync(root, { recursive: true });
    const holder = spawnHolder(['flock', '-o', root, 'cat']);
    holder.stdin.on('error', () => undefined);
    await until('the other holder', () => lockState(root)?.holder);
    let got: PinLock | undefined;
    const waiting = PinLock.acquire(root, { wait: true }).then((l) => (got = l));
    await until('a waiter', () => lockState(root)?.waiters === 1);
    expect(got).toBeUndefined();
    holder.kill('SIGKILL');
    await holder;
    await waiting;
    holder.stdin.end(); // its orphaned cat
    locks.push(got!);
    expect(got!.held).toBe(true);
  });

  it('locks again when the directory it waited on was removed and made again (uninstall meanwhile)', async () => {
    const root = scratch();
    const first = await PinLock.acquire(root, { wait: false });
    let second: PinLock | undefined;
    const waiting = PinLock.acquire(root, { wait: true }).then((l) => (second = l));
    await until('a waiter', () => lockState(root)?.waiters === 1);
    const old = fs.statSync(root).ino;
    fs.rmSync(root, { recursive: true });
    fs.mkdirSync(root);
    expect(fs.statSync(root).ino).not.toBe(old);
    await first.release();
    await waiting;
    locks.push(second!);
    // the lock is on the directory that is there now
    expect(lockState(root)?.holder?.pid).toBe(process.pid);
    expect(await PinLock.acquire(root, { wait: false }).catch((e: unknown) => e)).toBeInstanceOf(LockBusyError);
  });

  it('reports a lost lock (its helper killed) and the lock is free again', async () => {
    const root = scratch();
    let lost = 0;
    const l = await PinLock.acquire(root, { wait: false, onLost: () => lost++ });
    const st = lockState(root)!;
    expect(st.holder?.pid).toBe(process.pid);
    // the flock helper: the only FLOCK holder of this directory
    const proc = fs.readFileSync('/proc/locks', 'utf8');
    const ino = fs.statSync(root).ino;
    const helper = parseProcLocks(proc).find((x) => Number(x.ino) === ino && !x.waiting)!;
    process.kill(helper.pid, 'SIGKILL');
    await until('the loss noticed', () => lost === 1);
    expect(l.held).toBe(false);
    const again = await until('the lock free', () => lockState(root) && !lockState(root)!.holder);
    expect(again).toBeTruthy();
    await l.release();
  });
});
