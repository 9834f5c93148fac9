// deploy/kubectl-podwarp without a cluster: a fake `kubectl` on PATH records
// every argv and answers `get pods` from a canned list, honouring the field
// selector and namespace it is given. The plugin must pick the agent pod of
// the right node and hand the arguments to `podwarp` in it unchanged.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../host/exec.js';
import { KUBECTL_PLUGIN } from '../k8s/kubectl-plugin.js';

// one canned pod per line: namespace, name, node, phase, ready, running-since
const FAKE_KUBECTL = `#!/bin/sh
{ for a in "$@"; do printf '%s\\037' "$a"; done; echo; } >> "$FAKE_LOG"
# kubectl's global flags come first, each as --flag=value or a bare --flag
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
if [ "$1" = get ]; then
  ns=; node=
  while [ $# -gt 0 ]; do
    case $1 in
    -n) ns=$2; shift ;;
    --field-selector) node=\${2#spec.nodeName=}; shift ;;
    esac
    shift
  done
  awk -F '\\t' -v ns="$ns" -v node="$node" 'NF && $1 == ns && (node == "" || $3 == node) { printf "%s\\t%s\\t%s\\t%s\\t%s\\n", $2, $3, $4, $5, $6 }' "$FAKE_PODS"
  exit 0
fi
if [ "$1" = exec ]; then echo "podwarp ran in the pod"; exit "\${FAKE_EXEC_RC:-0}"; fi
echo "fake kubectl: unexpected $*" >&2; exit 9
`;

let dir = '';
const pods = (lines: string[][]) => fs.writeFileSync(path.join(dir, 'pods'), lines.map((l) => l.join('\t') + '\n').join(''));
const running = (ns: string, name: string, node: string, ready = 'true') => [ns, name, node, 'Running', ready, '2026-01-01T00:00:00Z'];

async function plugin(args: string[], env: Record<string, string> = {}) {
  fs.writeFileSync(path.join(dir, 'log'), '');
  const r = await run('kubectl-podwarp', [KUBECTL_PLUGIN, ...args], {
    reject: false,
    env: {
      ...(process.env as Record<string, string>),
      PATH: `${dir}:${process.env.PATH}`,
      FAKE_LOG: path.join(dir, 'log'),
      FAKE_PODS: path.join(dir, 'pods'),
      ...env,
    },
  });
  const calls = fs
    .readFileSync(path.join(dir, 'log'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\x1f').slice(0, -1));
  // the verb after kubectl's global flags
  const verb = (c: string[]) => c.find((a) => !a.startsWith('--'));
  return { ...r, calls, execs: calls.filter((c) => verb(c) === 'exec'), gets: calls.filter((c) => verb(c) === 'get') };
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), `pw-kplugin-${crypto.randomBytes(3).toString('hex')}-`));
  fs.writeFileSync(path.join(dir, 'kubectl'), FAKE_KUBECTL, { mode: 0o755 });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('kubectl podwarp', () => {
  it("runs podwarp in the named node's agent pod, arguments unchanged, after asking for that node's agent", async () => {
    pods([running('podwarp-system', 'podwarp-agent-aaaaa', 'node-a'), running('podwarp-system', 'podwarp-agent-bbbbb', 'node-b')]);
    const r = await plugin(['--node', 'node-b', 'dump', 'endpoints', '-o', 'json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe('podwarp ran in the pod\n');
    const get = r.gets[0]!;
    expect(get).toEqual(expect.arrayContaining(['pods', '-n', 'podwarp-system', '--field-selector', 'spec.nodeName=node-b']));
    expect(get[get.indexOf('-l') + 1]).toBe('app.kubernetes.io/name=podwarp,app.kubernetes.io/component=agent');
    expect(r.execs).toEqual([
      ['exec', '-n', 'podwarp-system', 'podwarp-agent-bbbbb', '-c', 'agent', '--', 'podwarp', 'dump', 'endpoints', '-o', 'json'],
    ]);
  });

  it('takes its options anywhere (--node=, -n) and passes podwarp the rest; the exit status is podwarp`s', async () => {
    pods([running('other-ns', 'pw-x', 'node-a'), running('podwarp-system', 'podwarp-agent-aaaaa', 'node-a')]);
    const r = await plugin(['doctor', '-o', 'json', '-n', 'other-ns', '--node=node-a'], { FAKE_EXEC_RC: '1' });
    expect(r.exitCode).toBe(1);
    expect(r.execs).toEqual([['exec', '-n', 'other-ns', 'pw-x', '-c', 'agent', '--', 'podwarp', 'doctor', '-o', 'json']]);
  });

  it('without --node uses the only agent', async () => {
    pods([running('podwarp-system', 'podwarp-agent-solo', 'node-a')]);
    const r = await plugin(['status']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.gets[0]).not.toContain('--field-selector');
    expect(r.execs).toEqual([['exec', '-n', 'podwarp-system', 'podwarp-agent-solo', '-c', 'agent', '--', 'podwarp', 'status']]);
  });

  it('without --node and several agents lists the nodes and fails, running nothing', async () => {
    pods([running('podwarp-system', 'podwarp-agent-aaaaa', 'node-a'), running('podwarp-system', 'podwarp-agent-bbbbb', 'node-b')]);
    const r = await plugin(['status']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('2 podwarp agents; choose a node with --node NODE');
    expect(r.stderr).toMatch(/node-a\s+podwarp-agent-aaaaa/);
    expect(r.stderr).toMatch(/node-b\s+podwarp-agent-bbbbb/);
    expect(r.execs).toEqual([]);
  });

  it('says so when the node has no agent, or the agent is not running; a running agent that is not ready is used with a note', async () => {
    pods([
      running('podwarp-system', 'podwarp-agent-aaaaa', 'node-a'),
      ['podwarp-system', 'podwarp-agent-ccccc', 'node-c', 'Pending', 'false', ''],
      running('podwarp-system', 'podwarp-agent-ddddd', 'node-d', 'false'),
    ]);
    const none = await plugin(['--node', 'node-x', 'status']);
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toContain('no podwarp agent on node node-x (namespace podwarp-system');
    const pending = await plugin(['--node', 'node-c', 'status']);
    expect(pending.exitCode).toBe(1);
    expect(pending.stderr).toContain('the podwarp agent podwarp-agent-ccccc on node node-c is not running (phase Pending)');
    expect([...none.execs, ...pending.execs]).toEqual([]);
    const notReady = await plugin(['--node', 'node-d', 'doctor']);
    expect(notReady.exitCode).toBe(0);
    expect(notReady.stderr).toContain('running but not ready');
    expect(notReady.execs).toHaveLength(1);
  });

  it('refuses commands other than the read ones (status, dump, doctor, version) without calling kubectl: a usage error, 2', async () => {
    pods([running('podwarp-system', 'podwarp-agent-solo', 'node-a')]);
    const r = await plugin(['uninstall', '--force']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('kubectl-podwarp: error: unknown command "uninstall" (the read commands: status, dump, doctor, version)\n');
    expect(r.calls).toEqual([]);
    expect((await plugin([])).exitCode).toBe(2);
    expect((await plugin(['--node'])).exitCode).toBe(2);
    const help = await plugin(['--help']);
    expect([help.exitCode, help.calls]).toEqual([0, []]);
    expect(help.stdout).toContain('usage: kubectl podwarp');
  });

  it('runs every read command: status, dump, doctor, version (and --version)', async () => {
    pods([running('podwarp-system', 'podwarp-agent-solo', 'node-a')]);
    for (const args of [
      ['status'],
      ['dump', 'map', 'pw_config', '-o', 'yaml'],
      ['doctor', '-o', 'wide'],
      ['version', '-o', 'json'],
      ['--version'],
    ]) {
      const r = await plugin(args);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.execs).toEqual([['exec', '-n', 'podwarp-system', 'podwarp-agent-solo', '-c', 'agent', '--', 'podwarp', ...args]]);
    }
  });

  it("passes kubectl's global flags (--context, --kubeconfig, -s, -v, --insecure-skip-tls-verify, …) to every kubectl call, not to podwarp", async () => {
    pods([running('agents', 'pw-a', 'node-a'), running('agents', 'pw-b', 'node-b')]);
    const r = await plugin([
      '--context',
      'prod',
      '--kubeconfig=/tmp/k config',
      '-n',
      'agents',
      'dump',
      'endpoints',
      '--node',
      'node-b',
      '-o',
      'json',
      '-s',
      'https://api:6443',
      '-v',
      '6',
      '--insecure-skip-tls-verify',
      '--as',
      "it's me",
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    const kflags = [
      '--context=prod',
      '--kubeconfig=/tmp/k config',
      '--server=https://api:6443',
      '--v=6',
      '--insecure-skip-tls-verify',
      "--as=it's me",
    ];
    expect(r.gets).toHaveLength(1);
    expect(r.gets[0]!.slice(0, kflags.length)).toEqual(kflags);
    expect(r.gets[0]).toEqual(expect.arrayContaining(['-n', 'agents', '--field-selector', 'spec.nodeName=node-b']));
    expect(r.execs).toEqual([
      [...kflags, 'exec', '-n', 'agents', 'pw-b', '-c', 'agent', '--', 'podwarp', 'dump', 'endpoints', '-o', 'json'],
    ]);
  });

  it('after --, every argument is podwarp`s', async () => {
    pods([running('podwarp-system', 'podwarp-agent-solo', 'node-a')]);
    const r = await plugin(['--', 'dump', 'map', '--context']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.execs).toEqual([
      ['exec', '-n', 'podwarp-system', 'podwarp-agent-solo', '-c', 'agent', '--', 'podwarp', 'dump', 'map', '--context'],
    ]);
  });
});
