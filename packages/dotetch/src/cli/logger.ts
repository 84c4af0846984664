import type { Writable } from 'node:stream';
import type { LogFields, Logger } from '@etch/format';

export type LogLevel = 'quiet' | 'info' | 'debug';

function line(message: string, fields?: LogFields): string {
  const extra = fields
    ? Object.entries(fields)
        .map(([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join('')
    : '';
  return `etch: ${message}${extra}\n`;
}

/** The CLI's one logger: lines to stderr, filtered by level. Libraries only ever see the Logger interface. */
export function createCliLogger(stderr: Writable, level: LogLevel): Logger {
  return {
    debug: (message, fields) => {
      if (level === 'debug') stderr.write(line(message, fields));
    },
    info: (message, fields) => {
      if (level === 'debug') stderr.write(line(message, fields));
    },
    warn: (message, fields) => {
      if (level !== 'quiet') stderr.write(line(`warning: ${message}`, fields));
    },
  };
}
