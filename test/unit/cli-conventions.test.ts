// The pure parts of the CLI's conventions: failures to exit codes and one line, -o, tables fitted
// to a width, the commit read from a checkout's .git.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { FeatureMissingError, InputError, ToolError } from '../../host/errors.js';
import { commanderMessage, failureOf } from '../../src/cli-errors.js';
import { NotLoadedError } from '../../host/errors.js';
import { checkFormat, data, fitTable, json, wrap } from '../../src/table.js';
import { buildCommit, checkoutCommit } from '../../src/version.js';

describe('failures: exit code and one line', () => {
  it('usage and invalid input are 2; a runtime failure (nothing loaded, a tool, the kernel) is 1; help and --version 0', () => {
    const code = (e: unknown) => failureOf(e).code;
    expect(code(new CommanderError(1, 'commander.unknownCommand', "error: unknown command 'x'"))).toBe(2);
    expect(code(new CommanderError(1, 'commander.missingArgument', "error: missing required argument 'shell'"))).toBe(2);
    expect(code(new InputError('bad'))).toBe(2);
    expect(code(new NotLoadedError('podwarp is not loaded'))).toBe(1);
    expect(code(new ToolError('bpftool', ['bpftool'], 1, 'no'))).toBe(1);
    expect(code(new FeatureMissingError('btf', 'none'))).toBe(1);
    expect(code(new Error('x'))).toBe(1);
    expect(code(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'))).toBe(0);
    expect(code(new CommanderError(0, 'commander.version', '1.0'))).toBe(0);
    expect(code(new CommanderError(1, 'commander.help', '(outputHelp)'))).toBe(0);
  });

  it("commander's messages in kubectl's words, on one line", () => {
    expect(commanderMessage("error: unknown command 'stauts'\n(Did you mean status?)")).toBe(
      'unknown command "stauts" (did you mean "status"?)',
    );
    expect(commanderMessage("error: unknown option '--forse'\n(Did you mean --force?)")).toBe(
      'unknown option "--forse" (did you mean "--force"?)',
    );
    expect(commanderMessage("error: unknown command 'd'\n(Did you mean one of dump, doctor?)")).toBe(
      'unknown command "d" (did you mean "dump", "doctor"?)',
    );
    expect(commanderMessage("error: missing required argument 'shell'")).toBe("missing required argument 'shell'");
    expect(failureOf(new CommanderError(1, 'commander.unknownCommand', "error: unknown command 'zzz'")).message).toBe(
      'unknown command "zzz"; --help lists the commands',
    );
  });
});

describe('-o and tables', () => {
  it('-o takes table, wide, json, yaml; anything else is invalid input', () => {
    for (const f of ['table', 'wide', 'json', 'yaml']) expect(checkFormat(f)).toBe(f);
    expect(() => checkFormat('xml')).toThrow(InputError);
  });

  it('yaml parses to the object json prints (bigints as numbers, undefined left out); json is unchanged', () => {
    const x = { a: 1n, b: 'yes', c: '0x10', d: undefined, e: [{ f: null, g: '1.10' }], h: 'a: b' };
    expect(data(x, 'json')).toBe(json(x));
    expect(YAML.parse(data(x, 'yaml'))).toEqual(JSON.parse(data(x, 'json')));
  });

  it('fitTable cuts the shrinkable columns, widest first, to the width and says which rows it cut', () => {
    const rows = [
      ['a', 'x'.repeat(80), 'y'.repeat(40)],
      ['b', 'short', '-'],
    ];
    const fit = fitTable(['K', 'LONG', 'MID'], rows, { width: 60, shrink: [1, 2], min: 10 });
    const lines = fit.text.split('\n').filter(Boolean);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(60);
    expect(lines[1]).toMatch(/^a {2}x+… {2}y+…$/);
    expect(lines[2]).toMatch(/^b {2}short\s+-$/);
    expect([...fit.cut]).toEqual([0]);
    // room enough: nothing cut
    expect(fitTable(['K'], [['v']], { width: 10, shrink: [0] })).toEqual({ text: 'K\nv\n', cut: new Set() });
  });

  it('wrap breaks prose at the width, indenting what follows', () => {
    const w = wrap('  fix: ' + 'word '.repeat(30).trim(), 40, '    ');
    for (const l of w.split('\n')) expect(l.length).toBeLessThanOrEqual(40);
    expect(w.startsWith('  fix: word')).toBe(true);
    expect(w.split('\n')[1]).toMatch(/^ {4}word/);
  });
});

describe('version: the commit', () => {
  const HEAD = 'a'.repeat(40);
  const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'pw-version-'));

  it('from a checkout: HEAD, its ref as a file or in packed-refs, a worktree through its .git file', () => {
    const d = tmp();
    try {
      fs.mkdirSync(path.join(d, '.git/refs/heads'), { recursive: true });
      fs.writeFileSync(path.join(d, '.git/HEAD'), 'ref: refs/heads/main\n');
      expect(checkoutCommit(d)).toBe(null);
      fs.writeFileSync(path.join(d, '.git/packed-refs'), `# pack-refs\n${'b'.repeat(40)} refs/heads/main\n`);
      expect(checkoutCommit(d)).toBe('b'.repeat(40));
      fs.writeFileSync(path.join(d, '.git/refs/heads/main'), HEAD + '\n');
      expect(checkoutCommit(d)).toBe(HEAD);
      // a worktree: .git is a file naming its git directory, whose refs are in the common one
      const wt = path.join(d, 'wt');
      fs.mkdirSync(path.join(d, '.git/worktrees/wt'), { recursive: true });
      fs.mkdirSync(wt);
      fs.writeFileSync(path.join(wt, '.git'), `gitdir: ${path.join(d, '.git/worktrees/wt')}\n`);
      fs.writeFileSync(path.join(d, '.git/worktrees/wt/HEAD'), 'ref: refs/heads/main\n');
      fs.writeFileSync(path.join(d, '.git/worktrees/wt/commondir'), '../..\n');
      expect(checkoutCommit(wt)).toBe(HEAD);
      // detached
      fs.writeFileSync(path.join(d, '.git/HEAD'), 'c'.repeat(40) + '\n');
      expect(checkoutCommit(d)).toBe('c'.repeat(40));
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });

  it('from the build: dist/build-info.json; none: null', () => {
    const d = tmp();
    try {
      expect([checkoutCommit(d), buildCommit(d)]).toEqual([null, null]);
      fs.mkdirSync(path.join(d, 'dist'));
      fs.writeFileSync(path.join(d, 'dist/build-info.json'), JSON.stringify({ version: '0.1.0', commit: HEAD }));
      expect(buildCommit(d)).toBe(HEAD);
      fs.writeFileSync(path.join(d, 'dist/build-info.json'), JSON.stringify({ version: '0.1.0', commit: null }));
      expect(buildCommit(d)).toBe(null);
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
