// `podwarp build`: schema → build/include/pw_types.h + pw_maps.h, bpf/*.c → build/bpf/*.o.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile, compileHost } from './clang.js';
import { InputError } from '../host/errors.js';
import { generateHeader, generateTypesHeader } from '../abi/cgen.js';
import { log } from '../host/log.js';

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

/** The C sources of one directory under bpf/, sorted. */
function cSources(sub: string): string[] {
  const dir = path.join(BPF_SRC, sub);
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Programs, one object each (bpf/*.c), loaded with `bpftool prog loadall`. */
export const programSources = (): string[] => cSources('');

/** Iterators (bpf/iter/*.c): standalone objects pinned with `bpftool iter pin`. */
export const iterSources = (): string[] => cSources('iter');

/**
 * Tracing programs (bpf/trace/<kernel function>.c): one object per name the
 * hooked kernel function has had; the loader loads the first the running
 * kernel has (loader/datapath.ts).
 */
export const traceSources = (): string[] => cSources('trace');

/**
 * Fallbacks (bpf/fallback/<program>.c): the program of bpf/<program>.c built
 * without what some kernels refuse; loaded only when the kernel refuses the
 * program itself (loader/datapath.ts).
 */
export const fallbackSources = (): string[] => cSources('fallback');

/** Every BPF source `build()` compiles. */
export function bpfSources(): string[] {
  return [...programSources(), ...iterSources(), ...traceSources(), ...fallbackSources()];
}

/** The subdirectories of bpf/ (and build/bpf/) that hold objects of their own kind. */
export const OBJECT_KINDS = ['iter', 'trace', 'fallback'] as const;

/** The host tool that attaches tracing programs (loader/native/pw_trace_link.c). */
export const TRACE_LINK_SRC = path.join(ROOT, 'loader', 'native', 'pw_trace_link.c');
export const TRACE_LINK_BIN = path.join(BUILD, 'bin', 'pw-trace-link');

export function objectFor(src: string): string {
  const parent = path.basename(path.dirname(src));
  const sub = (OBJECT_KINDS as readonly string[]).includes(parent) ? parent : '';
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
    ...[BPF_SRC, path.join(BPF_SRC, 'iter'), path.join(BPF_SRC, 'trace')].flatMap((d) =>
      fs
        .readdirSync(d)
        .filter((f) => f.endsWith('.h'))
        .map((f) => path.join(d, f)),
    ),
  ];
}

function isStale(src: string, headers: string[], out = objectFor(src)): boolean {
  // a fallback includes the program it stands in for
  const base = path.basename(path.dirname(src)) === 'fallback' ? [path.join(BPF_SRC, path.basename(src))] : [];
  return !fs.existsSync(out) || fs.statSync(out).mtimeMs < newest([src, ...base, ...headers]);
}

/**
 * Sources whose object `build()` would compile now (needs clang): none when
 * the objects were prebuilt (the image) and nothing changed since. Reads
 * only; a generated header whose text would change counts as changed.
 */
export function staleSources(): string[] {
  const generated = generatedHeaders();
  const changed = generated.some(([file, text]) => !fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text);
  const all = bpfSources();
  const stale = changed ? all : all.filter((src) => isStale(src, headerFiles(generated)));
  return isStale(TRACE_LINK_SRC, [], TRACE_LINK_BIN) ? [...stale, TRACE_LINK_SRC] : stale;
}

/** Builds what is out of date; returns the object paths. */
export async function build(opts: { force?: boolean } = {}): Promise<string[]> {
  fs.mkdirSync(GEN_INCLUDE, { recursive: true });
  for (const k of OBJECT_KINDS) fs.mkdirSync(path.join(OBJ_DIR, k), { recursive: true });
  const generated = generatedHeaders();
  // rewritten only when the text changes: the objects' staleness follows the headers' mtime
  for (const [file, text] of generated) if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text) fs.writeFileSync(file, text);
  const headers = headerFiles(generated);
  const objs: string[] = [];
  for (const src of bpfSources()) {
    const out = objectFor(src);
    if (opts.force || isStale(src, headers)) {
      const tmp = `${out}.tmp-${process.pid}`;
      await compile({ src, out: tmp, includeDirs: [GEN_INCLUDE, BPF_SRC] });
      fs.renameSync(tmp, out);
      log.info({ object: path.relative(ROOT, out) }, 'compiled');
    }
    objs.push(out);
  }
  if (opts.force || isStale(TRACE_LINK_SRC, [], TRACE_LINK_BIN)) {
    fs.mkdirSync(path.dirname(TRACE_LINK_BIN), { recursive: true });
    await compileHost(TRACE_LINK_SRC, `${TRACE_LINK_BIN}.tmp-${process.pid}`);
    fs.renameSync(`${TRACE_LINK_BIN}.tmp-${process.pid}`, TRACE_LINK_BIN);
    log.info({ tool: path.relative(ROOT, TRACE_LINK_BIN) }, 'compiled');
  }
  return objs;
}
