// pino JSON logs on stderr; stdout is for data.
import pino from 'pino';

export const log = pino(
  { name: 'podwarp', level: process.env.PODWARP_LOG_LEVEL ?? process.env.LOG_LEVEL ?? 'info' },
  pino.destination({ fd: 2, sync: true }),
);
export type Logger = typeof log;
