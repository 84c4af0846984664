import { createReadStream } from 'node:fs';
import { EtchError, abortError } from '@etch/format';
import type { BlobProgress } from './blob-stream.js';
import { algorithmOf, digestOf, hasherFor } from './digest.js';

/**
 * Streams `length` bytes of a local file from `start`, checked the way a registry blob is: never more than
 * the descriptor's size, and exactly that size hashing to its digest at the end (the digest check can be
 * left to a consumer that makes it anyway: `verifyDigest: false`).
 */
export async function* verifiedFileRange(
  path: string,
  start: number,
  descriptor: { digest: string; size: number },
  what: string,
  options: { signal?: AbortSignal; onProgress?: (progress: BlobProgress) => void; verifyDigest?: boolean } = {},
): AsyncGenerator<Buffer> {
  const hash = options.verifyDigest === false ? undefined : hasherFor(descriptor.digest);
  let bytes = 0;
  // Exactly the declared range is read (the blob may sit inside a larger file, a docker save tar); an empty
  // blob reads nothing, since a read stream cannot express an empty range.
  const stream =
    descriptor.size > 0
      ? createReadStream(path, {
          start,
          end: start + descriptor.size - 1,
          highWaterMark: 256 * 1024,
          ...(options.signal ? { signal: options.signal } : {}),
        })
      : undefined;
  try {
    for await (const chunk of (stream ?? []) as AsyncIterable<Buffer>) {
      hash?.update(chunk);
      bytes += chunk.length;
      options.onProgress?.({ digest: descriptor.digest, bytes, total: descriptor.size });
      yield chunk;
    }
  } catch (cause) {
    // The stream is destroyed when the signal aborts: that is the caller giving up, not the disk failing.
    if (options.signal?.aborted) throw abortError(options.signal);
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT')
      throw new EtchError('ETCH_NOT_FOUND', `${what} (${descriptor.digest}) is missing from ${path}.`, {
        cause,
        details: { path, digest: descriptor.digest },
      });
    throw new EtchError('ETCH_IO', `Reading ${what} from ${path} failed: ${(cause as Error).message}`, {
      cause,
      details: { path },
    });
  } finally {
    stream?.destroy();
  }
  if (bytes !== descriptor.size) {
    throw new EtchError(
      'ETCH_SIZE_MISMATCH',
      `${what} (${descriptor.digest}) has ${bytes} bytes in ${path}, not the ${descriptor.size} its descriptor declares.`,
      { details: { path, digest: descriptor.digest } },
    );
  }
  if (hash === undefined) return;
  const actual = digestOf(hash, algorithmOf(descriptor.digest));
  if (actual !== descriptor.digest) {
    throw new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `${what} in ${path} does not match its digest: expected ${descriptor.digest}, got ${actual}.`,
      { details: { path, digest: descriptor.digest, actual } },
    );
  }
}
