// cgroup2 directories for sandbox pods: create, list, kill and remove (plain
// file-system operations; the product never creates or removes cgroups).
import fs from 'node:fs';
import path from 'node:path';
import { cgroupPath } from '../host/cgroup.js';

export { cgroupPath };

export function create(rel: string): string {
  const abs = cgroupPath(rel);
  fs.mkdirSync(abs, { recursive: true });
  return abs;
}

export function procs(abs: string): number[] {
  try {
    return fs.readFileSync(path.join(abs, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kills every process in the cgroup tree and removes it (children first). Bounded wait. */
export async function destroy(abs: string): Promise<void> {
  if (!fs.existsSync(abs)) return;
  for (const d of fs.readdirSync(abs, { withFileTypes: true })) {
    if (d.isDirectory()) await destroy(path.join(abs, d.name));
  }
  const deadline = Date.now() + 5000;
  for (;;) {
    const pids = procs(abs);
    if (pids.length === 0) break;
    if (fs.existsSync(path.join(abs, 'cgroup.kill'))) fs.writeFileSync(path.join(abs, 'cgroup.kill'), '1');
    else
      for (const p of pids)
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
    if (Date.now() > deadline) throw new Error(`processes ${pids.join(',')} in ${abs} did not exit`);
    await new Promise((r) => setTimeout(r, 50));
  }
  fs.rmdirSync(abs);
}
