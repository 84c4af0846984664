import { EtchError, abortError, isEtchError } from '@etch/format';
import { StalledBodyError, isCutBodyError, readBody, skipFirst, type HttpClient, type HttpResponse } from './http.js';

/** Options of {@link resumableGet}. */
export interface ResumableGetOptions {
  /** Names the download in errors ("Downloading https://host/base.img", "blob sha256:… of ghcr.io/acme/app"). */
  what: string;
  /** How many bytes the download delivers in all. */
  length: number;
  /**
   * Sends the request for the bytes from `offset` (relative to the download's start) on: the caller sets
   * `Range`, `If-Range` and credentials. Retries of statuses and network errors are its job (`withRetries`).
   */
  open(offset: number, signal?: AbortSignal): Promise<HttpResponse>;
  /**
   * Checks an answer before its bytes are used and says how many of its first bytes to skip (a server that
   * ignored `Range` starts again from 0). Throws the typed error for an answer that is not the bytes asked for.
   */
  accept(response: HttpResponse, offset: number): number;
  /**
   * What bytes beyond `length` mean. `'error'`: the body is read to its very end and anything more is this
   * error (a blob longer than its descriptor); `'stop'`: the download ends at `length` (a range of a file).
   */
  beyondLength: { error: (seen: number) => EtchError } | 'stop';
  signal?: AbortSignal;
}

/** Resumes allowed in all: a few, plus one per 16 MiB, so a server cutting every connection is given up on. */
const MIN_RESUMES = 8;
const RESUME_PER_BYTES = 16 * 1024 * 1024;

/**
 * Streams `length` bytes over as many GETs as it takes: a connection cut mid-way is resumed from the byte
 * it stopped at, with back-off, and progress since the last failure earns a fresh set of tries. Resumes
 * are bounded overall too, so a server that cuts every connection after a few bytes ends in bounded time.
 * The one resumable download of the toolkit: registry blobs and base images over HTTP both use it.
 */
export async function* resumableGet(http: HttpClient, options: ResumableGetOptions): AsyncGenerator<Buffer> {
  const { signal, length, what } = options;
  const maxResumes = MIN_RESUMES + Math.ceil(length / RESUME_PER_BYTES);
  const readToEnd = options.beyondLength !== 'stop';
  let delivered = 0;
  let failures = 0;
  let resumes = 0;
  // Connections slower than the client's minimum rate: a few are resumed, a new connection may be faster;
  // a trickle of progress does not earn fresh tries, so a server sending a byte a second ends in bounded time.
  let stalls = 0;
  // A body read to its end is asked for at least once, even when empty: its extra bytes are the error.
  for (let attempt = 0; delivered < length || (readToEnd && attempt === 0); attempt += 1) {
    const before = delivered;
    let response: HttpResponse | undefined;
    try {
      try {
        response = await options.open(delivered, signal);
      } catch (error) {
        throw http.networkError(what, error, signal);
      }
      const skip = options.accept(response, delivered);
      for await (let chunk of skipFirst(readBody(response, what), skip)) {
        const room = length - delivered;
        if (chunk.length > room) {
          if (options.beyondLength !== 'stop') throw options.beyondLength.error(delivered + chunk.length);
          chunk = chunk.subarray(0, room);
        }
        delivered += chunk.length;
        if (chunk.length > 0) yield chunk;
        if (delivered === length && !readToEnd) break;
      }
    } catch (error) {
      if (signal?.aborted) throw abortError(signal);
      if (error instanceof StalledBodyError) {
        stalls += 1;
        resumes += 1;
        if (stalls >= http.retry.attempts || resumes > maxResumes) throw error;
        await http.backOff(stalls, signal);
        continue;
      }
      if (isEtchError(error)) throw error;
      if (!isCutBodyError(error)) throw http.networkError(what, error, signal);
      failures = delivered > before ? 1 : failures + 1;
      resumes += 1;
      if (failures >= http.retry.attempts || resumes > maxResumes) throw http.networkError(what, error, signal);
      await http.backOff(failures, signal);
      continue;
    } finally {
      if (response) discard(response);
    }
    if (delivered < length) {
      // The body ended early without an error: like a cut connection.
      failures = delivered > before ? 1 : failures + 1;
      resumes += 1;
      if (failures >= http.retry.attempts || resumes > maxResumes)
        throw new EtchError(
          'ETCH_SIZE_MISMATCH',
          `${what} ended after ${delivered} of ${length} bytes, ${failures} times in a row; the server keeps cutting it short.`,
          { details: { expected: length, received: delivered } },
        );
      await http.backOff(failures, signal);
    }
  }
}

/** Stops a response body not wanted (any more); undici reports that as an error nobody needs to see. */
export function discard(response: HttpResponse): void {
  if (response.body.destroyed) return;
  response.body.on('error', () => undefined);
  response.body.destroy();
}

/** Options of {@link statusError}. */
export interface StatusErrorOptions {
  /** Said after a 401/403: how to give credentials for this kind of source. */
  authHint?: string;
  details?: Record<string, unknown>;
}

/**
 * The one mapping from an HTTP status that is not the bytes asked for to a typed error: 404/410 →
 * `ETCH_NOT_FOUND`, 401/403 → `ETCH_AUTH_FAILED`, anything else → `ETCH_NETWORK`.
 */
export function statusError(status: number, what: string, options: StatusErrorOptions = {}): EtchError {
  const details = { statusCode: status, ...options.details };
  if (status === 404 || status === 410)
    return new EtchError('ETCH_NOT_FOUND', `${what}: not found (HTTP ${status}).`, { details });
  if (status === 401 || status === 403)
    return new EtchError(
      'ETCH_AUTH_FAILED',
      `${what} was refused (HTTP ${status})${options.authHint ? `; ${options.authHint}` : '.'}`,
      { details },
    );
  return new EtchError('ETCH_NETWORK', `${what} failed with HTTP ${status}.`, { details });
}
