// `podwarp build`: schema → build/include/pw_types.h + pw_maps.h, bpf/*.c → build/bpf/*.o.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from './clang.js';
import { InputError } from './errors.js';
import { generateHeader, generateTypesHeader } from '../abi/cgen.js';
import { log } from './log.js';

/** The repository (or image) root: the nearest directory above this file with package.json (src/ under tsx, dist/src/ compiled). */
export const ROOT = (() => {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(d, 'package.json'))) {
    const up = path.dirname(d);
    if (up === d) throw new Error('podwarp: no package.json above the sources');
    d = up;
  }
  return d;
})();
export const BPF_SRC = path.join(ROOT, 'bpf');
export const BUILD = path.join(ROOT, 'build');
export const OBJ_DIR = path.join(BUILD, 'bpf');
export const GEN_INCLUDE = path.join(BUILD, 'include');

/** Programs, one object each (bpf/*.c), loaded with `bpftool prog loadall`. */
export function programSources(): string[] {
  return fs
    .readdirSync(BPF_SRC)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => path.join(BPF_SRC, f));
}

/** Iterators (bpf/iter/*.c): standalone objects pinned with `bpftool iter pin`. */
export function iterSources(): string[] {
  const dir = path.join(BPF_SRC, 'iter');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function objectFor(src: string): string {
  const sub = path.basename(path.dirname(src)) === 'iter' ? 'iter' : '';
  return path.join(OBJ_DIR, sub, path.basename(src).replace(/\.c$/, '.o'));
}

function newest(files: string[]): number {
  return Math.max(0, ...files.map((f) => fs.statSync(f).mtimeMs));
}

/** "pw_svc=524288,pw_backends=262144" → sizes by map name. */
export function mapSizes(spec: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of (spec ?? '').split(',').filter(Boolean)) {
    const [name = '', n = ''] = part.split('=');
    if (!/^\d+$/.test(n)) throw new InputError(`PODWARP_MAP_SIZES: "${part}" is not map=entries`);
    out[name.trim()] = Number(n);
  }
  return out;
}

function generatedHeaders(): [string, string][] {
  return [
    [path.join(GEN_INCLUDE, 'pw_types.h'), generateTypesHeader()],
    [path.join(GEN_INCLUDE, 'pw_maps.h'), generateHeader(mapSizes(process.env.PODWARP_MAP_SIZES))],
  ];
}

function headerFiles(generated: [string, string][]): string[] {
  return [
    ...generated.map(([f]) => f),
    ...[BPF_SRC, path.join(BPF_SRC, 'iter')].flatMap((d) =>
      fs
        .readdirSync(d)
        .filter((f) => f.endsWith('.h'))
        .map((f) => path.join(d, f)),
    ),
  ];
}

function isStale(src: string, headers: string[]): boolean {
  const out = objectFor(src);
  return !fs.existsSync(out) || fs.statSync(out).mtimeMs < newest([src, ...headers]);
}

/**
 * Sources whose object `build()` would compile now (needs clang): none when
 * the objects were prebuilt (the image) and nothing changed since. Reads
 * only; a generated header whose text would change counts as changed.
 */
export function staleSources(): string[] {
  const generated = generatedHeaders();
  const changed = generated.some(([file, text]) => !fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text);
  const all = [...programSources(), ...iterSources()];
  return changed ? all : all.filter((src) => isStale(src, headerFiles(generated)));
}

/** Builds what is out of date; returns the object paths. */
export async function build(opts: { force?: boolean } = {}): Promise<string[]> {
  fs.mkdirSync(GEN_INCLUDE, { recursive: true });
  fs.mkdirSync(path.join(OBJ_DIR, 'iter'), { recursive: true });
  const generated = generatedHeaders();
  // rewritten only when the text changes: the objects' staleness follows the headers' mtime
  for (const [file, text] of generated) if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text) fs.writeFileSync(file, text);
  const headers = headerFiles(generated);
  const objs: string[] = [];
  for (const src of [...programSources(), ...iterSources()]) {
    const out = objectFor(src);
    if (opts.force || isStale(src, headers)) {
      const tmp = `${out}.tmp-${process.pid}`;
      await compile({ src, out: tmp, includeDirs: [GEN_INCLUDE, BPF_SRC] });
      fs.renameSync(tmp, out);
      log.info({ object: path.relative(ROOT, out) }, 'compiled');
    }
    objs.push(out);
  }
  return objs;
}
