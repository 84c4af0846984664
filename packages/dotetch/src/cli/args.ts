import { EtchError } from '@etch/format';

/**
 * Runs a `util.parseArgs` call, turning its errors (unknown or malformed flags) into usage errors (exit 2)
 * that show the command's usage.
 */
export function parseFlags<R>(parse: () => R, usage: string): R {
  try {
    return parse();
  } catch (cause) {
    throw new EtchError('ETCH_USAGE', `${(cause as Error).message}\n${usage}`, { cause });
  }
}

/** A usage error with the command's usage appended. */
export function usageError(message: string, usage: string): EtchError {
  return new EtchError('ETCH_USAGE', `${message}\n${usage}`);
}

/** The `-h/--help` flag every command accepts. */
export const helpFlag = { help: { type: 'boolean', short: 'h' } } as const;
