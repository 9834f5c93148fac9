// The CLI's conventions, run as a user runs it: bin/podwarp as a child process with stdout and
// stderr on pipes (as in CI, or kubectl exec without -t). Nothing here needs a loaded datapath:
// `dump` reads a pin directory of its own name, which nothing creates.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { findMount } from '../../host/mounts.js';
import { ROOT } from '../../loader/build.js';
import { checkoutCommit } from '../../src/version.js';

const CLI = path.join(ROOT, 'bin', 'podwarp');
const PIN_NAME = `pw-cli-test-${crypto.randomBytes(4).toString('hex')}`;
// each case starts node and tsx: seconds, more under emulation
const TIMEOUT = 30_000 * Math.max(1, Number(process.env.PODWARP_TEST_SLOWDOWN) || 1);

async function podwarp(args: string[], env: Record<string, string> = {}) {
  const base = { ...(process.env as Record<string, string>) };
  delete base.PODWARP_LOG_FORMAT;
  delete base.PODWARP_LOG_LEVEL;
  const r = await run('podwarp', [CLI, ...args], { reject: false, env: { ...base, PODWARP_PIN_NAME: PIN_NAME, ...env } });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

describe('podwarp CLI conventions (bin/podwarp, stderr on a pipe)', () => {
  it(
    'a runtime failure (nothing loaded) is one readable line on stderr and exit 1',
    async () => {
      const r = await podwarp(['dump', 'endpoints']);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n')).toHaveLength(2);
      expect(r.stderr).toMatch(/^podwarp: error: \S.*\n$/);
      // where bpffs is mounted (or can be) the message says why
      if (findMount('bpf')) expect(r.stderr).toContain(`podwarp is not loaded: map pw_endpoints is not pinned at`);
      expect(fs.existsSync(path.join('/sys/fs/bpf', PIN_NAME))).toBe(false);
    },
    TIMEOUT,
  );

  it(
    '--log-format json: the failure is one JSON line only, also at --log-level silent',
    async () => {
      for (const args of [
        ['--log-format', 'json', 'dump', 'endpoints'],
        ['--log-format', 'json', '--log-level', 'silent', 'dump', 'endpoints'],
      ]) {
        const r = await podwarp(args);
        expect(r.code, r.stderr).toBe(1);
        const lines = r.stderr.split('\n').filter(Boolean);
        expect(lines, r.stderr).toHaveLength(1);
        const j = JSON.parse(lines[0]!) as Record<string, unknown>;
        expect(j).toMatchObject({ level: 50, msg: 'podwarp failed', exitCode: 1, err: expect.any(String) });
      }
      // the environment asks for it as well
      const e = await podwarp(['stauts'], { PODWARP_LOG_FORMAT: 'json' });
      expect(e.code).toBe(2);
      expect(JSON.parse(e.stderr)).toMatchObject({ kind: 'usage', exitCode: 2, err: 'unknown command "stauts" (did you mean "status"?)' });
    },
    TIMEOUT,
  );

  it(
    'an unknown command: one line with a suggestion, no help, exit 2',
    async () => {
      const r = await podwarp(['stauts']);
      expect([r.code, r.stdout, r.stderr]).toEqual([2, '', 'podwarp: error: unknown command "stauts" (did you mean "status"?)\n']);
      const far = await podwarp(['frobnicate']);
      expect([far.code, far.stderr]).toEqual([2, 'podwarp: error: unknown command "frobnicate"; --help lists the commands\n']);
      const opt = await podwarp(['dump', 'endpoints', '--bogus']);
      expect([opt.code, opt.stderr]).toEqual([2, 'podwarp: error: unknown option "--bogus"\n']);
    },
    TIMEOUT,
  );

  it(
    'a bad flag value is exit 2 with one line: --log-level, --log-format, -o',
    async () => {
      const level = await podwarp(['--log-level', 'bogus', 'version']);
      expect([level.code, level.stderr]).toEqual([
        2,
        'podwarp: error: --log-level: "bogus" is not one of trace, debug, info, warn, error, fatal, silent\n',
      ]);
      const env = await podwarp(['version'], { PODWARP_LOG_LEVEL: 'loud' });
      expect([env.code, env.stderr]).toEqual([2, expect.stringMatching(/^podwarp: error: --log-level: "loud" is not one of/)]);
      const format = await podwarp(['--log-format', 'xml', 'version']);
      expect([format.code, format.stderr]).toEqual([2, 'podwarp: error: --log-format: "xml" is not one of json, pretty, auto\n']);
      const o = await podwarp(['version', '-o', 'xml']);
      expect([o.code, o.stderr]).toEqual([2, 'podwarp: error: -o: unknown output format "xml" (table, wide, json, yaml)\n']);
    },
    TIMEOUT,
  );

  it(
    '-o yaml is the object of -o json; -o wide and table print the text',
    async () => {
      const [j, y, t, w] = await Promise.all(['json', 'yaml', 'table', 'wide'].map((o) => podwarp(['version', '-o', o])));
      expect([j!.code, y!.code, t!.code, w!.code]).toEqual([0, 0, 0, 0]);
      expect(YAML.parse(y!.stdout)).toEqual(JSON.parse(j!.stdout));
      expect(t!.stdout).toMatch(/^version: {2}\d+\.\d+\.\d+\n/);
      expect(w!.stdout).toBe(t!.stdout);
    },
    TIMEOUT,
  );

  it(
    '--version: one line with the package version, the commit when known, Node; version -o json in full',
    async () => {
      const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
      const v = await podwarp(['--version']);
      expect([v.code, v.stderr]).toEqual([0, '']);
      expect(v.stdout).toMatch(
        new RegExp(
          `^podwarp ${pkg.version.replace(/\./g, '\\.')} \\(commit ([0-9a-f]{12}|unknown), Node ${process.version}, kernel ≥ 5\\.10\\)\\n$`,
        ),
      );
      const j = JSON.parse((await podwarp(['version', '-o', 'json'])).stdout) as Record<string, unknown>;
      expect(j).toMatchObject({ version: pkg.version, node: process.version, kernelFloor: '5.10' });
      // from a checkout (running through tsx), the checkout's HEAD
      const head = checkoutCommit(ROOT);
      if (head && !fs.existsSync(path.join(ROOT, 'dist', '.stamp'))) expect([j.commit, j.commitFrom]).toEqual([head, 'checkout']);
      if (j.commit) expect(v.stdout).toContain(`commit ${(j.commit as string).slice(0, 12)}`);
    },
    TIMEOUT,
  );

  it(
    'a command group without its subcommand prints its help on stdout, exit 0 (as kubectl)',
    async () => {
      const r = await podwarp(['dump']);
      expect([r.code, r.stderr]).toEqual([0, '']);
      expect(r.stdout).toMatch(/^Usage: podwarp dump \[options\] \[command\]/);
      expect(r.stdout).toContain('endpoints');
    },
    TIMEOUT,
  );
});
