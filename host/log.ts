// Logs go to stderr (stdout is for data): one JSON object per line where a
// machine reads them (the DaemonSet, a pipe), readable lines for a person at
// a terminal. `--log-format json|pretty|auto` (or PODWARP_LOG_FORMAT) and
// `--log-level` (or PODWARP_LOG_LEVEL) choose; auto = pretty on a TTY.
import pino from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'json' | 'pretty' | 'auto';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty', 'auto'];
/** pino's levels, in order, and silent. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const human = (f: LogFormat): boolean => f === 'pretty' || (f === 'auto' && process.stderr.isTTY === true);
const isLevel = (l: string): boolean => (LOG_LEVELS as readonly string[]).includes(l);

function make(format: LogFormat, level: string): pino.Logger {
  const opts = { name: 'podwarp', level };
  if (!human(format)) return pino(opts, pino.destination({ fd: 2, sync: true }));
  const stream = pretty({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    singleLine: true,
  });
  return pino(opts, stream);
}

const envFormat = process.env.PODWARP_LOG_FORMAT as LogFormat | undefined;
let format: LogFormat = envFormat && LOG_FORMATS.includes(envFormat) ? envFormat : 'auto';
const envLevel = process.env.PODWARP_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';
// a bogus level in the environment must not break the import: the CLI rejects it with a message (--log-level)
let level = isLevel(envLevel) ? envLevel : 'info';

/** The logger (a live binding: configureLog replaces it for every importer). */
export let log: pino.Logger = make(format, level);
export type Logger = pino.Logger;

/** Log lines are for a person (pretty), not a machine (JSON). */
export function humanLogs(): boolean {
  return human(format);
}

/** Changes the format and/or level of every later log line. */
export function configureLog(o: { format?: LogFormat; level?: string }): void {
  if (o.format && !LOG_FORMATS.includes(o.format)) throw new Error(`log format "${o.format}" is not one of ${LOG_FORMATS.join(', ')}`);
  if (o.level !== undefined && !isLevel(o.level)) throw new Error(`log level "${o.level}" is not one of ${LOG_LEVELS.join(', ')}`);
  format = o.format ?? format;
  level = o.level ?? level;
  log = make(format, level);
}

/**
 * The line that ends a failed command, as JSON on stderr (`--log-format json`): written whatever
 * the log level, since it is the command's result (the text form is the CLI's own line).
 */
export function logFailure(fields: Record<string, unknown>, msg: string): void {
  make('json', 'error').error(fields, msg);
}
