// Docs that cannot drift, checked in CI (`npm run docs:check`, part of `npm run check`):
//  - the map table in docs/maps.md is generated from the schema (abi/schema.ts),
//    the one place a map's type, size, key, value, writer and reader are written down;
//  - every relative link in the Markdown files (README.md, CONTRIBUTING.md, docs/,
//    deploy/, test/) points to a file inside the repository, and an anchor to a
//    heading of that file;
//  - no run report (a load average, the machine a figure was taken on, a dated
//    run) in README.md or docs/ outside docs/measurements.md, and README.md stays short.
//   tsx devtools/docs.ts --write   rewrite the table between the markers
//   tsx devtools/docs.ts --check   print every problem and exit 1 if there is one
import fs from 'node:fs';
import path from 'node:path';
import { MAPS, type MapDef, type StructDef } from '../abi/schema.js';
import { ROOT } from '../loader/build.js';

/** The page that holds the generated map table. */
export const MAP_TABLE_FILE = 'docs/maps.md';
/** The one page where figures with their date, machine and command belong. */
export const MEASUREMENTS_FILE = 'docs/measurements.md';
/** README.md longer than this fails the check: detail belongs in docs/. */
export const README_MAX_LINES = 300;

const BEGIN = '<!-- generated from abi/schema.ts by `npm run docs`: do not edit -->';
const END = '<!-- end of generated map table -->';

const fields = (s: StructDef): string =>
  s.fields
    .filter((f) => !f.name.startsWith('_pad'))
    .map((f) => f.name + (f.count ? `[${f.count}]` : ''))
    .join(', ');

const cell = (t: string): string => t.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function row(m: MapDef): string {
  const value = m.type === 'sockhash' ? 'socket' : `${m.value.name} { ${fields(m.value)} }`;
  const cols = [
    `\`${m.name}\``,
    m.type === 'sk_storage' ? 'sk_storage, per socket' : `${m.type}, ${m.maxEntries}`,
    `${m.key.name} { ${fields(m.key)} } → ${value}`,
    m.doc,
    m.writer,
    m.reader,
  ];
  return `| ${cols.map(cell).join(' | ')} |`;
}

export function mapTable(): string {
  return [
    BEGIN,
    '| map | type, default size | key → value | what | writer | reader |',
    '|---|---|---|---|---|---|',
    ...MAPS.map(row),
    END,
  ].join('\n');
}

/** The page's text with the table between the markers replaced. */
export function withMapTable(text: string, file = MAP_TABLE_FILE): string {
  const i = text.indexOf(BEGIN);
  const j = text.indexOf(END);
  if (i < 0 || j < i) throw new Error(`${file} has no generated map table (markers "${BEGIN}" … "${END}")`);
  return text.slice(0, i) + mapTable() + text.slice(j + END.length);
}

// ---- Markdown: headings, anchors, links ----

/** Lines outside fenced code blocks, with their 1-based numbers; inline code spans blanked out. */
function proseLines(md: string): { n: number; text: string; raw: string }[] {
  const out: { n: number; text: string; raw: string }[] = [];
  let fence: string | undefined;
  md.split('\n').forEach((raw, i) => {
    const f = /^\s{0,3}(`{3,}|~{3,})/.exec(raw);
    if (f) {
      if (!fence) fence = f[1]![0]!.repeat(f[1]!.length);
      else if (raw.trim().startsWith(fence)) fence = undefined;
      return;
    }
    if (fence) return;
    out.push({ n: i + 1, raw, text: raw.replace(/(`+)[^`]*?\1/g, (m) => ' '.repeat(m.length)) });
  });
  return out;
}

/** GitHub's anchor for a heading's text (github-slugger: lower case, drop punctuation but - and _, spaces → -). */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/(`+)([^`]*?)\1/g, '$2') // code spans: their content, verbatim
    .replace(/\*+/g, ''); // emphasis
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a Markdown file offers: its ATX headings (GitHub's numbering of repeats) and explicit <a id|name>. */
export function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { raw } of proseLines(md)) {
    const h = /^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+\s*)?$/.exec(raw);
    if (h) {
      const base = slug(h[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      out.add(n ? `${base}-${n}` : base);
    }
    for (const a of raw.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) out.add(a[1]!);
  }
  return out;
}

/** Link targets of a Markdown file, outside code: inline links and images, and reference definitions. */
export function links(md: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  for (const { n, text } of proseLines(md)) {
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ line: n, target: m[1]! });
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/.exec(text);
    if (def) out.push({ line: n, target: def[1]! });
  }
  return out;
}

/** Markdown files whose links are checked: every *.md of the repository outside generated and installed trees. */
export function markdownFiles(root = ROOT): string[] {
  const skip = new Set(['.git', 'node_modules', 'build', 'dist']);
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory() && !skip.has(e.name) && !e.name.startsWith('.')) walk(rel);
      else if (e.isFile() && e.name.endsWith('.md')) out.push(rel);
    }
  };
  walk('');
  return out.sort();
}

/** Every relative link that does not resolve: a file missing, outside the repository, or an anchor that is no heading. */
export function linkProblems(root = ROOT, files = markdownFiles(root)): string[] {
  const problems: string[] = [];
  const anchorCache = new Map<string, Set<string>>();
  const anchorsOf = (rel: string) => {
    if (!anchorCache.has(rel)) anchorCache.set(rel, anchors(fs.readFileSync(path.join(root, rel), 'utf8')));
    return anchorCache.get(rel)!;
  };
  for (const file of files) {
    const md = fs.readFileSync(path.join(root, file), 'utf8');
    for (const { line, target } of links(md)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
      const at = `${file}:${line}: link "${target}"`;
      const hash = target.indexOf('#');
      const rawPath = decodeURI(hash < 0 ? target : target.slice(0, hash));
      const frag = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
      if (rawPath.startsWith('/')) {
        problems.push(`${at}: absolute paths do not resolve on GitHub; link relative to ${path.dirname(file)}/`);
        continue;
      }
      const abs = rawPath === '' ? path.join(root, file) : path.resolve(root, path.dirname(file), rawPath);
      const rel = path.relative(root, abs);
      if (rel.startsWith('..') || path.isAbsolute(rel)) {
        problems.push(`${at}: points outside the repository (${abs}); link only what the repository holds`);
        continue;
      }
      if (!fs.existsSync(abs)) {
        problems.push(`${at}: no such file ${rel || '.'}`);
        continue;
      }
      const top = rel.split(path.sep)[0]!;
      if (['build', 'dist', 'node_modules'].includes(top)) {
        problems.push(`${at}: ${rel} is generated or installed, not part of the repository`);
        continue;
      }
      if (frag !== undefined && frag !== '' && rel.endsWith('.md') && !anchorsOf(rel).has(frag)) {
        problems.push(`${at}: ${rel} has no heading with anchor #${frag}`);
      }
    }
  }
  return problems;
}

/**
 * Run reports: what one run on one machine saw. They belong in
 * docs/measurements.md with the date, the machine and the command; anywhere
 * else in README.md and docs/ they are stale the day after.
 */
export const RUN_REPORT: { re: RegExp; what: string }[] = [
  { re: /load average/i, what: 'a load average' },
  { re: /this machine/i, what: '"this machine"' },
  { re: /2026-1/, what: 'a dated run' },
  { re: /this session/i, what: '"this session"' },
  { re: /\bissue \d+/i, what: 'an issue number' },
];

/** Files under README.md and docs/ that the run-report rule covers: text files, docs/measurements.md excepted. */
function reportRuleFiles(root: string): string[] {
  const docs: string[] = [];
  const walk = (dir: string) => {
    if (!fs.existsSync(path.join(root, dir))) return;
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      if (e.isDirectory()) walk(`${dir}/${e.name}`);
      else if (e.isFile()) docs.push(`${dir}/${e.name}`);
    }
  };
  walk('docs');
  return ['README.md', ...docs.sort()].filter((f) => f !== MEASUREMENTS_FILE && fs.existsSync(path.join(root, f)));
}

export function runReportProblems(root = ROOT): string[] {
  const problems: string[] = [];
  for (const file of reportRuleFiles(root)) {
    const buf = fs.readFileSync(path.join(root, file));
    if (buf.includes(0)) continue; // an image
    buf
      .toString('utf8')
      .split('\n')
      .forEach((text, i) => {
        for (const { re, what } of RUN_REPORT)
          if (re.test(text))
            problems.push(
              `${file}:${i + 1}: ${what} ("${re.exec(text)![0]}") is a run report: state what holds in general here, and put the figure with its date, machine and command in ${MEASUREMENTS_FILE}`,
            );
      });
  }
  return problems;
}

/** Every docs problem, each as one line saying where and what to do. */
export function docsProblems(root = ROOT): string[] {
  const problems: string[] = [];
  const tableFile = path.join(root, MAP_TABLE_FILE);
  try {
    const text = fs.readFileSync(tableFile, 'utf8');
    if (withMapTable(text) !== text) problems.push(`${MAP_TABLE_FILE}: the map table differs from abi/schema.ts; run \`npm run docs\``);
  } catch (e) {
    problems.push(e instanceof Error ? e.message : String(e));
  }
  const readme = path.join(root, 'README.md');
  const lines = fs.readFileSync(readme, 'utf8').split('\n').length - 1;
  if (lines > README_MAX_LINES)
    problems.push(`README.md: ${lines} lines, more than ${README_MAX_LINES}: move detail into a page under docs/ and link it`);
  problems.push(...linkProblems(root));
  problems.push(...runReportProblems(root));
  return problems;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  if (process.argv.includes('--write')) {
    const file = path.join(ROOT, MAP_TABLE_FILE);
    fs.writeFileSync(file, withMapTable(fs.readFileSync(file, 'utf8')));
  } else {
    const problems = docsProblems();
    if (problems.length) {
      process.stderr.write(
        `docs check: ${problems.length} problem${problems.length > 1 ? 's' : ''}\n${problems.map((p) => `  ${p}\n`).join('')}`,
      );
      process.exitCode = 1;
    }
  }
}
