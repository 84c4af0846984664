import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { EtchError, isEtchError, abortError, ignoreRejection, silentLogger, type Logger } from '@etch/format';
import { Agent, requestOn } from './undici-parts.js';

/** How failed requests are retried: exponential back-off with jitter, `Retry-After` honoured. */
export interface RetryPolicy {
  /** Tries in all, including the first (default 5). */
  attempts: number;
  /** First delay (default 250 ms), doubled on each retry. */
  baseDelayMs: number;
  /** Longest delay between tries, also the cap on `Retry-After` (default 30 s). */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 250, maxDelayMs: 30_000 };

/** Options of the HTTP layer shared by every registry request. */
export interface HttpOptions {
  /** Registries (`host:port`) reached over plain HTTP. Loopback registries always are. */
  insecureRegistries?: readonly string[];
  /** Extra CA certificates (PEM) trusted for HTTPS registries. */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** Connections per origin (default 8): bounds the concurrency of pulls. */
  connections?: number;
  retry?: Partial<RetryPolicy>;
  userAgent?: string;
  logger?: Logger;
  /** Use this undici dispatcher instead of creating one (proxies, tests). */
  dispatcher?: Dispatcher;
  /**
   * The slowest a response body may arrive: at least `bytes` in every `windowMs` spent waiting for the server
   * (default 1 KiB in 30 s; time the reader spends elsewhere, writing a disk, does not count). A body slower
   * than that (a server sending a byte a second, or nothing) fails with `ETCH_NETWORK`; a download resumes
   * on a new connection a few times before it gives up.
   */
  minRate?: MinRate;
}

/** See {@link HttpOptions.minRate}. */
export interface MinRate {
  bytes: number;
  windowMs: number;
}

export const DEFAULT_MIN_RATE: MinRate = { bytes: 1024, windowMs: 30_000 };

/** The methods the registry API uses. */
export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * A request body: bytes (sent again on a retry or a same-origin redirect) or a stream, which can be sent once
 * only; the caller reopens it to try again.
 */
export type HttpBody = string | Uint8Array | AsyncIterable<Uint8Array>;

/** True for a body that can be sent more than once. */
export function isReplayableBody(body: HttpBody | undefined): body is string | Uint8Array | undefined {
  return body === undefined || typeof body === 'string' || body instanceof Uint8Array;
}

/** A request as the registry client makes it. */
export interface HttpRequest {
  url: URL;
  method?: HttpMethod;
  headers?: Record<string, string>;
  body?: HttpBody;
  signal?: AbortSignal;
  /**
   * The Authorization header for a URL, or undefined. It is asked for the first URL only: on a redirect to
   * another origin the header is dropped, so a token never reaches blob storage or a CDN.
   */
  authorization?: string;
}

/** A response whose body must be consumed or dumped. */
export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** The URL that answered, after redirects. */
  url: URL;
  /** The slowest its body may arrive (the client's {@link HttpOptions.minRate}); see {@link readBody}. */
  minRate?: MinRate;
}

/** The error a body slower than its {@link MinRate} ends with: a stall, worth a resume on a new connection. */
export class StalledBodyError extends EtchError {
  constructor(what: string, rate: MinRate, received: number) {
    super(
      'ETCH_NETWORK',
      `${what} stalled: ${received} bytes in ${rate.windowMs / 1000} s, fewer than the ${rate.bytes} expected at the least.`,
      { details: { received } },
    );
  }
}

/**
 * The chunks of `response`'s body, failing with {@link StalledBodyError} (and destroying the body) when fewer
 * than `minRate.bytes` arrive in a window of `minRate.windowMs` spent waiting for them. Only time spent
 * waiting counts: a reader that holds the body back (backpressure) is not the server being slow.
 */
export async function* readBody(response: HttpResponse, what: string): AsyncGenerator<Buffer> {
  const rate = response.minRate ?? DEFAULT_MIN_RATE;
  const body = response.body;
  const chunks = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let waited = 0;
  let received = 0;
  try {
    for (;;) {
      const started = Date.now();
      let stalled: StalledBodyError | undefined;
      const timer = setTimeout(() => {
        stalled = new StalledBodyError(what, rate, received);
        body.destroy(stalled);
      }, rate.windowMs - waited);
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (error) {
        throw stalled ?? error;
      } finally {
        clearTimeout(timer);
      }
      if (stalled) throw stalled;
      if (next.done) return;
      waited += Date.now() - started;
      received += next.value.length;
      if (received >= rate.bytes) {
        waited = 0;
        received = 0;
      } else if (waited >= rate.windowMs) {
        const error = new StalledBodyError(what, rate, received);
        body.destroy(error);
        throw error;
      }
      yield next.value;
    }
  } finally {
    await chunks.return?.();
  }
}

const MAX_REDIRECTS = 10;
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** `localhost`, 127.0.0.0/8 and ::1: docker talks plain HTTP to these without being told. */
export function isLoopbackHost(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  return name === 'localhost' || name === '::1' || /^127(\.\d{1,3}){3}$/.test(name);
}

/** One header value (the first when repeated). */
export function header(headers: HttpResponse['headers'], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Seconds or an HTTP date, as milliseconds from now; undefined when absent or unreadable. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * A network failure worth another try (reset, refused, timeout, cut body), as opposed to a bug, an abort or
 * a name that does not exist (`ENOTFOUND`: the resolver answered; `EAI_AGAIN`, its timeout, is retried).
 */
export function isTransientNetworkError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== 'string') return false;
  return (
    (code.startsWith('UND_ERR_') &&
      code !== 'UND_ERR_ABORTED' &&
      code !== 'UND_ERR_INVALID_ARG' &&
      code !== 'UND_ERR_NOT_SUPPORTED') ||
    [
      'ECONNRESET',
      'ECONNREFUSED',
      'EPIPE',
      'ETIMEDOUT',
      'EAI_AGAIN',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'ECONNABORTED',
    ].includes(code)
  );
}

/** Where a `Content-Range: bytes a-b/n` answer starts (`a`), or undefined when the header is not one. */
export function contentRangeStart(value: string | undefined): number | undefined {
  const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(value?.trim() ?? '');
  return match ? Number(match[1]) : undefined;
}

/**
 * `body` without its first `bytes` bytes: what a resumed download yields when the server sent the whole
 * file again instead of the range asked for.
 */
export async function* skipFirst(body: AsyncIterable<Buffer>, bytes: number): AsyncGenerator<Buffer> {
  let skip = bytes;
  for await (const data of body) {
    if (skip === 0) {
      yield data;
      continue;
    }
    const drop = Math.min(skip, data.length);
    skip -= drop;
    if (drop < data.length) yield data.subarray(drop);
  }
}

/** A body read that stopped because the connection did (worth resuming), as opposed to a bug or an abort. */
export function isCutBodyError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return isTransientNetworkError(error) || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

/**
 * Reads and drops the body of an answer not used (a redirect, a retried status, an error), so its connection
 * goes back to the pool; a drain that fails (the connection was cut) changes nothing for the caller.
 */
export function drain(response: { body: { dump(): Promise<unknown> } }): Promise<void> {
  return ignoreRejection(response.body.dump(), 'an unread body that cannot be drained only costs its connection');
}

/** `host:port` as connected to (the scheme's default port when the URL has none). */
function addressOf(url: URL): string {
  return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`;
}

/** The transport: undici with keep-alive, manual redirects and retries. */
export class HttpClient {
  readonly retry: RetryPolicy;
  /** Connections refused in a row, per address; reset when one connects. */
  private readonly refusals = new Map<string, number>();
  /** Refusals not worth another try (see {@link noteRefusal}). */
  private readonly finalRefusals = new WeakSet<object>();
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly insecure: Set<string>;
  private readonly logger: Logger;
  private readonly userAgent: string;
  readonly minRate: MinRate;

  constructor(options: HttpOptions = {}) {
    this.minRate = options.minRate ?? DEFAULT_MIN_RATE;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.insecure = new Set((options.insecureRegistries ?? []).map((h) => h.toLowerCase()));
    this.logger = options.logger ?? silentLogger;
    this.userAgent = options.userAgent ?? 'etch-registry';
    this.ownsDispatcher = options.dispatcher === undefined;
    const ca =
      options.ca === undefined
        ? undefined
        : Array.isArray(options.ca)
          ? [...(options.ca as readonly (string | Buffer)[])]
          : [options.ca as string | Buffer];
    this.dispatcher =
      options.dispatcher ??
      new Agent({
        connections: options.connections ?? 8,
        keepAliveTimeout: 30_000,
        // undici 8 would negotiate HTTP/2 over TLS; pulls are proven over HTTP/1.1, and `connections` bounds them.
        allowH2: false,
        ...(ca ? { connect: { ca } } : {}),
      });
  }

  /**
   * The schemes to try, in order: HTTPS always first; then, for loopback and listed insecure registries,
   * plain HTTP — docker's order for its insecure registries (127.0.0.0/8 is one by default).
   */
  schemesFor(host: string): ('https' | 'http')[] {
    return isLoopbackHost(host) || this.insecure.has(host.toLowerCase()) ? ['https', 'http'] : ['https'];
  }

  /**
   * Sends one request and follows up to 10 redirects itself: `Accept` and `Range` go along, `Authorization`
   * only while the origin stays the same.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    let url = req.url;
    let method = req.method ?? 'GET';
    let body = req.body;
    const origin = url.origin;
    for (let hop = 0; ; hop += 1) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      if (req.authorization !== undefined && url.origin === origin) headers['authorization'] = req.authorization;
      let response: Dispatcher.ResponseData;
      try {
        response = await requestOn(this.dispatcher, url, {
          method,
          headers,
          ...(body !== undefined ? { body: isReplayableBody(body) ? body : Readable.from(body) } : {}),
          ...(req.signal ? { signal: req.signal } : {}),
        });
      } catch (error) {
        if (req.signal?.aborted) throw abortError(req.signal);
        this.noteRefusal(url, error);
        throw error;
      }
      this.refusals.delete(addressOf(url));
      const location = header(response.headers, 'location');
      if (response.statusCode >= 300 && response.statusCode < 400 && location !== undefined) {
        await drain(response);
        if (hop + 1 > MAX_REDIRECTS)
          throw new EtchError('ETCH_NETWORK', `${req.url.host} redirected more than ${MAX_REDIRECTS} times.`, {
            details: { statusCode: response.statusCode },
          });
        const next = new URL(location, url);
        if (next.protocol !== 'http:' && next.protocol !== 'https:')
          throw new EtchError(
            'ETCH_NETWORK',
            `${url.host} redirected to a ${next.protocol} URL, which is not followed.`,
          );
        this.logger.debug('redirect', { from: url.host, to: next.host, status: response.statusCode });
        // 303 (and 301/302 after a POST, as browsers and Go do) turns the request into a GET without its body.
        if (
          response.statusCode === 303 ||
          ((response.statusCode === 301 || response.statusCode === 302) && method === 'POST')
        ) {
          method = method === 'HEAD' ? 'HEAD' : 'GET';
          body = undefined;
        }
        // A stream was consumed by the request that got redirected: it cannot follow.
        if (!isReplayableBody(body)) {
          throw new EtchError(
            'ETCH_NETWORK',
            `${url.host} redirected a streamed upload (HTTP ${response.statusCode}); a stream cannot be sent twice.`,
            { details: { statusCode: response.statusCode } },
          );
        }
        // A body (an OAuth form with a refresh token) is never replayed to another origin.
        if (body !== undefined && next.origin !== url.origin) {
          throw new EtchError(
            'ETCH_NETWORK',
            `${url.host} redirected a request with a body to another host (${next.host}); it is not re-sent there.`,
            { details: { statusCode: response.statusCode } },
          );
        }
        url = next;
        continue;
      }
      return {
        status: response.statusCode,
        headers: response.headers,
        body: response.body,
        url,
        minRate: this.minRate,
      };
    }
  }

  /**
   * A refused connection can succeed later only when something starts listening: a remote registry
   * restarting behind its address, say. On loopback nothing will within the seconds a retry waits (docker
   * fails at once there too), and an address that already refused every try of an earlier request (HTTPS,
   * before plain HTTP is tried on the same port) will not answer the next one either: those fail at once.
   */
  private noteRefusal(url: URL, error: unknown): void {
    if ((error as { code?: unknown })?.code !== 'ECONNREFUSED' || typeof error !== 'object' || error === null) return;
    const address = addressOf(url);
    const count = (this.refusals.get(address) ?? 0) + 1;
    this.refusals.set(address, count);
    if (isLoopbackHost(url.host) || count > this.retry.attempts) this.finalRefusals.add(error);
  }

  /**
   * Runs `attempt` until it succeeds, retrying network errors and 408/429/5xx answers with exponential
   * back-off and jitter (or the server's `Retry-After`). `attempt` returns a response; a retryable status is
   * dumped and tried again, the last one is returned for the caller to report.
   */
  async withRetries(
    what: string,
    signal: AbortSignal | undefined,
    attempt: () => Promise<HttpResponse>,
  ): Promise<HttpResponse> {
    for (let tries = 1; ; tries += 1) {
      let response: HttpResponse | undefined;
      let failure: unknown;
      try {
        response = await attempt();
      } catch (error) {
        if (
          !isTransientNetworkError(error) ||
          tries >= this.retry.attempts ||
          (typeof error === 'object' && error !== null && this.finalRefusals.has(error))
        )
          throw this.networkError(what, error, signal);
        failure = error;
      }
      if (response !== undefined) {
        if (!RETRY_STATUS.has(response.status) || tries >= this.retry.attempts) return response;
        await drain(response);
      }
      const after =
        response && (response.status === 429 || response.status === 503)
          ? retryAfterMs(header(response.headers, 'retry-after'))
          : undefined;
      this.logger.info('retrying', {
        what,
        attempt: tries,
        of: this.retry.attempts,
        ...(response ? { status: response.status } : {}),
        ...(failure ? { error: String((failure as Error).message) } : {}),
      });
      await this.backOff(tries, signal, after);
    }
  }

  /** Waits before try `tries + 1` (see {@link delayFor}); an abort ends the wait with `ETCH_ABORTED`. */
  async backOff(tries: number, signal?: AbortSignal, retryAfter?: number): Promise<void> {
    try {
      await sleep(this.delayFor(tries, retryAfter), undefined, signal ? { signal } : {});
    } catch {
      throw abortError(signal);
    }
  }

  /** Delay before try `tries + 1`: `Retry-After` when given (capped), else base·2^(n-1) with ±20 % jitter. */
  delayFor(tries: number, retryAfter?: number): number {
    if (retryAfter !== undefined) return Math.min(retryAfter, this.retry.maxDelayMs);
    const base = Math.min(this.retry.baseDelayMs * 2 ** (tries - 1), this.retry.maxDelayMs);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  networkError(what: string, error: unknown, signal?: AbortSignal): EtchError {
    if (signal?.aborted) return abortError(signal);
    if (isEtchError(error)) return error;
    const code = (error as { code?: unknown })?.code;
    return new EtchError(
      'ETCH_NETWORK',
      `${what} failed: ${(error as Error)?.message ?? String(error)}${typeof code === 'string' ? ` (${code})` : ''}. Check the network and that the registry is reachable.`,
      { cause: error },
    );
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }
}
