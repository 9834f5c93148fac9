// The only place in podwarp that spawns a process. One log line per command
// (argv, exit code, duration); failures become ToolError with context.
import { execa, type ResultPromise } from 'execa';
import { log } from './log.js';
import { ToolError } from './errors.js';

export interface RunOptions {
  input?: string;
  /** Do not throw on a non-zero exit; return the result. */
  reject?: boolean;
  timeoutMs?: number;
  cwd?: string;
  env?: Record<string, string>;
}

export interface RunResult {
  argv: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * A command that has not finished after this long is killed and fails:
 * PODWARP_EXEC_TIMEOUT_MS, default 120 s (raise it on a very slow machine,
 * e.g. the kernel-matrix VMs under software emulation).
 */
const DEFAULT_TIMEOUT_MS = Number(process.env.PODWARP_EXEC_TIMEOUT_MS) > 0 ? Number(process.env.PODWARP_EXEC_TIMEOUT_MS) : 120_000;

export async function run(what: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('run: empty argv');
  const t0 = performance.now();
  let r;
  try {
    r = await execa(cmd, args, {
      input: opts.input,
      reject: false,
      timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      cwd: opts.cwd,
      env: opts.env,
      stripFinalNewline: false,
    });
  } catch (e) {
    throw new ToolError(what, argv, undefined, e instanceof Error ? e.message : String(e));
  }
  const ms = Math.round((performance.now() - t0) * 10) / 10;
  const exitCode = r.exitCode ?? -1;
  log.debug({ argv, exitCode, ms }, 'exec');
  if (r.failed && r.exitCode === undefined) {
    // spawn error (ENOENT), timeout or signal
    throw new ToolError(what, argv, undefined, String(r.stderr || r.message || 'failed'));
  }
  if (exitCode !== 0 && opts.reject !== false) throw new ToolError(what, argv, exitCode, String(r.stderr || r.stdout));
  return { argv, exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A long-running child (benchmark servers, the agent in tests). */
export function spawnLong(argv: string[], opts: { env?: Record<string, string>; forceKillAfterMs?: number } = {}): ResultPromise {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('spawn: empty argv');
  log.debug({ argv }, 'spawn');
  // kill(): SIGKILL follows when the child has not exited after forceKillAfterMs (execa's default: 5 s)
  return execa(cmd, args, {
    reject: false,
    env: opts.env,
    buffer: true,
    stdin: 'ignore',
    forceKillAfterDelay: opts.forceKillAfterMs ?? 5000,
  });
}

/**
 * A child that holds something for as long as its stdin stays open (the
 * node lock, host/lock.ts): stdin is a pipe this process keeps, so the
 * child sees EOF when this process exits, however it dies.
 */
export function spawnHolder(argv: string[]): ResultPromise<{ stdin: 'pipe'; buffer: false; reject: false }> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('spawn: empty argv');
  log.debug({ argv }, 'spawn');
  return execa(cmd, args, { reject: false, buffer: false, stdin: 'pipe' });
}

export async function which(cmd: string): Promise<string | undefined> {
  const r = await run(`look up ${cmd}`, ['sh', '-c', `command -v ${cmd}`], { reject: false });
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

/** Calls `onLine` for every complete line a child writes on `stream`. */
export function onLines(stream: NodeJS.ReadableStream | null | undefined, onLine: (line: string) => void): void {
  let buf = '';
  stream?.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      onLine(line);
    }
  });
}
