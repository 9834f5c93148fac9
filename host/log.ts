// Logs go to stderr (stdout is for data): one JSON object per line where a
// machine reads them (the DaemonSet, a pipe), readable lines for a person at
// a terminal. `--log-format json|pretty|auto` (or PODWARP_LOG_FORMAT) and
// `--log-level` (or PODWARP_LOG_LEVEL) choose; auto = pretty on a TTY.
import pino from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'json' | 'pretty' | 'auto';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty', 'auto'];

const human = (f: LogFormat): boolean => f === 'pretty' || (f === 'auto' && process.stderr.isTTY === true);

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

let format: LogFormat = (process.env.PODWARP_LOG_FORMAT as LogFormat | undefined) ?? 'auto';
let level = process.env.PODWARP_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info';

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
  format = o.format ?? format;
  level = o.level ?? level;
  log = make(format, level);
}
