// Docs that cannot drift: the map table in docs/maps.md is the schema's, every
// relative link and anchor resolves, no run report sits outside
// docs/measurements.md, and every file path a comment or a page names exists.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { MAP_TABLE_FILE, anchors, docsProblems, linkProblems, runReportProblems, slug, withMapTable } from '../../devtools/docs.js';
import { ROOT } from '../../loader/build.js';

const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
const PATH = /(?<![\w/.-])((?:abi|host|loader|src|devtools|bpf|test|deploy|scripts|bin)\/[\w./-]*\w\.(?:ts|c|h|sh|json|yaml|cjs))\b/g;

/** A scratch repository: files by relative path. */
function scratch(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pw-docs-'));
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
  dirs.push(dir);
  return dir;
}
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('docs', () => {
  it('the map table in docs/maps.md is generated from abi/schema.ts (npm run docs)', () => {
    const page = fs.readFileSync(path.join(ROOT, MAP_TABLE_FILE), 'utf8');
    expect(withMapTable(page)).toBe(page);
    expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).not.toContain('generated from abi/schema.ts');
  });

  it('passes the docs check: links and anchors resolve, no run report outside docs/measurements.md, a short README', () => {
    expect(docsProblems(ROOT)).toEqual([]);
  });

  it('every source path named in the README, the docs, comments and the schema exists', () => {
    const texts = tracked.filter((f) => /\.(ts|c|h|md|sh|yaml)$/.test(f) && !f.startsWith('test/e2e/cluster/'));
    const missing: string[] = [];
    for (const f of texts) {
      const text = fs.readFileSync(path.join(ROOT, f), 'utf8');
      for (const m of text.matchAll(PATH)) {
        const p = m[1]!;
        if (p.includes('*') || p.startsWith('build/') || p.startsWith('bpf/bpf_')) continue; // bpf/bpf_*.h: libbpf's headers
        // generated and run-time paths are named as such
        if (/^(src|loader|host|abi)\/.*\.js$/.test(p) || p.endsWith('.o')) continue;
        if (!fs.existsSync(path.join(ROOT, p))) missing.push(`${f}: ${p}`);
      }
    }
    expect(missing).toEqual([]);
  });
});

describe('the link check', () => {
  it("makes GitHub's anchors", () => {
    expect(slug('Services at `connect()`')).toBe('services-at-connect');
    expect(slug('When a step fails: fail closed')).toBe('when-a-step-fails-fail-closed');
    expect(slug('`pw_svc` and [the maps](maps.md)')).toBe('pw_svc-and-the-maps');
    expect(slug('A → B')).toBe('a--b');
    expect([...anchors('# T\n## Dup\n## Dup\n```\n## not a heading\n```\n<a id="here"></a>\n')]).toEqual(['t', 'dup', 'dup-1', 'here']);
  });

  it('reports a missing file, a missing anchor and a link outside the repository, with file and line', () => {
    const root = scratch({
      'README.md': [
        '# podwarp',
        '## Try it',
        '[ok](docs/a.md) [ok](docs/a.md#the-part) [ok](#try-it) [ok](https://example.com/x) [ok](deploy/)',
        '[gone](docs/gone.md)',
        '[no anchor](docs/a.md#nowhere)',
        '[outside](../shared/DESIGN.md)',
        '`[in code](nothing.md)`',
        '```',
        '[in a block](nothing.md)',
        '```',
        '[ref]: docs/missing-ref.md',
      ].join('\n'),
      'docs/a.md': '# A\n## The part\n[back](../README.md#try-it) [self](#nowhere-here)\n',
      'deploy/kept.txt': '',
    });
    expect(linkProblems(root)).toEqual([
      'README.md:4: link "docs/gone.md": no such file docs/gone.md',
      'README.md:5: link "docs/a.md#nowhere": docs/a.md has no heading with anchor #nowhere',
      expect.stringMatching(/^README\.md:6: link "\.\.\/shared\/DESIGN\.md": points outside the repository/),
      'README.md:11: link "docs/missing-ref.md": no such file docs/missing-ref.md',
      'docs/a.md:3: link "#nowhere-here": docs/a.md has no heading with anchor #nowhere-here',
    ]);
  });

  it('finds run reports in README.md and docs/, not in docs/measurements.md', () => {
    const root = scratch({
      'README.md': '# podwarp\n9/9 in 216 s (load average ~15)\n',
      'docs/a.md': 'Measured on this machine.\nThe run of 2026-11-30.\nSee issue 13.\n',
      'docs/measurements.md': 'Date: 2026-11-30. Load average 8 on this machine.\n',
    });
    const problems = runReportProblems(root);
    expect(problems.map((p) => p.split(': ')[0])).toEqual(['README.md:2', 'docs/a.md:1', 'docs/a.md:2', 'docs/a.md:3']);
    expect(problems[0]).toContain('docs/measurements.md');
  });
});
