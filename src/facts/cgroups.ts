// Pod cgroups as the kubelet lays them out on the cgroup2 tree: pod UID →
// pod-level cgroup (below the mount). Plain file-system reads, no process.
// The caller finds the mount (host/mounts.ts cgroup2Root); tests pass a
// fake tree. Recognised (below any prefix, e.g. kind's /kubelet or
// /kubelet.slice/kubelet-kubepods.slice):
//   cgroupfs driver: kubepods/pod<uid>, kubepods/{burstable,besteffort}/pod<uid>
//   systemd driver:  <p>kubepods.slice/<p>kubepods-pod<uid_>.slice,
//                    <p>kubepods.slice/<p>kubepods-burstable.slice/<p>kubepods-burstable-pod<uid_>.slice (besteffort likewise)
import fs from 'node:fs';
import path from 'node:path';

export interface CgroupWalkOptions {
  /** Directory levels below the mount to look at (default 8). */
  maxDepth?: number;
  /** Directories read at most, a bound for huge trees (default 200000). */
  maxDirs?: number;
}

export interface PodCgroupScan {
  /** Pod UID (dashed, lowercase) → pod-level cgroup, relative to the mount, with a leading '/'. */
  pods: Map<string, string>;
  /** UIDs found at more than one place (left out of `pods`: never guessed), with every path. */
  duplicates: Map<string, string[]>;
  /** The walk stopped at maxDirs before it had seen the whole tree. */
  truncated: boolean;
}

const UUID = /^([0-9a-f]{8})[-_]([0-9a-f]{4})[-_]([0-9a-f]{4})[-_]([0-9a-f]{4})[-_]([0-9a-f]{12})$/i;
// a static pod's UID is the hex hash of its manifest (no dashes)
const HASH = /^[0-9a-f]{32}$/i;

/** Pod UID in the form the API server gives (dashed, lowercase), or undefined if it is not a UID. */
export function normalizeUid(raw: string): string | undefined {
  const u = UUID.exec(raw);
  if (u) return u.slice(1, 6).join('-').toLowerCase();
  return HASH.test(raw) ? raw.toLowerCase() : undefined;
}

const CGROUPFS_POD = /^pod([0-9a-fA-F-]{32,36})$/;
// <prefix>kubepods[-qos]-pod<uid with '_' for '-'>.slice (systemd escapes '-', its hierarchy separator)
const SYSTEMD_POD = /^((?:.+-)?kubepods(?:-burstable|-besteffort)?)-pod([0-9a-fA-F_]{32,36})\.slice$/;

/** The UID if `name` (child of `parent`) is a kubelet pod-level cgroup directory. */
export function podDirUid(parent: string, grandparent: string, name: string): string | undefined {
  const c = CGROUPFS_POD.exec(name);
  if (c) {
    const inKubepods = parent === 'kubepods' || ((parent === 'burstable' || parent === 'besteffort') && grandparent === 'kubepods');
    // a dashed UID only (an underscored one is systemd's escaping, never a cgroupfs name)
    return inKubepods && !c[1]!.includes('_') ? normalizeUid(c[1]!) : undefined;
  }
  const s = SYSTEMD_POD.exec(name);
  // the slice sits in its parent slice: <stem>-pod<uid>.slice in <stem>.slice
  if (s && parent === `${s[1]}.slice` && !s[2]!.includes('-')) return normalizeUid(s[2]!);
  return undefined;
}

function readDirs(abs: string): string[] {
  try {
    return fs
      .readdirSync(abs, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  } catch (e) {
    // a cgroup removed while we walk (pod deleted) is not an error
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
}

/** Walks the tree below `mount` (bounded depth and size) for pod-level cgroups. */
export function scanPodCgroups(mount: string, opts: CgroupWalkOptions = {}): PodCgroupScan {
  const maxDepth = opts.maxDepth ?? 8;
  const maxDirs = opts.maxDirs ?? 200_000;
  const found = new Map<string, string[]>();
  let truncated = false;
  let read = 0;
  // iterative depth-first walk; names[] is the path of the directory below the mount
  const stack: { names: string[]; depth: number }[] = [{ names: [], depth: 0 }];
  while (stack.length > 0) {
    const cur = stack.pop()!;
    if (read >= maxDirs) {
      truncated = true;
      break;
    }
    read++;
    const parent = cur.names[cur.names.length - 1] ?? '';
    const grandparent = cur.names[cur.names.length - 2] ?? '';
    for (const name of readDirs(path.join(mount, ...cur.names))) {
      const uid = podDirUid(parent, grandparent, name);
      const names = [...cur.names, name];
      if (uid) {
        // a pod dir: its children are containers, never more pods
        const rel = '/' + names.join('/');
        found.set(uid, [...(found.get(uid) ?? []), rel]);
      } else if (cur.depth + 1 < maxDepth) {
        stack.push({ names, depth: cur.depth + 1 });
      }
    }
  }
  const pods = new Map<string, string>();
  const duplicates = new Map<string, string[]>();
  for (const [uid, rels] of found) {
    if (rels.length === 1) pods.set(uid, rels[0]!);
    else duplicates.set(uid, rels.sort());
  }
  return { pods, duplicates, truncated };
}

/** Pod UID (dashed, lowercase) → pod-level cgroup path relative to `mount` (leading '/'). */
export function podCgroupIndex(mount: string, opts: CgroupWalkOptions = {}): Map<string, string> {
  return scanPodCgroups(mount, opts).pods;
}

function readProcs(abs: string): number[] {
  try {
    return fs
      .readFileSync(path.join(abs, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return []; // gone, or not a cgroup
  }
}

/**
 * Up to `max` pids from `cgroup.procs` of the cgroup `rel` (below `mount`) and
 * its descendants, the shallowest first (pod dir, then its containers).
 */
export function podPids(mount: string, rel: string, max = 8): number[] {
  const base = path.resolve(mount);
  const root = path.resolve(path.join(base, rel));
  if (root === base || !root.startsWith(base.endsWith('/') ? base : base + '/')) throw new Error(`cgroup "${rel}" is not below ${mount}`);
  const out: number[] = [];
  const queue: { abs: string; depth: number }[] = [{ abs: root, depth: 0 }];
  // breadth first, bounded: a pod cgroup holds containers, which may hold a few levels more
  for (let i = 0; i < queue.length && out.length < max && i < 10_000; i++) {
    const { abs, depth } = queue[i]!;
    for (const pid of readProcs(abs)) {
      if (out.length >= max) break;
      if (!out.includes(pid)) out.push(pid);
    }
    if (depth < 8) for (const n of readDirs(abs)) queue.push({ abs: path.join(abs, n), depth: depth + 1 });
  }
  return out;
}

/** Whether `pid` is still listed in `cgroup.procs` of `rel` or one of its descendants (pid reuse check). */
export function pidInCgroup(mount: string, rel: string, pid: number): boolean {
  return podPids(mount, rel, Number.MAX_SAFE_INTEGER).includes(pid);
}
