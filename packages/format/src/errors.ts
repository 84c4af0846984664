/**
 * Every failure the toolkit reports is an {@link EtchError} with a stable string `code`.
 * Codes are part of the public API: they never change meaning, new ones are only added.
 */
export type EtchErrorCode =
  /** The archive is not a readable tar (corrupt header, truncated, bad checksum). */
  | 'ETCH_BAD_ARCHIVE'
  /** The VERSION entry is missing, not first, or unreadable. */
  | 'ETCH_BAD_VERSION'
  /** The VERSION names a major version this reader does not implement. */
  | 'ETCH_UNSUPPORTED_VERSION'
  /** Entries are in an order the format forbids (inject before base image, two base images…). */
  | 'ETCH_BAD_ORDER'
  /** An entry has a name, type or header the format does not allow. */
  | 'ETCH_BAD_ENTRY'
  /** A path would leave its root (absolute, `..`, NUL, hardlink into another partition). */
  | 'ETCH_UNSAFE_PATH'
  /** A stream delivered more or fewer bytes than its declared size. */
  | 'ETCH_SIZE_MISMATCH'
  /** Content did not hash to the digest it was announced with. */
  | 'ETCH_DIGEST_MISMATCH'
  /** A registry or server refused the credentials. */
  | 'ETCH_AUTH_FAILED'
  /** The credentials were accepted but do not allow this operation (a push without push rights). */
  | 'ETCH_DENIED'
  /** The registry does not offer this operation (deletes disabled, a method it does not implement). */
  | 'ETCH_UNSUPPORTED'
  /** No image in an index matches the requested platform. */
  | 'ETCH_PLATFORM_NOT_FOUND'
  /** A network request failed after retries. */
  | 'ETCH_NETWORK'
  /** The requested thing (image, tag, file) does not exist. */
  | 'ETCH_NOT_FOUND'
  /** The operation was cancelled through its AbortSignal. */
  | 'ETCH_ABORTED'
  /** A local file could not be read or written. */
  | 'ETCH_IO'
  /** The caller passed options that cannot work together or are malformed. */
  | 'ETCH_USAGE'
  /** A compression format is not supported on this runtime. */
  | 'ETCH_UNSUPPORTED_COMPRESSION'
  /** A disk image has no readable partition table, or a partition or filesystem in it is not what was expected. */
  | 'ETCH_BAD_DISK_IMAGE'
  /** A manifest, index or config is malformed (not JSON, missing fields, bad descriptors). */
  | 'ETCH_BAD_MANIFEST'
  /** A manifest or layer is valid but of a kind this toolkit refuses (Docker schema 1, an artifact, a foreign layer). */
  | 'ETCH_UNSUPPORTED_MANIFEST';

const BRAND = Symbol.for('@etch/error');

/** Data that helps a caller act on an error; never holds secrets. */
export interface EtchErrorDetails {
  /** The archive entry the error is about. */
  entryName?: string;
  /** The digest that was expected. */
  digest?: string;
  /** The HTTP status code, for network failures. */
  statusCode?: number;
  /** The local path the error is about. */
  path?: string;
  /** Anything else, already free of credentials. */
  [key: string]: unknown;
}

/** Options for {@link EtchError}. */
export interface EtchErrorOptions {
  /** The underlying error. */
  cause?: unknown;
  /** Machine-readable context. */
  details?: EtchErrorDetails;
}

/**
 * The base of every error the `@etch/*` packages throw.
 *
 * @example
 * ```ts
 * try { await readAll(stream) } catch (err) {
 *   if (isEtchError(err, 'ETCH_UNSAFE_PATH')) console.error(err.details.entryName)
 * }
 * ```
 */
export class EtchError extends Error {
  /** Stable machine-readable code. */
  readonly code: EtchErrorCode;
  /** Context for the error; never contains credentials. */
  readonly details: EtchErrorDetails;

  constructor(code: EtchErrorCode, message: string, options: EtchErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EtchError';
    this.code = code;
    this.details = options.details ?? {};
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/**
 * True when `err` is an {@link EtchError} (from any copy of this package), optionally with the given code.
 */
export function isEtchError(err: unknown, code?: EtchErrorCode): err is EtchError {
  if (typeof err !== 'object' || err === null || (err as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (err as EtchError).code === code;
}

/**
 * Turns whatever an aborted signal carries into an `ETCH_ABORTED` error, keeping the reason as cause.
 */
export function abortError(signal?: AbortSignal): EtchError {
  const reason: unknown = signal?.reason;
  if (isEtchError(reason)) return reason;
  return new EtchError('ETCH_ABORTED', 'The operation was aborted.', { cause: reason });
}

/** Throws `ETCH_ABORTED` at once when the signal is already aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * `promise`, or a rejection with `ETCH_ABORTED` as soon as `signal` fires, whichever comes first: for waiting on
 * work shared with others (a download another caller started), which this caller's abort must not cancel.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** How {@link toEtchError} describes an error that is not an {@link EtchError} yet. */
export interface ToEtchErrorOptions {
  /** The code for a foreign error (default `ETCH_IO`). */
  code?: EtchErrorCode;
  /** The message for a foreign error, from its own message (default: that message as is). */
  message?: (causeMessage: string) => string;
  /** Context to attach to a foreign error. */
  details?: EtchErrorDetails;
  /** When this signal is aborted, the result is its `ETCH_ABORTED` error whatever `error` is. */
  signal?: AbortSignal | undefined;
}

/**
 * The one way a package boundary turns a third-party error (fs, zlib, tar-stream, yauzl, undici) into an
 * {@link EtchError}: an `EtchError` passes through unchanged, an abort becomes `ETCH_ABORTED`, anything else
 * gets `options.code` with the original chained as `cause`.
 *
 * @example
 * ```ts
 * catch (err) { throw toEtchError(err, { code: 'ETCH_BAD_ARCHIVE', message: (m) => `Reading the .etch failed: ${m}` }) }
 * ```
 */
export function toEtchError(error: unknown, options: ToEtchErrorOptions = {}): EtchError {
  if (isEtchError(error)) return error;
  if (options.signal?.aborted) return abortError(options.signal);
  const causeMessage = error instanceof Error ? error.message : String(error);
  const message = options.message ? options.message(causeMessage) : causeMessage;
  return new EtchError(options.code ?? 'ETCH_IO', message, {
    cause: error,
    ...(options.details === undefined ? {} : { details: options.details }),
  });
}
