// Compiles BPF C with clang: the local one, or the toolchain image
// (PODWARP_TOOLCHAIN_IMAGE, see Dockerfile) when there is no local clang.
import fs from 'node:fs';
import path from 'node:path';
import { FeatureMissingError } from '../host/errors.js';
import { run, which } from '../host/exec.js';

export interface CompileJob {
  src: string;
  out: string;
  includeDirs: string[];
  defines?: Record<string, string | number>;
}

function multiarchInclude(): string[] {
  // <asm/types.h> lives under the multiarch dir on Debian/Ubuntu
  const arch = ({ x64: 'x86_64', arm64: 'aarch64' } as Record<string, string>)[process.arch] ?? process.arch;
  const dir = `/usr/include/${arch}-linux-gnu`;
  return fs.existsSync(dir) ? [dir] : [];
}

export function clangArgs(job: CompileJob, extraIncludes: string[]): string[] {
  return [
    '-O2',
    '-g',
    '-target',
    'bpf',
    '-Wall',
    '-Werror',
    '-Wno-unused-function',
    ...[...job.includeDirs, ...extraIncludes].flatMap((d) => ['-I', d]),
    ...Object.entries(job.defines ?? {}).map(([k, v]) => `-D${k}=${v}`),
    '-c',
    job.src,
    '-o',
    job.out,
  ];
}

export async function compile(job: CompileJob): Promise<void> {
  const clang = await which('clang');
  if (clang) {
    await run(`compile ${path.basename(job.src)}`, [clang, ...clangArgs(job, multiarchInclude())]);
    return;
  }
  const image = process.env.PODWARP_TOOLCHAIN_IMAGE;
  if (image && (await which('docker'))) {
    // the image has the same paths mounted at the same place
    const root = process.cwd();
    await run(`compile ${path.basename(job.src)} in ${image}`, [
      'docker',
      'run',
      '--rm',
      '-v',
      `${root}:${root}`,
      '-w',
      root,
      image,
      'clang',
      ...clangArgs(job, ['/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu']),
    ]);
    return;
  }
  throw new FeatureMissingError(
    'clang',
    'no clang on PATH (apt-get install clang llvm libbpf-dev) and no PODWARP_TOOLCHAIN_IMAGE with a docker engine',
  );
}

/** Compiles a host C tool (devtools/tools/pwperf.c) with the local clang or cc. */
export async function compileHost(src: string, out: string): Promise<void> {
  const cc = (await which('clang')) ?? (await which('cc')) ?? (await which('gcc'));
  if (!cc) throw new FeatureMissingError('cc', 'no C compiler on PATH (apt-get install clang)');
  await run(`compile ${path.basename(src)}`, [cc, '-O2', '-Wall', '-o', out, src]);
}

/** Helper ids called by a BPF object and its program (code) sections (llvm-objdump), for the kernel-floor check. */
export async function objectCalls(obj: string): Promise<{ helperIds: number[]; programSections: string[] }> {
  const dis = await run('disassemble', ['llvm-objdump', '-d', obj]);
  // helper calls have src_reg 0 (second byte 00); bpf-to-bpf calls are pc-relative
  const helperIds = [...dis.stdout.matchAll(/\t85 00 [0-9a-f ]+\tcall (\d+)$/gm)].map((m) => Number(m[1]));
  const hdr = await run('list sections', ['llvm-objdump', '-h', obj]);
  const programSections = [...hdr.stdout.matchAll(/^\s*\d+\s+(\S+)\s+([0-9a-f]{8})\s+[0-9a-f]{16}\s+TEXT\s*$/gm)]
    .filter((m) => m[1] !== '.text' || parseInt(m[2]!, 16) > 0)
    .map((m) => m[1]!);
  return { helperIds, programSections };
}

/**
 * Helper ids called from each program section of a BPF object (llvm-objdump):
 * what the kernel must offer that program type. Calls from `.text`
 * (bpf-to-bpf subprograms) count for every program section of the object.
 */
export async function helperCallsBySection(obj: string): Promise<Map<string, number[]>> {
  const { programSections } = await objectCalls(obj);
  const dis = await run('disassemble', ['llvm-objdump', '-d', obj]);
  const bySection = new Map<string, Set<number>>();
  for (const part of dis.stdout.split(/^Disassembly of section /m).slice(1)) {
    const name = part.slice(0, part.indexOf(':'));
    const ids = [...part.matchAll(/\t85 00 [0-9a-f ]+\tcall (\d+)$/gm)].map((m) => Number(m[1]));
    bySection.set(name, new Set(ids));
  }
  const shared = bySection.get('.text') ?? new Set<number>();
  const out = new Map<string, number[]>();
  for (const s of programSections.filter((x) => x !== '.text'))
    out.set(
      s,
      [...new Set([...(bySection.get(s) ?? []), ...shared])].sort((a, b) => a - b),
    );
  return out;
}
