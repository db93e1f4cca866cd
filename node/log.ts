// Structured logs: JSON lines when stdout is not a terminal (service managers, the cluster
// script), pino-pretty when a person is watching.
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  /** Defaults to whether stdout is a TTY. */
  pretty?: boolean;
  /** Extra fields on every line (e.g. the node's name in a cluster). */
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  const usePretty = options.pretty ?? process.stdout.isTTY === true;
  const base = { ...options.base };
  // Synchronous destinations: a node that exits right after its last line must not lose it.
  const stream = usePretty
    ? pretty({ colorize: true, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' })
    : pino.destination({ dest: 1, sync: true });
  return pino({ level: options.level, base }, stream);
}
