// `podwarp --version` and `podwarp version`: the package version, the git commit when it is known,
// Node, and the oldest kernel the programs are built for (docs/cli.md#version).
//
// The commit: running from a checkout (tsx, no dist/), read from its .git (HEAD and its ref, with
// no git process: the files are the truth rev-parse reads); running the compiled build (dist/,
// the image), from dist/build-info.json, which `npm run build:js` writes (scripts/build-info.mjs:
// $PODWARP_COMMIT, the Dockerfile's build argument, else the checkout it builds in). Neither: null.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from '../loader/build.js';
import { KERNEL_FLOOR } from './doctor/checks.js';

export interface VersionInfo {
  version: string;
  /** 40 hex digits, or null when neither the build nor a checkout says */
  commit: string | null;
  /** where the commit comes from: the build (dist/build-info.json) or the checkout (.git) */
  commitFrom: 'build' | 'checkout' | null;
  node: string;
  /** the oldest kernel the BPF programs are built and tested for */
  kernelFloor: string;
}

const HEX40 = /^[0-9a-f]{40}$/;

/** The commit a checkout's HEAD names (a worktree's .git file followed), or null. */
export function checkoutCommit(root: string): string | null {
  try {
    let gitDir = path.join(root, '.git');
    if (fs.statSync(gitDir).isFile()) {
      const m = /^gitdir: (.*)$/m.exec(fs.readFileSync(gitDir, 'utf8'));
      if (!m) return null;
      gitDir = path.resolve(root, m[1]!.trim());
    }
    const head = fs.readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    if (HEX40.test(head)) return head;
    const ref = /^ref: (.*)$/.exec(head)?.[1];
    if (!ref) return null;
    // a worktree keeps its HEAD; the refs are in the common directory
    const common = fs.existsSync(path.join(gitDir, 'commondir'))
      ? path.resolve(gitDir, fs.readFileSync(path.join(gitDir, 'commondir'), 'utf8').trim())
      : gitDir;
    for (const d of [gitDir, common]) {
      const f = path.join(d, ref);
      if (fs.existsSync(f)) {
        const c = fs.readFileSync(f, 'utf8').trim();
        return HEX40.test(c) ? c : null;
      }
    }
    const packed = path.join(common, 'packed-refs');
    if (!fs.existsSync(packed)) return null;
    for (const l of fs.readFileSync(packed, 'utf8').split('\n')) {
      const [c, name] = l.split(' ');
      if (name === ref && c && HEX40.test(c)) return c;
    }
    return null;
  } catch {
    return null;
  }
}

/** The commit dist/build-info.json records, or null. */
export function buildCommit(root: string): string | null {
  try {
    const c = (JSON.parse(fs.readFileSync(path.join(root, 'dist', 'build-info.json'), 'utf8')) as { commit?: unknown }).commit;
    return typeof c === 'string' && HEX40.test(c) ? c : null;
  } catch {
    return null;
  }
}

export function versionInfo(root = ROOT, compiled = fileURLToPath(import.meta.url).includes(`${path.sep}dist${path.sep}`)): VersionInfo {
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const fromBuild = compiled ? buildCommit(root) : null;
  const fromCheckout = fromBuild ? null : checkoutCommit(root);
  return {
    version,
    commit: fromBuild ?? fromCheckout,
    commitFrom: fromBuild ? 'build' : fromCheckout ? 'checkout' : null,
    node: process.version,
    kernelFloor: KERNEL_FLOOR.join('.'),
  };
}

/** `podwarp --version`: one line. */
export function versionLine(v: VersionInfo, name = 'podwarp'): string {
  return `${name} ${v.version} (commit ${v.commit ? v.commit.slice(0, 12) : 'unknown'}, Node ${v.node}, kernel ≥ ${v.kernelFloor})`;
}

/** `podwarp version` as a table. */
export function versionText(v: VersionInfo): string {
  const from = { build: 'recorded by the build', checkout: 'HEAD of the checkout' };
  return (
    `version:  ${v.version}\n` +
    `commit:   ${v.commit ? `${v.commit} (${from[v.commitFrom!]})` : 'unknown (neither the build nor a checkout records it)'}\n` +
    `node:     ${v.node}\n` +
    `kernel:   ≥ ${v.kernelFloor} (the oldest the BPF programs are built for)\n`
  );
}
