import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { EtchError, abortError, isEtchError } from '@etch/format';
import type { BaseImageProgress } from './types.js';

/** Options of {@link sizeChecked}. */
export interface SizeCheckOptions {
  /** Names the image in errors. */
  what: string;
  signal?: AbortSignal;
  onProgress?: (event: BaseImageProgress) => void;
  /** Phase reported to `onProgress` (default `read`). */
  phase?: BaseImageProgress['phase'];
  /** Maps errors from the input that are not EtchErrors (yauzl, zlib, fs) to one. */
  wrapError?: (error: unknown) => EtchError;
}

/** Any error as an EtchError: aborts as `ETCH_ABORTED`, the rest through `wrap` (default `ETCH_IO`). */
export function asEtchError(
  error: unknown,
  signal: AbortSignal | undefined,
  wrap?: (error: unknown) => EtchError,
): EtchError {
  if (isEtchError(error)) return error;
  if (signal?.aborted) return abortError(signal);
  if (wrap) return wrap(error);
  return new EtchError('ETCH_IO', (error as Error)?.message ?? String(error), { cause: error });
}

/**
 * Passes `input` through, checking it delivers exactly `size` bytes: one byte too many fails at once, too few
 * fail at the end, both with `ETCH_SIZE_MISMATCH`. Reports progress, honours the signal, and closes the input
 * when the consumer stops early.
 */
export async function* sizeChecked(
  input: AsyncIterable<Uint8Array>,
  size: number,
  options: SizeCheckOptions,
): AsyncGenerator<Buffer> {
  const { signal } = options;
  const phase = options.phase ?? 'read';
  let bytes = 0;
  try {
    if (signal?.aborted) throw abortError(signal);
    options.onProgress?.({ phase, bytes: 0, total: size });
    for await (const data of input) {
      if (signal?.aborted) throw abortError(signal);
      const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      if (chunk.length === 0) continue;
      bytes += chunk.length;
      if (bytes > size) {
        throw new EtchError(
          'ETCH_SIZE_MISMATCH',
          `${options.what} delivered more than the ${size} bytes it was declared with.`,
          { details: { expected: size } },
        );
      }
      options.onProgress?.({ phase, bytes, total: size });
      yield chunk;
    }
  } catch (error) {
    throw asEtchError(error, signal, options.wrapError);
  }
  if (bytes < size) {
    throw new EtchError(
      'ETCH_SIZE_MISMATCH',
      `${options.what} ended after ${bytes} of the ${size} bytes it was declared with.`,
      { details: { expected: size, actual: bytes } },
    );
  }
}

/** Checks the sha256 of everything `input` yields against `expected` (hex), at the end. */
export async function* sha256Checked(
  input: AsyncIterable<Uint8Array>,
  expected: string,
  what: string,
  onMismatch?: () => Promise<void>,
): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  for await (const data of input) {
    const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data);
    hash.update(chunk);
    yield chunk;
  }
  const actual = hash.digest('hex');
  if (actual !== expected) {
    await onMismatch?.();
    throw new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `${what} does not match its recorded sha256 (expected ${expected}, got ${actual}).`,
      { details: { digest: `sha256:${expected}`, actual: `sha256:${actual}` } },
    );
  }
}

/**
 * A byte stream from an async iterable. Destroying the stream returns the iterator, which closes whatever the
 * generators below hold (files, connections, zips).
 */
export function toReadable(source: AsyncIterable<Buffer>, highWaterMark = 1024 * 1024): Readable {
  return Readable.from(source, { objectMode: false, highWaterMark });
}

/** Runs `close` once, when the iteration ends for any reason (end, error, or the consumer stopping). */
export async function* finallyDo(
  input: AsyncIterable<Buffer>,
  close: () => void | Promise<void>,
): AsyncGenerator<Buffer> {
  try {
    yield* input;
  } finally {
    await close();
  }
}
