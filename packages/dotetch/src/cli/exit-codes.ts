import { isEtchError, type EtchErrorCode } from '@etch/format';

/**
 * Exit codes of `etch`, documented in the README:
 * 0 success · 1 operation failed · 2 usage error · 3 the input is not a valid .etch · 130 interrupted.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, invalidInput: 3, interrupted: 130 } as const;

const INVALID_ETCH: ReadonlySet<EtchErrorCode> = new Set([
  'ETCH_BAD_ARCHIVE',
  'ETCH_BAD_VERSION',
  'ETCH_UNSUPPORTED_VERSION',
  'ETCH_BAD_ORDER',
  'ETCH_BAD_ENTRY',
  'ETCH_UNSAFE_PATH',
]);

/**
 * The exit code for an error thrown by a command. The codes of a bad archive mean "not a valid .etch"
 * (3) only for a command that reads one; from `create` they are about what it was given to write (a
 * layer, a folder, a zip) and exit 1 like any failed operation.
 */
export function exitCodeFor(err: unknown, readsEtch = false): number {
  if (!isEtchError(err)) return EXIT.failed;
  if (err.code === 'ETCH_USAGE') return EXIT.usage;
  if (err.code === 'ETCH_ABORTED') return EXIT.interrupted;
  return readsEtch && INVALID_ETCH.has(err.code) ? EXIT.invalidInput : EXIT.failed;
}
