// The map table of docs/maps.md, generated from the schema (abi/schema.ts):
// the one place a map's type, size, key, value, writer and reader are written down.
//   tsx devtools/docs.ts --write   rewrite the table between the markers
//   tsx devtools/docs.ts --check   exit 1 when docs/maps.md differs (CI)
import fs from 'node:fs';
import path from 'node:path';
import { MAPS, type MapDef, type StructDef } from '../abi/schema.js';
import { ROOT } from '../loader/build.js';

/** The page that holds the generated map table. */
export const MAP_TABLE_FILE = 'docs/maps.md';

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
  const cols = [`\`${m.name}\``, `${m.type}, ${m.maxEntries}`, `${m.key.name} { ${fields(m.key)} } → ${value}`, m.doc, m.writer, m.reader];
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

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const file = path.join(ROOT, MAP_TABLE_FILE);
  const text = fs.readFileSync(file, 'utf8');
  const want = withMapTable(text);
  if (process.argv.includes('--write')) {
    fs.writeFileSync(file, want);
  } else if (want !== text) {
    process.stderr.write(`${MAP_TABLE_FILE}: the map table differs from abi/schema.ts; run \`npm run docs\`\n`);
    process.exitCode = 1;
  }
}
