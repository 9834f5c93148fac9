// Output of the read commands (stdout): plain-text tables, and `-o` (docs/cli.md#output).
import YAML from 'yaml';
import { InputError } from '../host/errors.js';

/** table: columns for a person; wide: the table with every column in full; json, yaml: the data. */
export type OutputFormat = 'table' | 'wide' | 'json' | 'yaml';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'wide', 'json', 'yaml'];
export const OUTPUT_HELP = OUTPUT_FORMATS.join(' | ');

export function checkFormat(f: string): OutputFormat {
  if (!(OUTPUT_FORMATS as readonly string[]).includes(f))
    throw new InputError(`-o: unknown output format "${f}" (${OUTPUT_FORMATS.join(', ')})`);
  return f as OutputFormat;
}

/** json and yaml print the data, the others a table. */
export const isData = (f: OutputFormat): f is 'json' | 'yaml' => f === 'json' || f === 'yaml';

/** x as -o json or -o yaml prints it: the YAML is the JSON's object (bigints as numbers, undefined left out). */
export function data(x: unknown, f: 'json' | 'yaml'): string {
  const j = json(x);
  return f === 'json' ? j : YAML.stringify(JSON.parse(j), { lineWidth: 0 });
}

/** A table with every cell in full (fitTable without a width). */
export function table(headers: string[], rows: (string | number | bigint)[][]): string {
  return fitTable(headers, rows, { width: Infinity, shrink: [] }).text;
}

/**
 * A table at most `width` columns wide: the columns in `shrink` give up room, the widest first,
 * down to `min` each, and their cells are cut with "…". `cut`: the indexes of the rows with a cell cut.
 */
export function fitTable(
  headers: string[],
  rows: (string | number | bigint)[][],
  o: { width: number; shrink: number[]; min?: number },
): { text: string; cut: Set<number> } {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const min = o.min ?? 12;
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
  // one column at a time, always the widest that may shrink, so the room is shared
  while (total() > o.width) {
    const i = o.shrink.filter((k) => widths[k]! > min).sort((a, b) => widths[b]! - widths[a]!)[0];
    if (i === undefined) break;
    widths[i]!--;
  }
  const cutRows = new Set<number>();
  const cut = (s: string, w: number, row: number) => {
    if (s.length <= w) return s;
    if (row > 0) cutRows.add(row - 1);
    return s.slice(0, w - 1) + '…';
  };
  const text = cells
    .map((r, row) =>
      r.map((c, i) => (i === r.length - 1 ? cut(c, widths[i]!, row) : cut(c, widths[i]!, row).padEnd(widths[i]!))).join('  '),
    )
    .join('\n');
  return { text: text + '\n', cut: cutRows };
}

/** Prose wrapped at `width` columns, continuation lines indented by `indent`. */
export function wrap(s: string, width: number, indent = '  '): string {
  const lead = /^ */.exec(s)![0];
  const out: string[] = [];
  let line = lead;
  for (const w of s.slice(lead.length).split(/ +/)) {
    if (line.trim() && line.length + 1 + w.length > width) {
      out.push(line);
      line = indent + w;
    } else line = line.trim() ? `${line} ${w}` : line + w;
  }
  out.push(line);
  return out.join('\n');
}

export function json(x: unknown): string {
  return JSON.stringify(x, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v), 2) + '\n';
}
