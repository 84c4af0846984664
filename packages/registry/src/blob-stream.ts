import { EtchError, isEtchError, abortError } from '@etch/format';
import { algorithmOf, digestOf, hasherFor } from './digest.js';
import { contentRangeStart, header, isCutBodyError, skipFirst, type HttpClient, type HttpResponse } from './http.js';

/** Progress of one blob: bytes verified so far of `total`. */
export interface BlobProgress {
  digest: string;
  bytes: number;
  total: number;
}

/** What {@link verifiedBlob} needs to (re)open a blob from an offset. */
export interface BlobOpener {
  /** Sends the GET, with `Range: bytes=<offset>-` when offset > 0; retries of statuses are the opener's job. */
  (offset: number, signal?: AbortSignal): Promise<HttpResponse>;
}

export interface VerifiedBlobOptions {
  signal?: AbortSignal;
  onProgress?: (progress: BlobProgress) => void;
  /** Names the blob in errors ("layer 2 of 127.0.0.1:5000/etch/a"). */
  what: string;
}

/**
 * Streams a blob and checks it against its descriptor: never more than `size` bytes, and at the end exactly
 * `size` bytes hashing to `digest`. A connection cut mid-way is resumed with `Range` and the hash carries on;
 * when the registry ignores the range and sends the whole blob again, the bytes already delivered are
 * skipped, not hashed twice. Bytes are yielded before the digest can be known, so a consumer must treat a
 * thrown error as "discard everything" (the `@etch` writers write to temporary names for that reason).
 */
export async function* verifiedBlob(
  http: HttpClient,
  open: BlobOpener,
  descriptor: { digest: string; size: number },
  options: VerifiedBlobOptions,
): AsyncGenerator<Buffer> {
  const { signal } = options;
  const hash = hasherFor(descriptor.digest);
  let delivered = 0;
  let failures = 0;
  for (;;) {
    let response: HttpResponse;
    try {
      response = await open(delivered, signal);
    } catch (error) {
      throw http.networkError(`Downloading ${options.what}`, error, signal);
    }
    let skip: number;
    if (response.status === 200) {
      // A registry that ignores Range starts again from byte 0.
      skip = delivered;
    } else if (
      response.status === 206 &&
      delivered > 0 &&
      contentRangeStart(header(response.headers, 'content-range')) === delivered
    ) {
      skip = 0;
    } else {
      await response.body.dump().catch(() => undefined);
      throw statusError(response.status, options.what, descriptor.digest);
    }
    const before = delivered;
    try {
      for await (const chunk of skipFirst(response.body as AsyncIterable<Buffer>, skip)) {
        if (delivered + chunk.length > descriptor.size) {
          response.body.destroy();
          throw new EtchError(
            'ETCH_SIZE_MISMATCH',
            `${options.what} (${descriptor.digest}) is longer than the ${descriptor.size} bytes its descriptor declares; the registry served different content. Nothing from it is kept.`,
            { details: { digest: descriptor.digest } },
          );
        }
        hash.update(chunk);
        delivered += chunk.length;
        options.onProgress?.({ digest: descriptor.digest, bytes: delivered, total: descriptor.size });
        yield chunk;
      }
    } catch (error) {
      if (isEtchError(error)) throw error;
      if (signal?.aborted) throw abortError(signal);
      if (!isCutBodyError(error)) throw http.networkError(`Downloading ${options.what}`, error, signal);
      // Progress since the last failure earns the download a fresh set of tries.
      failures = delivered > before ? 1 : failures + 1;
      if (failures >= http.retry.attempts) throw http.networkError(`Downloading ${options.what}`, error, signal);
      await http.backOff(failures, signal);
      continue;
    }
    if (delivered < descriptor.size) {
      // The body ended early without an error: treat it like a cut connection.
      failures = delivered > before ? 1 : failures + 1;
      if (failures >= http.retry.attempts) {
        throw new EtchError(
          'ETCH_SIZE_MISMATCH',
          `${options.what} (${descriptor.digest}) ended after ${delivered} of ${descriptor.size} bytes, ${failures} times.`,
          { details: { digest: descriptor.digest } },
        );
      }
      continue;
    }
    const actual = digestOf(hash, algorithmOf(descriptor.digest));
    if (actual !== descriptor.digest) {
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `${options.what} does not match its digest: expected ${descriptor.digest}, got ${actual}. The registry's copy is corrupt or was replaced; nothing from it is kept.`,
        { details: { digest: descriptor.digest, actual } },
      );
    }
    return;
  }
}

/** The error for a blob request the registry answered with something other than the bytes. */
export function statusError(status: number, what: string, digest: string): EtchError {
  if (status === 404)
    return new EtchError('ETCH_NOT_FOUND', `${what} (${digest}) is not in the registry (HTTP 404).`, {
      details: { statusCode: status, digest },
    });
  if (status === 401 || status === 403)
    return new EtchError('ETCH_AUTH_FAILED', `The registry refused access to ${what} (HTTP ${status}).`, {
      details: { statusCode: status, digest },
    });
  if (status === 206)
    return new EtchError(
      'ETCH_NETWORK',
      `The registry answered a download of ${what} with a partial range that does not start where the download stopped.`,
      { details: { statusCode: status, digest } },
    );
  return new EtchError('ETCH_NETWORK', `Downloading ${what} (${digest}) failed with HTTP ${status}.`, {
    details: { statusCode: status, digest },
  });
}
