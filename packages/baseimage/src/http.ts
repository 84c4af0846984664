import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { EtchError, abortError, isEtchError } from '@etch/format';
import {
  contentRangeStart,
  discard,
  drain,
  header,
  resumableGet,
  statusError,
  type HttpClient,
  type HttpResponse,
} from '@etch/registry/http';
import { redactUrl } from './names.js';
import type { BaseImageProgress } from './types.js';

/** A URL to fetch: without credentials, which travel as an Authorization header (dropped on a redirect to another origin). */
export interface Target {
  url: URL;
  authorization?: string;
  /** For messages: the URL without credentials. */
  display: string;
}

/** Splits `user:pass@` off a URL into Basic authorization. */
export function toTarget(spec: string): Target {
  const url = new URL(spec);
  let authorization: string | undefined;
  if (url.username || url.password) {
    authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { url, ...(authorization ? { authorization } : {}), display: redactUrl(url) };
}

/** The error for an answer that is not the bytes. */
function urlStatusError(status: number, what: string): EtchError {
  return statusError(status, what, {
    authHint: 'put credentials in the URL (https://user:token@host/…) if it needs them',
  });
}

/** What a HEAD (or a probing GET) says about a URL. */
export interface Probe {
  /** The URL that answered, after redirects. */
  finalUrl: URL;
  size: number | undefined;
  etag: string | undefined;
  lastModified: string | undefined;
  /** The server says it serves byte ranges (`Accept-Ranges: bytes`); confirmed by {@link servesRanges}. */
  acceptRanges: boolean;
  /** The file name in `Content-Disposition`, if any. */
  dispositionName: string | undefined;
}

/** Conditions of a revalidating request. */
export interface Validators {
  etag?: string;
  lastModified?: string;
}

function dispositionName(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(value);
  if (star?.[1]) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      return undefined;
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/.exec(value);
  return plain?.[1]?.trim();
}

function toProbe(response: HttpResponse): Probe {
  const length = header(response.headers, 'content-length');
  const range = /\/(\d+)\s*$/.exec(header(response.headers, 'content-range') ?? '');
  const size =
    range?.[1] !== undefined
      ? Number(range[1])
      : response.status === 200 && length !== undefined && /^\d+$/.test(length)
        ? Number(length)
        : undefined;
  return {
    finalUrl: response.url,
    size,
    etag: header(response.headers, 'etag'),
    lastModified: header(response.headers, 'last-modified'),
    acceptRanges:
      (header(response.headers, 'accept-ranges') ?? '').toLowerCase().includes('bytes') || response.status === 206,
    dispositionName: dispositionName(header(response.headers, 'content-disposition')),
  };
}

/**
 * Asks for a URL's size and validators with HEAD (falling back to a one-byte ranged GET when HEAD is refused).
 * With `conditional`, sends If-None-Match / If-Modified-Since and resolves `'not-modified'` on a 304.
 */
export async function probe(
  http: HttpClient,
  target: Target,
  signal: AbortSignal | undefined,
  conditional?: Validators,
): Promise<Probe | 'not-modified'> {
  const headers: Record<string, string> = {};
  if (conditional?.etag) headers['if-none-match'] = conditional.etag;
  else if (conditional?.lastModified) headers['if-modified-since'] = conditional.lastModified;
  const what = `HEAD ${target.display}`;
  const send = (method: 'HEAD' | 'GET', extra: Record<string, string>) =>
    http.withRetries(what, signal, () =>
      http.send({
        url: target.url,
        method,
        headers: { ...headers, ...extra },
        ...(target.authorization ? { authorization: target.authorization } : {}),
        ...(signal ? { signal } : {}),
      }),
    );
  let response: HttpResponse;
  try {
    response = await send('HEAD', {});
    if (response.status === 405 || response.status === 501) {
      await drain(response);
      response = await send('GET', { range: 'bytes=0-0' });
    }
  } catch (error) {
    throw http.networkError(`Reaching ${target.display}`, error, signal);
  }
  await drain(response);
  if (response.status === 304) return 'not-modified';
  if (response.status !== 200 && response.status !== 206)
    throw urlStatusError(response.status, `Fetching ${target.display}`);
  return toProbe(response);
}

function longerThanAnnounced(target: Target, announced: number, seen: number): EtchError {
  return new EtchError(
    'ETCH_SIZE_MISMATCH',
    `${target.display} is longer than the ${announced} bytes its server announced (at least ${seen}); it changed or the server is wrong.`,
    { details: { expected: announced } },
  );
}

/** Options of {@link rangedBody}. */
export interface RangedOptions {
  /** ETag or Last-Modified sent as `If-Range`, so a resumed request never mixes two versions of the file. */
  validator?: string;
  /** The file's whole size, when known (a range covering it all is then asked for without `Range`). */
  total?: number;
  signal?: AbortSignal;
  onProgress?: (event: BaseImageProgress) => void;
}

/**
 * Streams bytes `[start, end)` of a URL, resuming with `Range` after a cut (with back-off, a fresh set of tries
 * whenever progress was made). A server that ignores `Range` and answers 200 is read from the start and the
 * bytes before `start` are skipped; a server whose file changed (its ETag differs from `validator`) fails with
 * `ETCH_NETWORK` instead of mixing versions.
 */
export async function* rangedBody(
  http: HttpClient,
  target: Target,
  start: number,
  end: number,
  options: RangedOptions = {},
): AsyncGenerator<Buffer> {
  const { signal, validator, total } = options;
  const length = end - start;
  // A 200 that runs to the file's announced end is read to its very end: more bytes than announced mean
  // the file is not the size the server said, and cutting it to fit would write a short base image.
  const toTheEnd = end === total;
  let whole = false;
  const body = resumableGet(http, {
    what: `Downloading ${target.display}`,
    length,
    open: (offset) => {
      const from = start + offset;
      whole = from === 0 && toTheEnd;
      const headers: Record<string, string> = {};
      if (!whole) {
        headers['range'] = `bytes=${from}-${end - 1}`;
        if (validator) headers['if-range'] = validator;
      }
      return http.withRetries(`Downloading ${target.display}`, signal, () =>
        http.send({
          url: target.url,
          headers,
          ...(target.authorization ? { authorization: target.authorization } : {}),
          ...(signal ? { signal } : {}),
        }),
      );
    },
    accept: (response, offset) => {
      const from = start + offset;
      if (response.status === 200) {
        const etag = header(response.headers, 'etag');
        // A 200 to a range request means "Range ignored" only when a strong ETag proves the same content;
        // after If-Range with a date (or with no validator) it may be a new version: never splice it in.
        if (!whole && from > 0 && !(validator?.startsWith('"') && etag === validator))
          throw new EtchError(
            'ETCH_NETWORK',
            `${target.display} sent the whole file again where the rest was asked for, and nothing proves it is the same version${etag !== undefined && validator !== undefined ? ` (ETag ${etag}, was ${validator})` : ''}; start again.`,
            { details: { statusCode: 200 } },
          );
        return from;
      }
      if (response.status !== 206) throw urlStatusError(response.status, `Downloading ${target.display}`);
      const range = header(response.headers, 'content-range');
      const announced = /\/(\d+)\s*$/.exec(range ?? '')?.[1];
      if (total !== undefined && announced !== undefined && Number(announced) > total)
        throw longerThanAnnounced(target, total, Number(announced));
      if (contentRangeStart(range) !== from)
        throw new EtchError(
          'ETCH_NETWORK',
          `${target.display} answered a range request with a different range (${range ?? 'none'}).`,
          { details: { statusCode: 206 } },
        );
      return 0;
    },
    // Only a whole-file 200 can run past the end; a 206 is cut to the range asked for.
    beyondLength: toTheEnd ? { error: (seen) => longerThanAnnounced(target, end, start + seen) } : 'stop',
    ...(signal ? { signal } : {}),
  });
  let delivered = 0;
  for await (const chunk of body) {
    delivered += chunk.length;
    options.onProgress?.({ phase: 'download', bytes: delivered, total: length });
    yield chunk;
  }
}

/** True when a ranged GET near the end of the file comes back as 206 (yauzl then reads the zip in place). */
export async function servesRanges(
  http: HttpClient,
  target: Target,
  size: number,
  signal?: AbortSignal,
): Promise<boolean> {
  if (size < 2) return false;
  const response = await http.withRetries(`Probing ${target.display}`, signal, () =>
    http.send({
      url: target.url,
      headers: { range: `bytes=${size - 1}-${size - 1}` },
      ...(target.authorization ? { authorization: target.authorization } : {}),
      ...(signal ? { signal } : {}),
    }),
  );
  // A 200 would be the whole file: stop it at once.
  discard(response);
  return response.status === 206;
}

/** A yauzl reader that reads the zip's parts with ranged GETs: only the central directory and the image are fetched. */
export class HttpRangeReader extends yauzl.RandomAccessReader {
  constructor(
    private readonly http: HttpClient,
    private readonly target: Target,
    private readonly options: RangedOptions,
  ) {
    super();
  }

  override _readStreamForRange(start: number, end: number): Readable {
    const { onProgress: _unused, ...rest } = this.options;
    return Readable.from(rangedBody(this.http, this.target, start, end, rest), { objectMode: false });
  }
}

/**
 * Downloads a whole URL to `path` (resuming cut connections when the size is known), reporting `download`
 * progress. Used when a source cannot be streamed in place: a zip from a server without ranges, a gzip whose
 * size must be counted, a server that does not say the size.
 */
export async function downloadToFile(
  http: HttpClient,
  target: Target,
  path: string,
  probe: Probe,
  options: { signal?: AbortSignal; onProgress?: (event: BaseImageProgress) => void },
): Promise<void> {
  const { signal } = options;
  let source: AsyncIterable<Buffer>;
  if (probe.size !== undefined) {
    source = rangedBody(http, target, 0, probe.size, {
      total: probe.size,
      ...((probe.etag ?? probe.lastModified) ? { validator: (probe.etag ?? probe.lastModified) as string } : {}),
      ...(signal ? { signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } else {
    source = (async function* () {
      const response = await http.withRetries(`Downloading ${target.display}`, signal, () =>
        http.send({
          url: target.url,
          ...(target.authorization ? { authorization: target.authorization } : {}),
          ...(signal ? { signal } : {}),
        }),
      );
      if (response.status !== 200) {
        await drain(response);
        throw urlStatusError(response.status, `Downloading ${target.display}`);
      }
      let bytes = 0;
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        options.onProgress?.({ phase: 'download', bytes, total: undefined });
        yield chunk;
      }
    })();
  }
  try {
    await pipeline(
      Readable.from(source, { objectMode: false }),
      createWriteStream(path, { flags: 'wx' }),
      signal ? { signal } : {},
    );
  } catch (error) {
    if (isEtchError(error)) throw error;
    if (signal?.aborted) throw abortError(signal);
    throw new EtchError('ETCH_IO', `Saving ${target.display} to ${path} failed: ${(error as Error).message}.`, {
      cause: error,
      details: { path },
    });
  }
}
