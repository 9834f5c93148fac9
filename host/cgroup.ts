// Pod cgroups by their path below the cgroup2 mount.
import fs from 'node:fs';
import path from 'node:path';
import { cgroup2Root } from './mounts.js';

/** Absolute path of a cgroup given as a path below the cgroup2 mount. */
export function cgroupPath(rel: string): string {
  const root = cgroup2Root();
  const abs = path.join(root, rel);
  if (abs === root || !abs.startsWith(root + '/')) throw new Error(`refusing cgroup "${rel}": must be a child of ${root}`);
  return abs;
}

/** The cgroup id of a cgroup given as a path below the cgroup2 mount: the inode of its directory (what BPF helpers return). */
export function cgroupId(rel: string): bigint {
  return BigInt(fs.statSync(cgroupPath(rel), { bigint: true }).ino);
}
