import { createHash } from 'node:crypto';
import { EtchError, ignoreRejection, isEtchError, throwIfAborted } from '@etch/format';
import { pullScope, pushScope } from './auth.js';
import { digestOf, hasherFor } from './digest.js';
import { drain, header, isTransientNetworkError, type HttpResponse } from './http.js';
import { toReference, type ImageReference } from './reference.js';
import type { RegistryClient } from './registry-client.js';
import { writeError } from './registry-errors.js';

/**
 * What to upload: a stream (read once), or a function that opens it from the start, which lets an upload
 * begin again when the registry loses the session (distribution drops it after a request cut mid-body).
 */
export type BlobContent = AsyncIterable<Uint8Array> | (() => AsyncIterable<Uint8Array>);

/** Progress of one upload: bytes the registry acknowledged (chunked) or that were sent (monolithic). */
export interface UploadProgress {
  bytes: number;
  /** Known when the size was given. */
  total?: number;
}

/** Options of {@link uploadBlob}. */
export interface UploadOptions {
  signal?: AbortSignal;
  /** The blob's digest when known: with `size`, one streamed `PUT`; also checked at the end. */
  digest?: string;
  /** The blob's size when known. */
  size?: number;
  /** Bytes per `PATCH` of a chunked upload (default 16 MiB); memory use is about twice this. */
  chunkSize?: number;
  /** Force a chunked upload even when digest and size are known. */
  chunked?: boolean;
  /** An upload session to use (the `Location` of a mount answered 202) instead of opening one. */
  session?: URL;
  /** Token scopes for every request (default pull,push on the repository): pass one set for a whole push. */
  scopes?: readonly string[];
  onProgress?: (progress: UploadProgress) => void;
}

/** A blob in the registry after an upload or mount. */
export interface UploadedBlob {
  digest: string;
  size: number;
  /** How it got there. */
  how: 'uploaded' | 'mounted' | 'existed';
}

const DEFAULT_CHUNK = 16 * 1024 * 1024;
const OCTETS = 'application/octet-stream';

/** Thrown inside an upload when the registry no longer has the session: the upload must start over. */
class SessionLost extends Error {
  constructor(
    readonly reason: string,
    readonly error?: unknown,
  ) {
    super(reason);
  }
}

function uploadLocation(response: HttpResponse, what: string): URL {
  const location = header(response.headers, 'location');
  if (location === undefined)
    throw new EtchError('ETCH_NETWORK', `${what}: the registry answered ${response.status} without a Location.`, {
      details: { statusCode: response.status },
    });
  // Relative to the URL that answered; may be on another host (object storage), which then gets no credentials.
  return new URL(location, response.url);
}

/** The offset after `Range: 0-<end>`; distribution says `0-0` for an empty upload, so that reads as 0 when nothing was acknowledged. */
function offsetAfter(range: string | undefined, acknowledged: number): number | undefined {
  const match = /^(?:bytes=)?0-(\d+)$/.exec(range?.trim() ?? '');
  if (!match) return undefined;
  const end = Number(match[1]);
  return end === 0 && acknowledged === 0 ? 0 : end + 1;
}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Whether the registry has a blob (`HEAD /v2/<name>/blobs/<digest>`). A size, when given, must match what it
 * reports; a blob of another size counts as absent.
 */
export async function blobExists(
  client: RegistryClient,
  reference: ImageReference | string,
  blob: { digest: string; size?: number },
  options: { signal?: AbortSignal; scopes?: readonly string[] } = {},
): Promise<boolean> {
  const ref = toReference(reference);
  const what = `the check for blob ${blob.digest} in ${ref.fullName}`;
  const response = await client.request(
    ref.registry,
    `${ref.repository}/blobs/${blob.digest}`,
    options.scopes ?? [pullScope(ref.repository)],
    { method: 'HEAD', ...(options.signal ? { signal: options.signal } : {}) },
    what,
  );
  await drain(response);
  if (response.status === 200) {
    const length = header(response.headers, 'content-length');
    return blob.size === undefined || length === undefined || Number(length) === blob.size;
  }
  if (response.status === 404) return false;
  if (response.status === 403) return client.unauthorized(ref.registry, what, response, options.signal);
  throw await writeError(response, what, ref.registry);
}

/**
 * Opens an upload session (`POST /v2/<name>/blobs/uploads/`), or with `mount` asks the registry to link a blob
 * it holds in another repository. Answers `mounted` (201) or the session's URL: 202 means "upload it yourself",
 * which is also what a mount that the registry could not do answers.
 */
export async function startUpload(
  client: RegistryClient,
  reference: ImageReference | string,
  options: { signal?: AbortSignal; scopes?: readonly string[]; mount?: { digest: string; from: string } } = {},
): Promise<'mounted' | URL> {
  const ref = toReference(reference);
  const query = options.mount
    ? `?mount=${encodeURIComponent(options.mount.digest)}&from=${encodeURIComponent(options.mount.from)}`
    : '';
  const what = options.mount
    ? `mounting ${options.mount.digest} from ${options.mount.from} into ${ref.fullName}`
    : `an upload to ${ref.fullName}`;
  const scopes =
    options.scopes ??
    (options.mount && options.mount.from !== ref.repository
      ? [pushScope(ref.repository), pullScope(options.mount.from)]
      : [pushScope(ref.repository)]);
  const response = await client.request(
    ref.registry,
    `${ref.repository}/blobs/uploads/${query}`,
    scopes,
    {
      method: 'POST',
      headers: { 'content-length': '0' },
      write: true,
      ...(options.signal ? { signal: options.signal } : {}),
    },
    what,
  );
  if (response.status === 201 && options.mount) {
    await drain(response);
    const said = header(response.headers, 'docker-content-digest');
    if (said !== undefined && said !== options.mount.digest)
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `${ref.registry} mounted ${said} when asked for ${options.mount.digest} in ${ref.fullName}.`,
        { details: { digest: options.mount.digest, actual: said } },
      );
    return 'mounted';
  }
  if (response.status === 202) {
    await drain(response);
    return uploadLocation(response, what);
  }
  if (response.status === 401) return client.unauthorized(ref.registry, what, response, options.signal, true);
  throw await writeError(response, what, ref.registry);
}

/**
 * Copies `source` into buffers of `size` bytes (the last one shorter). Two buffers take turns: a chunk must be
 * done with (sent and acknowledged) before the chunk after the next one is asked for, which is what an upload
 * that reads one chunk ahead does. Allocating a new buffer per chunk left the old ones to the garbage collector:
 * with 16 MiB chunks a 2 GiB upload grew by ~150 MiB instead of two chunks.
 */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  const buffers = [Buffer.allocUnsafe(size)];
  let turn = 0;
  let buffer = buffers[0] as Buffer;
  let filled = 0;
  for await (const data of source) {
    let at = 0;
    while (at < data.length) {
      const take = Math.min(size - filled, data.length - at);
      buffer.set(data.subarray(at, at + take), filled);
      filled += take;
      at += take;
      if (filled === size) {
        yield buffer;
        turn = 1 - turn;
        buffers[turn] ??= Buffer.allocUnsafe(size);
        buffer = buffers[turn] as Buffer;
        filled = 0;
      }
    }
  }
  if (filled > 0) yield buffer.subarray(0, filled);
}

interface Session {
  client: RegistryClient;
  registry: string;
  scopes: readonly string[];
  what: string;
  signal: AbortSignal | undefined;
}

/** `PUT <session>?digest=…` that ends an upload, with an optional streamed body. */
async function finish(
  s: Session,
  location: URL,
  digest: string,
  body: AsyncIterable<Uint8Array> | undefined,
  length: number,
): Promise<void> {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  const response = await s.client.request(
    s.registry,
    '',
    s.scopes,
    {
      url,
      method: 'PUT',
      headers: { 'content-type': OCTETS, 'content-length': String(length) },
      ...(body ? { body } : {}),
      write: true,
      ...(s.signal ? { signal: s.signal } : {}),
    },
    s.what,
  );
  if (response.status === 201 || response.status === 204 || response.status === 200) {
    await drain(response);
    const said = header(response.headers, 'docker-content-digest');
    if (said !== undefined && said !== digest)
      throw new EtchError('ETCH_DIGEST_MISMATCH', `${s.what}: the registry stored ${said}, not ${digest}.`, {
        details: { digest, actual: said },
      });
    return;
  }
  if (response.status === 401) return s.client.unauthorized(s.registry, s.what, response, s.signal, true);
  const error = await writeError(response, s.what, s.registry);
  if (isRetryableStatus(response.status) || (response.status === 404 && body !== undefined))
    throw new SessionLost(error.message, error);
  throw error;
}

/** Asks the registry how much of the upload it has (`GET <session>`): the offset and the session URL to go on with. */
async function status(s: Session, location: URL, acknowledged: number): Promise<{ offset: number; location: URL }> {
  const response = await s.client.request(
    s.registry,
    '',
    s.scopes,
    { url: location, ...(s.signal ? { signal: s.signal } : {}) },
    `${s.what} (its status)`,
  );
  if (response.status !== 204 && response.status !== 200) {
    const error = await writeError(response, `${s.what} (its status)`, s.registry);
    throw new SessionLost(error.message, error);
  }
  await drain(response);
  const offset = offsetAfter(header(response.headers, 'range'), acknowledged);
  if (offset === undefined) throw new SessionLost(`${s.what}: the registry did not say how much it has (no Range).`);
  const next = header(response.headers, 'location');
  return { offset, location: next !== undefined ? new URL(next, response.url) : location };
}

/**
 * Sends one buffered chunk from `start` with `PATCH` and `Content-Range`. After a cut or a 5xx it asks the
 * registry for its offset and sends the rest of the chunk from there; an offset outside the chunk, or a
 * session the registry dropped, is {@link SessionLost}.
 */
async function sendChunk(s: Session, location: URL, chunk: Buffer, start: number): Promise<URL> {
  const http = s.client.http;
  let sent = 0;
  for (let failures = 0; ;) {
    throwIfAborted(s.signal);
    const end = start + chunk.length - 1;
    let response: HttpResponse | undefined;
    let failure: unknown;
    try {
      response = await s.client.request(
        s.registry,
        '',
        s.scopes,
        {
          url: location,
          method: 'PATCH',
          headers: {
            'content-type': OCTETS,
            'content-range': `${start + sent}-${end}`,
            'content-length': String(chunk.length - sent),
          },
          body: chunk.subarray(sent),
          write: true,
          retry: false,
          ...(s.signal ? { signal: s.signal } : {}),
        },
        s.what,
      );
    } catch (error) {
      if (s.signal?.aborted || !(isTransientNetworkError(error) || isEtchError(error, 'ETCH_NETWORK'))) throw error;
      failure = error;
    }
    if (response && response.status === 202) {
      await drain(response);
      const next = uploadLocation(response, s.what);
      const reached = offsetAfter(header(response.headers, 'range'), start + chunk.length);
      if (reached !== undefined && reached !== end + 1)
        throw new SessionLost(`${s.what}: the registry acknowledged ${reached} bytes, ${end + 1} were sent.`);
      return next;
    }
    if (response && response.status === 401) return s.client.unauthorized(s.registry, s.what, response, s.signal, true);
    if (response && !isRetryableStatus(response.status)) {
      const error = await writeError(response, s.what, s.registry);
      if (response.status === 404 || response.status === 416) throw new SessionLost(error.message, error);
      throw error;
    }
    if (response) await drain(response);
    failures += 1;
    if (failures >= http.retry.attempts)
      throw failure !== undefined
        ? http.networkError(s.what, failure, s.signal)
        : new EtchError('ETCH_NETWORK', `${s.what}: a chunk failed ${failures} times.`);
    await http.backOff(failures, s.signal);
    const now = await status(s, location, start + sent);
    if (now.offset < start || now.offset > end + 1)
      throw new SessionLost(
        `${s.what}: the registry has ${now.offset} bytes, outside the chunk in hand (${start}–${end + 1}).`,
      );
    location = now.location;
    sent = now.offset - start;
    if (sent === chunk.length) return location;
  }
}

/** A chunked upload: `PATCH` per chunk, then `PUT ?digest=` with what was computed on the way. */
async function chunkedUpload(
  s: Session,
  location: URL,
  source: AsyncIterable<Uint8Array>,
  options: UploadOptions,
): Promise<{ digest: string; size: number }> {
  const hash = options.digest ? hasherFor(options.digest) : createHash('sha256');
  const algorithm = options.digest ? options.digest.slice(0, options.digest.indexOf(':')) : 'sha256';
  const chunks = rechunk(source, options.chunkSize ?? DEFAULT_CHUNK);
  let offset = 0;
  // The next chunk is read while the current one travels: at most two chunks in memory.
  let next = chunks.next();
  try {
    for (;;) {
      const item = await next;
      if (item.done) break;
      const chunk = item.value;
      next = chunks.next();
      if (options.size !== undefined && offset + chunk.length > options.size)
        throw new EtchError('ETCH_SIZE_MISMATCH', `${s.what}: the content is longer than ${options.size} bytes.`);
      hash.update(chunk);
      location = await sendChunk(s, location, chunk, offset);
      offset += chunk.length;
      options.onProgress?.({ bytes: offset, ...(options.size !== undefined ? { total: options.size } : {}) });
    }
  } catch (error) {
    await ignoreRejection(next, 'the read-ahead is abandoned with the upload; the first error is reported');
    await ignoreRejection(chunks.return(undefined), 'closing the source after a failure');
    throw error;
  }
  const digest = digestOf(hash, algorithm);
  if (options.digest !== undefined && digest !== options.digest)
    throw new EtchError('ETCH_DIGEST_MISMATCH', `${s.what}: the content hashes to ${digest}, not ${options.digest}.`, {
      details: { digest: options.digest, actual: digest },
    });
  if (options.size !== undefined && offset !== options.size)
    throw new EtchError('ETCH_SIZE_MISMATCH', `${s.what}: the content is ${offset} bytes, not ${options.size}.`);
  await finish(s, location, digest, undefined, 0);
  return { digest, size: offset };
}

/**
 * A monolithic upload: the whole blob in one streamed `PUT ?digest=`, counted on the way. The registry checks the
 * digest (and refuses with DIGEST_INVALID); hashing here too would cost a second pass of CPU for nothing.
 */
async function monolithicUpload(
  s: Session,
  location: URL,
  source: AsyncIterable<Uint8Array>,
  digest: string,
  size: number,
  onProgress?: (progress: UploadProgress) => void,
): Promise<{ digest: string; size: number }> {
  const state = { bytes: 0 };
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const data of source) {
      state.bytes += data.length;
      if (state.bytes > size)
        throw new EtchError('ETCH_SIZE_MISMATCH', `${s.what}: the content is longer than the ${size} bytes declared.`);
      onProgress?.({ bytes: state.bytes, total: size });
      yield data;
    }
  }
  try {
    await finish(s, location, digest, counted(), size);
  } catch (error) {
    if (error instanceof SessionLost || (isEtchError(error) && error.code !== 'ETCH_NETWORK')) throw error;
    throw new SessionLost(String((error as Error)?.message ?? error), error);
  }
  if (state.bytes !== size)
    throw new EtchError('ETCH_SIZE_MISMATCH', `${s.what}: the content is ${state.bytes} bytes, not ${size}.`);
  return { digest, size };
}

/**
 * Uploads a blob. With `digest` and `size` known it is skipped when the registry has it, else streamed in one
 * `PUT`; otherwise it goes in chunks (`PATCH` with `Content-Range`, bounded memory) and the digest and size are
 * computed on the way. A failed chunk resumes from the offset the registry reports; when the registry lost the
 * session and `content` is a function, the upload starts over (up to the retry policy's attempts).
 *
 * @example
 * ```ts
 * const { digest, size } = await uploadBlob(client, '127.0.0.1:5000/app', () => createReadStream('layer.tar.gz'));
 * ```
 */
export async function uploadBlob(
  client: RegistryClient,
  reference: ImageReference | string,
  content: BlobContent,
  options: UploadOptions = {},
): Promise<UploadedBlob> {
  const ref = toReference(reference);
  const scopes = options.scopes ?? [pushScope(ref.repository)];
  const known = options.digest !== undefined && options.size !== undefined;
  const what = `the upload of ${options.digest ?? 'a blob'} to ${ref.fullName}`;
  if (known && options.session === undefined) {
    const blob = { digest: options.digest as string, size: options.size as number };
    if (await blobExists(client, ref, blob, { scopes, ...(options.signal ? { signal: options.signal } : {}) }))
      return { ...blob, how: 'existed' };
  }
  const s: Session = { client, registry: ref.registry, scopes, what, signal: options.signal };
  let session = options.session;
  for (let attempt = 1; ; attempt += 1) {
    const location =
      session ??
      ((await startUpload(client, ref, { scopes, ...(options.signal ? { signal: options.signal } : {}) })) as URL);
    session = undefined;
    const source = typeof content === 'function' ? content() : content;
    try {
      const done =
        known && !options.chunked
          ? await monolithicUpload(
              s,
              location,
              source,
              options.digest as string,
              options.size as number,
              options.onProgress,
            )
          : await chunkedUpload(s, location, source, options);
      return { ...done, how: 'uploaded' };
    } catch (error) {
      if (!(error instanceof SessionLost)) throw error;
      if (typeof content !== 'function' || attempt >= client.http.retry.attempts) {
        const base = isEtchError(error.error) ? error.error : undefined;
        throw new EtchError(
          base?.code === 'ETCH_DIGEST_MISMATCH' ? base.code : 'ETCH_NETWORK',
          `${error.reason}${typeof content === 'function' ? '' : ' The content was a stream read once, so the upload cannot start over.'}`,
          {
            cause: error.error ?? error,
            details: { ...(base?.details ?? {}), restartable: typeof content === 'function' },
          },
        );
      }
      await client.http.backOff(attempt, options.signal);
    }
  }
}

/**
 * Links a blob from another repository of the same registry into this one (`POST ?mount=&from=`), with one
 * token that may pull the source and push the target. When the registry answers 202 (it cannot or will not
 * mount), `fallback` supplies the bytes and they go into the session it opened.
 */
export async function mountBlob(
  client: RegistryClient,
  reference: ImageReference | string,
  blob: { digest: string; size: number },
  from: string,
  options: { signal?: AbortSignal; scopes?: readonly string[]; fallback?: BlobContent; chunkSize?: number } = {},
): Promise<UploadedBlob> {
  const ref = toReference(reference);
  const scopes =
    options.scopes ??
    (from === ref.repository ? [pushScope(ref.repository)] : [pushScope(ref.repository), pullScope(from)]);
  const signal = options.signal ? { signal: options.signal } : {};
  if (await blobExists(client, ref, blob, { scopes, ...signal })) return { ...blob, how: 'existed' };
  const answer = await startUpload(client, ref, { scopes, mount: { digest: blob.digest, from }, ...signal });
  if (answer === 'mounted') return { ...blob, how: 'mounted' };
  if (options.fallback === undefined) {
    throw new EtchError(
      'ETCH_UNSUPPORTED',
      `${ref.registry} would not mount ${blob.digest} from ${from} into ${ref.fullName} and no content was given to upload instead.`,
      { details: { registry: ref.registry, digest: blob.digest } },
    );
  }
  const uploaded = await uploadBlob(client, ref, options.fallback, {
    ...blob,
    scopes,
    session: answer,
    ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    ...signal,
  });
  return { ...uploaded, how: 'uploaded' };
}
