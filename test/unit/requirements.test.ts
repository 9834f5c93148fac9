// bpf/requirements.json (what `podwarp doctor` and the agent check the kernel
// for) equals what the programs use: every SEC() of the C sources, and the
// helpers each compiled program section calls. Needs clang and llvm (not root).
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BPF_SRC, build } from '../../loader/build.js';
import { helperCallsBySection } from '../../loader/clang.js';
import { readNeeds, sectionKind, type ProgramNeeds } from '../../src/doctor/checks.js';

/** Helper id → name, from libbpf's bpf_helper_defs.h (libbpf-dev, which the build needs anyway). */
function helperNames(): Map<number, string> {
  const defs = fs.readFileSync('/usr/include/bpf/bpf_helper_defs.h', 'utf8');
  const names = new Map<number, string>();
  for (const m of defs.matchAll(/\(\*\s*(?:const\s+)?(bpf_\w+)\)\(.*?\)\s*=\s*\(void \*\)\s*(\d+);/gs)) names.set(Number(m[2]), m[1]!);
  return names;
}

/**
 * The product's sources: bpf/ and its object kinds. bpf/tests/ is left out on
 * purpose: its tc programs are BPF unit tests (test/bpf/logic.ts), never
 * loaded by podwarp, so the kernel need not offer what they call.
 */
function sourceSections(): { source: string; section: string }[] {
  const out: { source: string; section: string }[] = [];
  const headers = new Map<string, string>();
  for (const d of ['', 'iter', 'trace', 'fallback'])
    for (const f of fs.readdirSync(path.join(BPF_SRC, d)).filter((x) => x.endsWith('.h')))
      headers.set(f, fs.readFileSync(path.join(BPF_SRC, d, f), 'utf8'));
  for (const d of ['', 'iter', 'trace', 'fallback'])
    for (const f of fs.readdirSync(path.join(BPF_SRC, d)).filter((x) => x.endsWith('.c'))) {
      let text = fs.readFileSync(path.join(BPF_SRC, d, f), 'utf8');
      // a program defined by a macro in an included header (iter/pw_map_dump.h)
      for (const [h, body] of headers) if (text.includes(`"${h}"`)) text += body;
      // a fallback includes the program it stands in for (bpf/fallback/<prog>.c)
      for (const m of text.matchAll(/^#include "\.\.\/(\w+\.c)"$/gm)) text += fs.readFileSync(path.join(BPF_SRC, m[1]!), 'utf8');
      const secs = [...text.matchAll(/SEC\("([^"]+)"\)/g)].map((m) => m[1]!).filter((s) => s !== 'license' && s !== '.maps');
      for (const section of new Set(secs)) out.push({ source: path.join(d, f), section });
    }
  return out;
}

let compiled: ProgramNeeds[] = [];

beforeAll(async () => {
  const names = helperNames();
  for (const o of await build()) {
    const source = path.relative(path.join(path.dirname(BPF_SRC), 'build', 'bpf'), o).replace(/\.o$/, '.c');
    for (const [section, ids] of await helperCallsBySection(o))
      compiled.push({ source, section, helpers: ids.map((i) => names.get(i) ?? `helper#${i}`).sort() });
  }
  compiled = compiled.sort((a, b) => a.source.localeCompare(b.source) || a.section.localeCompare(b.section));
}, 60_000);

const key = (n: { source: string; section: string }) => `${n.source} ${n.section}`;

describe('bpf/requirements.json', () => {
  it('lists exactly the program sections of the C sources, each with a known program and attach type', () => {
    expect(readNeeds().map(key).sort()).toEqual(sourceSections().map(key).sort());
    for (const n of readNeeds()) expect(() => sectionKind(n.section), n.section).not.toThrow();
  });

  it('lists exactly the helpers each compiled program calls (update it from the message if this fails)', () => {
    // optional helpers are called too (in a branch CO-RE keeps or removes at load): compare the union
    const listed = readNeeds()
      .map((n) => ({ source: n.source, section: n.section, helpers: [...n.helpers, ...(n.optionalHelpers ?? [])].sort() }))
      .sort((a, b) => a.source.localeCompare(b.source) || a.section.localeCompare(b.section));
    expect(compiled.length).toBeGreaterThan(0);
    expect(listed, `expected programs:\n${JSON.stringify(compiled, null, 2)}`).toEqual(compiled);
  });
});
