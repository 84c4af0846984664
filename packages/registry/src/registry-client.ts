import { stat } from 'node:fs/promises';
import { EtchError, isEtchError, silentLogger, throwIfAborted, untilAborted, type Logger } from '@etch/format';
import { RegistryAuth, pullScope } from './auth.js';
import { BlobCache } from './blob-cache.js';
import { verifiedBlob, blobStatusError, type BlobProgress } from './blob-stream.js';
import {
  chainCredentials,
  dockerConfigCredentials,
  staticCredentials,
  type CredentialSource,
  type Credentials,
} from './credentials.js';
import { digestBytes } from './digest.js';
import {
  HttpClient,
  drain,
  header,
  isReplayableBody,
  type HttpBody,
  type HttpMethod,
  type HttpOptions,
  type HttpResponse,
} from './http.js';
import { readLimited, registryErrors } from './registry-errors.js';
import {
  blobExists,
  mountBlob,
  uploadBlob,
  type BlobContent,
  type UploadOptions,
  type UploadedBlob,
} from './blob-upload.js';
import { deleteFromRegistry, putManifest, type PutManifestOptions } from './manifest-push.js';
import { detectManifestMediaType, parseJsonDocument, type Descriptor } from './manifest.js';
import { IMAGE_ACCEPT, isForeignLayerType } from './media-types.js';
import { hostPlatform, toPlatform, type Platform } from './platform.js';
import { apiHostOf, toReference, withTarget, type ImageReference } from './reference.js';
import { resolveImage, type FetchedManifest, type ResolvedImage } from './resolve.js';

/** Options of a {@link RegistryClient}. */
export interface RegistryClientOptions extends HttpOptions {
  /** Credentials per registry (`{ 'ghcr.io': { username, password } }`), or a lookup function. Tried first. */
  credentials?: Readonly<Record<string, Credentials>> | CredentialSource;
  /** Read docker's `config.json` (`$DOCKER_CONFIG` honoured) for credentials: true by default. */
  dockerConfig?: boolean | { path?: string };
  /** Fetch foreign (non-distributable) layers from their `urls` when the registry does not have them. */
  allowForeignLayers?: boolean;
  /**
   * A content-addressed cache (a directory, or a {@link BlobCache}): blobs and manifests fetched by digest are
   * kept and reused without touching the network. Tags are always resolved at the registry.
   */
  cache?: string | BlobCache;
  /**
   * Pull-through mirrors by registry (`{ 'docker.io': 'http://mirror.internal:5000' }`): every request for that
   * registry goes to the mirror instead (a docker-registry in `proxy.remoteurl` mode mirrors one registry).
   * Image names, and so everything written from them, stay those of the registry.
   */
  mirrors?: Readonly<Record<string, string>>;
}

/** How {@link RegistryClient.request} sends one request. */
export interface RequestInit {
  method?: HttpMethod;
  headers?: Record<string, string>;
  body?: HttpBody;
  signal?: AbortSignal;
  /** An absolute URL (an upload `Location`) instead of `/v2/<path>`. */
  url?: URL;
  /** `false`: send once, no retries on 5xx or network errors (a chunk whose fate the caller must check). */
  retry?: false;
  /** A write: a final 401 `insufficient_scope` or a 403 is `ETCH_DENIED`, not `ETCH_AUTH_FAILED`. */
  write?: boolean;
}

/** Options of calls that take time. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** Options of {@link RegistryClient.resolve}. */
export interface ResolveOptions extends CallOptions {
  /** `linux/arm/v7` or an object; the host's platform when absent (a device preload should always pass one). */
  platform?: Platform | string;
}

/** Options of blob downloads. */
export interface BlobOptions extends CallOptions {
  onProgress?: (progress: BlobProgress) => void;
  /**
   * For a blob already in the cache: `false` skips hashing it again on the way out, for a consumer that
   * verifies the digest itself (the docker store does). Its size is still enforced. Default `true`.
   */
  verifyCached?: boolean;
}

// Manifests and configs are read into memory; cap them as containerd does, so a hostile server cannot.
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 64 * 1024 * 1024;

/** The errno-style code at the root of a network failure (`ECONNREFUSED`, `ENOTFOUND`, a TLS code…). */
function rootCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as Error).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && !code.startsWith('ETCH_')) return code;
  }
  return undefined;
}

/**
 * What to do about a registry that could not be reached, by what failed: a name that does not resolve or a
 * refused connection is not a TLS problem, and only plain-HTTP and certificate failures are helped by the
 * options of the client (`insecureRegistries`, the CLI's `--insecure-registry`; `ca`, or Node's
 * `NODE_EXTRA_CA_CERTS`).
 */
function adviceFor(error: unknown, registry: string, triedHttp: boolean): string {
  const code = rootCode(error);
  if (code === 'ENOTFOUND')
    return ` The name ${registry.replace(/:\d+$/, '')} does not resolve: check its spelling and DNS.`;
  if (code === 'ECONNREFUSED')
    return ` Nothing accepts connections there: check the address and port, and that the registry is running.`;
  if (triedHttp) return '';
  return ` If it serves plain HTTP, list it as insecure (--insecure-registry ${registry}); if its certificate is signed by a private CA, trust that CA (NODE_EXTRA_CA_CERTS=ca.pem).`;
}

/**
 * A Docker Registry HTTP API v2 / OCI distribution client for pulls: resolves references (through indexes, by
 * platform), fetches manifests and configs verified against their digests, and streams blobs verified and
 * resumable. One client can talk to many registries; it keeps connections and tokens per registry.
 *
 * @example
 * ```ts
 * const client = new RegistryClient();
 * const image = await client.resolve('alpine:3.20', { platform: 'linux/arm/v7' });
 * for await (const chunk of client.openBlob('alpine:3.20', image.layers[0])) { … }
 * await client.close();
 * ```
 */
export class RegistryClient {
  readonly http: HttpClient;
  private readonly logger: Logger;
  private readonly credentialSource: CredentialSource;
  private readonly auths = new Map<string, RegistryAuth>();
  private readonly pings = new Map<string, Promise<void>>();
  private readonly schemes = new Map<string, 'https' | 'http'>();
  private readonly allowForeignLayers: boolean;
  /** The cache in use, if any. */
  readonly cache: BlobCache | undefined;
  /** Registry → mirror host (`host:port`) and its scheme. */
  private readonly mirrors = new Map<string, { host: string; scheme: 'https' | 'http' }>();
  /** Blob downloads into the cache in progress, by digest: a concurrent reader waits for one instead of starting another. */
  private readonly downloads = new Map<string, Promise<void>>();

  constructor(options: RegistryClientOptions = {}) {
    this.http = new HttpClient(options);
    this.cache = typeof options.cache === 'string' ? new BlobCache(options.cache) : options.cache;
    this.logger = options.logger ?? silentLogger;
    this.allowForeignLayers = Boolean(options.allowForeignLayers);
    for (const [registry, mirror] of Object.entries(options.mirrors ?? {})) {
      let url: URL;
      try {
        url = new URL(mirror);
      } catch (cause) {
        throw new EtchError('ETCH_USAGE', `The mirror of ${registry} is not a URL: ${JSON.stringify(mirror)}.`, {
          cause,
        });
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:')
        throw new EtchError('ETCH_USAGE', `The mirror of ${registry} must be an http(s) URL, not ${url.protocol}.`);
      this.mirrors.set(registry, { host: url.host, scheme: url.protocol === 'http:' ? 'http' : 'https' });
    }
    const sources: CredentialSource[] = [];
    if (typeof options.credentials === 'function') sources.push(options.credentials);
    else if (options.credentials) sources.push(staticCredentials(options.credentials));
    if (options.dockerConfig !== false)
      sources.push(
        dockerConfigCredentials(
          typeof options.dockerConfig === 'object' && options.dockerConfig.path
            ? { path: options.dockerConfig.path }
            : {},
        ),
      );
    this.credentialSource = chainCredentials(...sources);
  }

  /** `https://registry-1.docker.io`, `http://127.0.0.1:5000`: the scheme the ping settled on (HTTPS until then). */
  baseUrl(registry: string): string {
    const mirror = this.mirrors.get(registry);
    if (mirror) return `${mirror.scheme}://${mirror.host}`;
    const host = apiHostOf(registry);
    return `${this.schemes.get(registry) ?? 'https'}://${host}`;
  }

  private auth(registry: string): RegistryAuth {
    let auth = this.auths.get(registry);
    if (!auth) {
      auth = new RegistryAuth(registry, this.http, this.credentialSource, this.logger);
      this.auths.set(registry, auth);
    }
    return auth;
  }

  /**
   * `GET /v2/` once per registry, to learn whether and how it wants auth, and over which scheme: HTTPS, or
   * for loopback and insecure registries plain HTTP when HTTPS cannot connect.
   */
  private ping(registry: string, signal?: AbortSignal): Promise<void> {
    let pending = this.pings.get(registry);
    if (!pending) {
      pending = this.pingOnce(registry, signal).catch((error: unknown) => {
        this.pings.delete(registry);
        throw error;
      });
      this.pings.set(registry, pending);
    }
    return pending;
  }

  private async pingOnce(registry: string, signal?: AbortSignal): Promise<void> {
    const mirror = this.mirrors.get(registry);
    const host = mirror?.host ?? apiHostOf(registry);
    const schemes = mirror ? [mirror.scheme] : this.http.schemesFor(host);
    let httpsFailure: unknown;
    for (const scheme of schemes) {
      const url = new URL('/v2/', `${scheme}://${host}`);
      let response: HttpResponse;
      try {
        response = await this.http.withRetries(`Contacting ${registry}`, signal, () =>
          this.http.send({ url, ...(signal ? { signal } : {}) }),
        );
      } catch (error) {
        if (signal?.aborted || !isEtchError(error, 'ETCH_NETWORK')) throw error;
        if (scheme === 'https' && schemes.length > 1) {
          httpsFailure = error;
          this.logger.debug('HTTPS failed; trying plain HTTP', { registry });
          continue;
        }
        throw new EtchError(
          'ETCH_NETWORK',
          `${error.message.replace(/\.$/, '')} (${url.origin}).${adviceFor(error, registry, schemes.length > 1)}`,
          {
            cause: error.cause ?? error,
            details: { registry },
          },
        );
      }
      await drain(response);
      if (response.status !== 200 && response.status !== 401) {
        const https = httpsFailure instanceof Error ? ` HTTPS failed first: ${httpsFailure.message}` : '';
        throw new EtchError(
          'ETCH_NETWORK',
          `${registry} does not answer like a registry (GET ${url.origin}/v2/ gave HTTP ${response.status}).${https}`,
          { cause: httpsFailure, details: { statusCode: response.status, registry } },
        );
      }
      this.schemes.set(registry, scheme);
      this.auth(registry).learnFromPing(response);
      return;
    }
  }

  /**
   * A request to `/v2/<path>` (or to `init.url`, an upload URL the registry handed out) with auth for `scopes`:
   * retried on network errors, 429 and 5xx; on a 401 the client re-authenticates once (new token, new scope)
   * and tries again. Credentials go only to the registry's own origin: an upload URL on another host gets
   * none, like a redirect. A streamed body is sent once: no retries, and a 401 is returned to the caller.
   */
  async request(
    registry: string,
    path: string,
    scopes: readonly string[],
    init: RequestInit,
    what: string,
  ): Promise<HttpResponse> {
    throwIfAborted(init.signal);
    await this.ping(registry, init.signal);
    const auth = this.auth(registry);
    const base = new URL(this.baseUrl(registry));
    const url = init.url ?? new URL(`/v2/${path}`, base);
    const ours = url.origin === base.origin;
    const replayable = isReplayableBody(init.body);
    const once = (authorization: string | undefined) =>
      this.http.send({
        url,
        ...(init.method ? { method: init.method } : {}),
        ...(init.headers ? { headers: init.headers } : {}),
        ...(init.body !== undefined ? { body: init.body } : {}),
        ...(authorization !== undefined ? { authorization } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      });
    const send = (authorization: string | undefined) =>
      replayable && init.retry !== false
        ? this.http.withRetries(what, init.signal, () => once(authorization))
        : once(authorization).catch((error: unknown) => {
            throw this.http.networkError(what, error, init.signal);
          });
    let authorization = ours ? await auth.authorization(scopes, init.signal) : undefined;
    let response = await send(authorization);
    // A 401 from another host (blob storage after a redirect) is that host's business: its challenge must
    // never make us send the registry's credentials to a realm it names.
    if (response.status === 401 && (response.url.origin !== base.origin || !ours)) return response;
    if (response.status === 401) {
      await drain(response);
      const next = await auth.reauthorize(response, scopes, authorization, init.signal);
      if (next === undefined) return this.unauthorized(registry, what, response, init.signal, init.write);
      if (!replayable) {
        throw new EtchError('ETCH_NETWORK', `${what}: the registry asked for new credentials mid-upload.`, {
          details: { statusCode: 401, registry, reauthenticated: true },
        });
      }
      authorization = next;
      response = await send(authorization);
      if (response.status === 401) {
        await drain(response);
        return this.unauthorized(registry, what, response, init.signal, init.write);
      }
    }
    return response;
  }

  /**
   * The error for a refusal: `ETCH_DENIED` when the registry accepted who we are but not what we asked
   * (a write, or an `insufficient_scope` challenge after a fresh token), else `ETCH_AUTH_FAILED`. Both name
   * where the credentials came from, never the credentials.
   */
  async unauthorized(
    registry: string,
    what: string,
    response: HttpResponse | number,
    signal?: AbortSignal,
    write = false,
  ): Promise<never> {
    const status = typeof response === 'number' ? response : response.status;
    const challenge = typeof response === 'number' ? '' : String(response.headers['www-authenticate'] ?? '');
    const source = await this.auth(registry).credentialSourceName(signal);
    const denied = write && (status === 403 || /insufficient_scope/i.test(challenge));
    if (denied) {
      throw new EtchError(
        'ETCH_DENIED',
        `${registry} does not allow ${what} (HTTP ${status}) with the credentials from ${source}. Use an account with push rights on this repository, or run docker login ${registry}.`,
        { details: { statusCode: status, registry, credentialSource: source } },
      );
    }
    throw new EtchError(
      'ETCH_AUTH_FAILED',
      `${registry} refused ${what} (HTTP ${status}); credentials tried: ${source}. Check them, or run docker login ${registry}.`,
      {
        details: { statusCode: status, registry, credentialSource: source },
      },
    );
  }

  /**
   * Fetches the manifest or index a reference points to (by digest when it pins one, else by tag; `latest`
   * when it has neither). Its digest is the sha256 of the bytes received and must equal a pinned digest.
   */
  async getManifest(reference: ImageReference | string, options: CallOptions = {}): Promise<FetchedManifest> {
    const ref = toReference(reference);
    const target = ref.digest ?? ref.tag ?? 'latest';
    const what = `${ref.fullName}${ref.digest ? `@${ref.digest}` : `:${target}`}`;
    const cached = ref.digest !== undefined ? await this.cachedManifest(ref.digest, what) : undefined;
    if (cached) return cached;
    const response = await this.request(
      ref.registry,
      `${ref.repository}/manifests/${target}`,
      [pullScope(ref.repository)],
      { headers: { accept: IMAGE_ACCEPT.join(', ') }, ...(options.signal ? { signal: options.signal } : {}) },
      `the manifest of ${what}`,
    );
    if (response.status !== 200) {
      const errors = await registryErrors(response);
      const codes = errors.map((e) => e.code).filter(Boolean);
      if (response.status === 404 || codes.includes('MANIFEST_UNKNOWN') || codes.includes('NAME_UNKNOWN')) {
        const missing = codes.includes('NAME_UNKNOWN')
          ? `The repository ${ref.fullName} does not exist`
          : ref.digest
            ? `The manifest ${ref.digest} is not in ${ref.fullName}`
            : `The tag ${target} is not in ${ref.fullName}`;
        throw new EtchError(
          'ETCH_NOT_FOUND',
          `${missing} (HTTP ${response.status}${codes.length ? `, ${codes.join(', ')}` : ''}). Check the image name${ref.digest ? '' : ' and tag'}.`,
          { details: { statusCode: response.status, reference: String(ref) } },
        );
      }
      if (response.status === 403)
        return this.unauthorized(ref.registry, `the manifest of ${what}`, 403, options.signal);
      throw new EtchError(
        'ETCH_NETWORK',
        `Fetching the manifest of ${what} failed with HTTP ${response.status}${codes.length ? ` (${codes.join(', ')})` : ''}.`,
        { details: { statusCode: response.status } },
      );
    }
    const bytes = await readLimited(response, MAX_MANIFEST_BYTES, `The manifest of ${what}`);
    const digest = digestBytes(bytes, ref.digest ?? 'sha256:');
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `The registry served a manifest for ${what} whose digest is ${digest}; refusing it.`,
        { details: { digest: ref.digest, actual: digest } },
      );
    }
    const hint = header(response.headers, 'docker-content-digest');
    if (hint !== undefined && hint !== digest)
      this.logger.debug('Docker-Content-Digest differs from the bytes received; using the bytes', { reference: what });
    const json = parseJsonDocument(bytes, `The manifest of ${what}`);
    const mediaType = detectManifestMediaType(
      json,
      header(response.headers, 'content-type'),
      `The manifest of ${what}`,
    );
    if (this.cache) for await (const _ of this.cache.writeThrough({ digest }, [bytes]));
    return { digest, mediaType, bytes, json };
  }

  /** A manifest from the cache: its bytes are verified against the digest, its type read from its body. */
  private async cachedManifest(digest: string, what: string): Promise<FetchedManifest | undefined> {
    const cache = this.cache;
    if (!cache) return undefined;
    const size = await stat(cache.pathOf(digest)).then(
      (s) => s.size,
      () => undefined,
    );
    if (size === undefined || size > MAX_MANIFEST_BYTES) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of cache.read({ digest, size })) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    const json = parseJsonDocument(bytes, `The cached manifest of ${what}`);
    return {
      digest,
      mediaType: detectManifestMediaType(json, undefined, `The cached manifest of ${what}`),
      bytes,
      json,
    };
  }

  /**
   * Resolves a reference to one image for a platform: index → platform manifest → config, each verified.
   * Fails with `ETCH_PLATFORM_NOT_FOUND` listing what the index offers when nothing fits.
   */
  async resolve(reference: ImageReference | string, options: ResolveOptions = {}): Promise<ResolvedImage> {
    const ref = toReference(reference);
    const wanted = options.platform === undefined ? hostPlatform() : toPlatform(options.platform);
    const call = options.signal ? { signal: options.signal } : {};
    const top = await this.getManifest(ref, call);
    const display = String(ref);
    return resolveImage(top, wanted, display, {
      byDigest: (d) => this.getManifest(withTarget(ref, { digest: d.digest }), call),
      config: (d) => this.fetchBlob(ref, d, call),
      allowForeignLayers: this.allowForeignLayers,
    });
  }

  /** A small blob (a config) into memory, verified against its descriptor. */
  async fetchBlob(
    reference: ImageReference | string,
    descriptor: Descriptor,
    options: CallOptions = {},
  ): Promise<Buffer> {
    if (descriptor.size > MAX_CONFIG_BYTES)
      throw new EtchError(
        'ETCH_BAD_MANIFEST',
        `The blob ${descriptor.digest} is ${descriptor.size} bytes; too large to read into memory.`,
      );
    const chunks: Buffer[] = [];
    for await (const chunk of this.openBlob(reference, descriptor, options)) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  /**
   * Streams a blob, verified against the descriptor's size and digest, resuming with `Range` after a cut.
   * Redirects to storage hosts are followed without the registry's Authorization header.
   */
  async *openBlob(
    reference: ImageReference | string,
    descriptor: Descriptor,
    options: BlobOptions = {},
  ): AsyncGenerator<Buffer> {
    const cache = this.cache;
    if (!cache) {
      yield* this.downloadBlob(reference, descriptor, options);
      return;
    }
    // Single flight: while one caller downloads a blob into the cache, others wait for it and read the cached
    // file, so concurrent pulls of one image reach the registry once per blob. When the download stops short
    // (its caller gave up), the next waiter downloads it instead.
    for (;;) {
      if (await cache.has(descriptor)) {
        yield* options.verifyCached === false
          ? cache.readUnverified(descriptor, options)
          : cache.read(descriptor, options);
        return;
      }
      const pending = this.downloads.get(descriptor.digest);
      if (pending === undefined) break;
      await untilAborted(pending, options.signal);
    }
    // Settles (never rejects) when this download ends, however it ends: waiters then look at the cache again.
    let finish!: () => void;
    this.downloads.set(descriptor.digest, new Promise<void>((resolve) => (finish = resolve)));
    try {
      yield* cache.writeThrough(
        descriptor,
        this.downloadBlob(reference, descriptor, options),
        options.signal ? { signal: options.signal } : {},
      );
    } finally {
      this.downloads.delete(descriptor.digest);
      finish();
    }
  }

  /**
   * Makes sure a blob is in the cache (downloading and verifying it when it is not), without handing the bytes
   * out: what a pipeline calls ahead of time so that later reads come from disk. Says which it was.
   */
  async prefetch(
    reference: ImageReference | string,
    descriptor: Descriptor,
    options: BlobOptions = {},
  ): Promise<'cached' | 'downloaded'> {
    if (!this.cache) throw new EtchError('ETCH_USAGE', 'prefetch needs a client with a cache directory.');
    throwIfAborted(options.signal);
    if (await this.cache.has(descriptor)) return 'cached';
    for await (const _ of this.openBlob(reference, descriptor, options));
    return 'downloaded';
  }

  private downloadBlob(
    reference: ImageReference | string,
    descriptor: Descriptor,
    options: BlobOptions,
  ): AsyncGenerator<Buffer> {
    const ref = toReference(reference);
    const what = `blob ${descriptor.digest} of ${ref.fullName}`;
    const foreign = this.allowForeignLayers && isForeignLayerType(descriptor.mediaType) ? (descriptor.urls ?? []) : [];
    const open = async (offset: number, signal?: AbortSignal): Promise<HttpResponse> => {
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      const response = await this.request(
        ref.registry,
        `${ref.repository}/blobs/${descriptor.digest}`,
        [pullScope(ref.repository)],
        { headers, ...(signal ? { signal } : {}) },
        what,
      );
      if (response.status !== 404 || foreign.length === 0) return response;
      await drain(response);
      return this.openForeign(foreign, headers, what, signal);
    };
    return verifiedBlob(this.http, open, descriptor, {
      what,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }

  /** A foreign layer from its own URLs: never with the registry's credentials. */
  private async openForeign(
    urls: readonly string[],
    headers: Record<string, string>,
    what: string,
    signal?: AbortSignal,
  ): Promise<HttpResponse> {
    let last: HttpResponse | undefined;
    for (const raw of urls) {
      const url = new URL(raw);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') continue;
      last = await this.http.withRetries(what, signal, () =>
        this.http.send({ url, headers, ...(signal ? { signal } : {}) }),
      );
      if (last.status === 200 || last.status === 206) return last;
      await drain(last);
    }
    throw blobStatusError(last?.status ?? 404, what, '');
  }

  /** Every tag of a repository, following `Link` pagination. */
  async listTags(
    repository: ImageReference | string,
    options: CallOptions & { pageSize?: number } = {},
  ): Promise<string[]> {
    const ref = toReference(repository);
    const tags: string[] = [];
    for await (const page of this.pages(
      ref.registry,
      `${ref.repository}/tags/list`,
      [pullScope(ref.repository)],
      options.pageSize,
      `the tags of ${ref.fullName}`,
      options.signal,
    )) {
      collectNames(tags, (page as { tags?: unknown } | null)?.tags, `the tags of ${ref.fullName}`);
    }
    return tags;
  }

  /** The repositories of a registry (`/v2/_catalog`), following `Link` pagination. Many public registries refuse it. */
  async catalog(registry: string, options: CallOptions & { pageSize?: number } = {}): Promise<string[]> {
    const names: string[] = [];
    for await (const page of this.pages(
      registry,
      '_catalog',
      ['registry:catalog:*'],
      options.pageSize,
      `the catalog of ${registry}`,
      options.signal,
    )) {
      collectNames(names, (page as { repositories?: unknown } | null)?.repositories, `the catalog of ${registry}`);
    }
    return names;
  }

  private async *pages(
    registry: string,
    path: string,
    scopes: readonly string[],
    pageSize: number | undefined,
    what: string,
    signal?: AbortSignal,
  ): AsyncGenerator<unknown> {
    let next: string | undefined = pageSize ? `${path}?n=${pageSize}` : path;
    for (let page = 0; next !== undefined; page += 1) {
      if (page > 10_000) throw new EtchError('ETCH_NETWORK', `${what} has more than 10000 pages; stopping.`);
      const response = await this.request(registry, next, scopes, signal ? { signal } : {}, what);
      if (response.status !== 200) {
        const codes = (await registryErrors(response)).map((e) => e.code).filter(Boolean);
        if (response.status === 404)
          throw new EtchError(
            'ETCH_NOT_FOUND',
            `${what} does not exist (HTTP 404${codes.length ? `, ${codes.join(', ')}` : ''}).`,
            { details: { statusCode: 404 } },
          );
        if (response.status === 403) return this.unauthorized(registry, what, 403, signal);
        throw new EtchError('ETCH_NETWORK', `Listing ${what} failed with HTTP ${response.status}.`, {
          details: { statusCode: response.status },
        });
      }
      const link = header(response.headers, 'link');
      yield parseJsonDocument(await readLimited(response, MAX_MANIFEST_BYTES, what), what);
      next = nextPage(link);
    }
  }

  /** Whether the repository has a blob (`HEAD`); see {@link blobExists}. */
  blobExists(
    reference: ImageReference | string,
    blob: { digest: string; size?: number },
    options: CallOptions & { scopes?: readonly string[] } = {},
  ): Promise<boolean> {
    return blobExists(this, reference, blob, options);
  }

  /** Uploads a blob: one streamed `PUT` when digest and size are known, else resumable chunks; see {@link uploadBlob}. */
  uploadBlob(
    reference: ImageReference | string,
    content: BlobContent,
    options: UploadOptions = {},
  ): Promise<UploadedBlob> {
    return uploadBlob(this, reference, content, options);
  }

  /** Mounts a blob from another repository of the registry, uploading `fallback` when it will not; see {@link mountBlob}. */
  mountBlob(
    reference: ImageReference | string,
    blob: { digest: string; size: number },
    from: string,
    options: CallOptions & { scopes?: readonly string[]; fallback?: BlobContent; chunkSize?: number } = {},
  ): Promise<UploadedBlob> {
    return mountBlob(this, reference, blob, from, options);
  }

  /** Stores a manifest or index with exactly these bytes under a tag or its digest; see {@link putManifest}. */
  putManifest(
    reference: ImageReference | string,
    manifest: { bytes: Uint8Array; mediaType: string },
    options: PutManifestOptions = {},
  ): Promise<string> {
    return putManifest(this, reference, manifest, options);
  }

  /** Deletes a manifest by digest, where the registry allows it. */
  deleteManifest(reference: ImageReference | string, digest: string, options: CallOptions = {}): Promise<void> {
    return deleteFromRegistry(this, reference, 'manifests', digest, options);
  }

  /** Deletes a blob, where the registry allows it. */
  deleteBlob(reference: ImageReference | string, digest: string, options: CallOptions = {}): Promise<void> {
    return deleteFromRegistry(this, reference, 'blobs', digest, options);
  }

  /**
   * Closes idle connections, once every write into the cache has ended: after aborting a run, the cache's
   * directory can then be removed without a download putting a file back into it.
   */
  async close(): Promise<void> {
    await this.cache?.idle();
    await this.http.close();
  }
}

/**
 * The most names a listing may add up to: far beyond any real repository (balenaOS ECI repositories have a
 * few hundred tags), and a bound against a registry that pages forever.
 */
export const MAX_LISTED_NAMES = 100_000;

/** Adds a page's string names to `into`, one by one (a spread of 150,000 overflowed the stack). */
function collectNames(into: string[], list: unknown, what: string): void {
  if (!Array.isArray(list)) return;
  for (const name of list as unknown[]) {
    if (typeof name !== 'string') continue;
    if (into.length >= MAX_LISTED_NAMES)
      throw new EtchError('ETCH_NETWORK', `Listing ${what} returned more than ${MAX_LISTED_NAMES} names; stopping.`);
    into.push(name);
  }
}

/** The `rel="next"` target of a `Link` header, as a path under `/v2/`. */
export function nextPage(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const match = /<([^>]+)>\s*;\s*rel="?next"?/i.exec(part);
    if (match?.[1]) {
      const url = new URL(match[1], 'http://registry.invalid');
      return `${url.pathname.replace(/^\/v2\//, '')}${url.search}`;
    }
  }
  return undefined;
}
