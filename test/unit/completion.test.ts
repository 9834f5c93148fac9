// `podwarp completion bash|zsh|fish`: each script, generated from the command tree, sourced in
// its shell with the words typed so far, completes subcommands, arguments, options and values.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, which } from '../../host/exec.js';
import { COMPLETION_ARGS, COMPLETION_VALUES, podwarpProgram } from '../../src/cli.js';
import { commandTree, completionScript, type Shell } from '../../src/completion.js';
import { skipBecause } from '../skip.js';

let dir = '';
const script = (shell: Shell, name = 'podwarp') => {
  const program = podwarpProgram(name);
  const f = path.join(dir, `${name}.${shell}`);
  fs.writeFileSync(f, completionScript(shell, commandTree(program, COMPLETION_ARGS), COMPLETION_VALUES));
  return f;
};

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-completion-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** COMPREPLY of bash's completion function for the words (the last one: the word being completed). */
async function bashComplete(file: string, words: string[], fn = '_podwarp'): Promise<string[]> {
  const r = await run('bash', [
    'bash',
    '-c',
    `source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); ${fn}; printf '%s\\n' "\${COMPREPLY[@]}"`,
    file,
    ...words,
  ]);
  return r.stdout.split('\n').filter(Boolean);
}

describe('completion', () => {
  it('bash: subcommands, subcommands of dump, argument words, options and their values', async (ctx) => {
    if (!(await which('bash'))) skipBecause(ctx, 'no bash');
    const f = script('bash');
    expect(await bashComplete(f, ['podwarp', 'sta'])).toEqual(['status']);
    expect(await bashComplete(f, ['podwarp', 'dump', 'e'])).toEqual(['endpoints']);
    expect(await bashComplete(f, ['podwarp', 'dump', ''])).toEqual(
      expect.arrayContaining(['endpoints', 'sockets', 'services', 'backends', 'affinity', 'flows', 'stats', 'map']),
    );
    expect(await bashComplete(f, ['podwarp', 'dump', 'map', 'pw_aff'])).toEqual(['pw_affinity', 'pw_aff_match']);
    expect(await bashComplete(f, ['podwarp', 'status', '-o', ''])).toEqual(['table', 'wide', 'json', 'yaml']);
    expect(await bashComplete(f, ['podwarp', '--log-level', 'de'])).toEqual(['debug']);
    // an option's value is not taken for a command; the global options are offered after a command
    expect(await bashComplete(f, ['podwarp', '--log-format', 'json', 'dump', 'endpoints', '--o'])).toEqual(['--output']);
    expect(await bashComplete(f, ['podwarp', 'dump', 'endpoints', '--log-'])).toEqual(['--log-format', '--log-level']);
    expect(await bashComplete(f, ['podwarp', 'completion', ''])).toEqual(['bash', 'zsh', 'fish']);
  });

  it("bash: another program name (podwarp-dev) gets its own function and the program's commands", async (ctx) => {
    if (!(await which('bash'))) skipBecause(ctx, 'no bash');
    const f = script('bash', 'podwarp-dev');
    expect(fs.readFileSync(f, 'utf8')).toContain('complete -F _podwarp_dev podwarp-dev');
    expect(await bashComplete(f, ['podwarp-dev', 'dump', 'sta'], '_podwarp_dev')).toEqual(['stats']);
  });

  it('zsh: the same words through compadd', async (ctx) => {
    if (!(await which('zsh'))) skipBecause(ctx, 'no zsh on this machine (apt-get install zsh)');
    const f = script('zsh');
    const complete = async (words: string[]) =>
      (
        await run('zsh', [
          'zsh',
          '-c',
          `compdef() { :; }; compadd() { [[ $1 == -a ]] && print -rl -- \${(P)2} || print -rl -- "$@"; }; _files() { print FILES; }
           source "$1"; shift; words=("$@"); CURRENT=$#; _podwarp`,
          'zsh',
          f,
          ...words,
        ])
      ).stdout
        .split('\n')
        .filter(Boolean);
    expect(await complete(['podwarp', 'dump', ''])).toContain('endpoints');
    expect(await complete(['podwarp', 'doctor', '-o', ''])).toEqual(['table', 'wide', 'json', 'yaml']);
    expect(await complete(['podwarp', 'agent', '--state', ''])).toEqual(['FILES']);
  });

  it('fish: complete -C', async (ctx) => {
    if (!(await which('fish'))) skipBecause(ctx, 'no fish on this machine (apt-get install fish)');
    const f = script('fish');
    const complete = async (line: string) =>
      (await run('fish', ['fish', '-c', `source $argv[1]; complete -C"${line}"`, f])).stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t')[0]);
    expect(await complete('podwarp sta')).toEqual(['status']);
    expect(await complete('podwarp dump e')).toEqual(['endpoints']);
    expect((await complete('podwarp status -o ')).sort()).toEqual(['json', 'table', 'wide', 'yaml']);
  });
});
