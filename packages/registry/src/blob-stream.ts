import { EtchError } from '@etch/format';
import { algorithmOf, digestOf, hasherFor } from './digest.js';
import { contentRangeStart, header, type HttpClient, type HttpResponse } from './http.js';
import { resumableGet, statusError } from './resumable-get.js';

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
 * `size` bytes hashing to `digest`. A connection cut mid-way is resumed with `Range` ({@link resumableGet})
 * and the hash carries on; when the registry ignores the range and sends the whole blob again, the bytes
 * already delivered are skipped, not hashed twice. Bytes are yielded before the digest can be known, so a
 * consumer must treat a thrown error as "discard everything" (the `@etch` writers write to temporary names).
 */
export async function* verifiedBlob(
  http: HttpClient,
  open: BlobOpener,
  descriptor: { digest: string; size: number },
  options: VerifiedBlobOptions,
): AsyncGenerator<Buffer> {
  const { digest, size } = descriptor;
  const hash = hasherFor(digest);
  let bytes = 0;
  const body = resumableGet(http, {
    what: `Downloading ${options.what}`,
    length: size,
    open,
    accept: (response, offset) => {
      // A registry that ignores Range starts again from byte 0.
      if (response.status === 200) return offset;
      if (response.status !== 206) throw blobStatusError(response.status, options.what, digest);
      if (offset > 0 && contentRangeStart(header(response.headers, 'content-range')) === offset) return 0;
      throw new EtchError(
        'ETCH_NETWORK',
        `The registry answered a download of ${options.what} with a partial range that does not start where the download stopped.`,
        { details: { statusCode: 206, digest } },
      );
    },
    beyondLength: {
      error: () =>
        new EtchError(
          'ETCH_SIZE_MISMATCH',
          `${options.what} (${digest}) is longer than the ${size} bytes its descriptor declares; the registry served different content. Nothing from it is kept.`,
          { details: { digest } },
        ),
    },
    ...(options.signal ? { signal: options.signal } : {}),
  });
  for await (const chunk of body) {
    hash.update(chunk);
    bytes += chunk.length;
    options.onProgress?.({ digest, bytes, total: size });
    yield chunk;
  }
  const actual = digestOf(hash, algorithmOf(digest));
  if (actual !== digest) {
    throw new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `${options.what} does not match its digest: expected ${digest}, got ${actual}. The registry's copy is corrupt or was replaced; nothing from it is kept.`,
      { details: { digest, actual } },
    );
  }
}

/** The error for a blob request the registry answered with something other than the bytes. */
export function blobStatusError(status: number, what: string, digest: string): EtchError {
  return statusError(status, `Downloading ${what}${digest ? ` (${digest})` : ''}`, {
    authHint: 'log in to the registry (docker login) or check the credentials etch found',
    details: { digest },
  });
}
