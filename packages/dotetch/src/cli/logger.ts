import type { Writable } from 'node:stream';
import type { LogFields, Logger } from '@etch/format';
import { writeAbove } from './status-area.js';

export type LogLevel = 'quiet' | 'info' | 'debug';

function line(message: string, fields?: LogFields): string {
  const extra = fields
    ? Object.entries(fields)
        // A field a library left undefined says nothing (it used to print `status=undefined`).
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join('')
    : '';
  return `etch: ${message}${extra}\n`;
}

/**
 * The CLI's one logger: lines to stderr (above the progress lines of a terminal), filtered by level. Libraries
 * only ever see the Logger interface.
 */
export function createCliLogger(stderr: Writable, level: LogLevel): Logger {
  return {
    debug: (message, fields) => {
      if (level === 'debug') writeAbove(stderr, line(message, fields));
    },
    info: (message, fields) => {
      if (level === 'debug') writeAbove(stderr, line(message, fields));
    },
    warn: (message, fields) => {
      if (level !== 'quiet') writeAbove(stderr, line(`warning: ${message}`, fields));
    },
  };
}
