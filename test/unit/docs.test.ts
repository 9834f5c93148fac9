// Docs that cannot drift: the map table in docs/maps.md is the schema's, and
// every file path a comment, the README or a docs page names exists.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MAP_TABLE_FILE, withMapTable } from '../../devtools/docs.js';
import { ROOT } from '../../loader/build.js';

const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
const PATH = /(?<![\w/.-])((?:abi|loader|src|devtools|bpf|test|deploy|scripts|bin)\/[\w./-]*\w\.(?:ts|c|h|sh|json|yaml|cjs))\b/g;

describe('docs', () => {
  it('the map table in docs/maps.md is generated from abi/schema.ts (npm run docs)', () => {
    const page = fs.readFileSync(path.join(ROOT, MAP_TABLE_FILE), 'utf8');
    expect(withMapTable(page)).toBe(page);
    expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).not.toContain('generated from abi/schema.ts');
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
        if (/^(src|loader|abi)\/.*\.js$/.test(p) || p.endsWith('.o')) continue;
        if (!fs.existsSync(path.join(ROOT, p))) missing.push(`${f}: ${p}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
