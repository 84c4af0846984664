import { isEtchError, type EtchErrorCode } from '@etch/format';

/**
 * Exit codes of `etch`, documented in the README:
 * 0 success · 1 operation failed · 2 usage error · 3 the input is not a valid .etch · 130 interrupted.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, invalidInput: 3, interrupted: 130 } as const;

const INVALID_INPUT: ReadonlySet<EtchErrorCode> = new Set([
  'ETCH_BAD_ARCHIVE',
  'ETCH_BAD_VERSION',
  'ETCH_UNSUPPORTED_VERSION',
  'ETCH_BAD_ORDER',
  'ETCH_BAD_ENTRY',
  'ETCH_UNSAFE_PATH',
]);

/** The exit code for an error thrown by a command. */
export function exitCodeFor(err: unknown): number {
  if (!isEtchError(err)) return EXIT.failed;
  if (err.code === 'ETCH_USAGE') return EXIT.usage;
  if (err.code === 'ETCH_ABORTED') return EXIT.interrupted;
  return INVALID_INPUT.has(err.code) ? EXIT.invalidInput : EXIT.failed;
}
