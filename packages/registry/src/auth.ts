import { EtchError, isEtchError, silentLogger, type Logger } from '@etch/format';
import { parseChallenges, type Challenge } from './challenge.js';
import type { CredentialSource, Credentials, FoundCredentials } from './credentials.js';
import { drain, isLoopbackHost, type HttpClient, type HttpResponse } from './http.js';
import { readLimited } from './registry-errors.js';
import { apiHostOf } from './reference.js';

/** Scopes a pull needs: `repository:<name>:pull`. The name may contain `host:port`, so scopes are never split. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** Scopes a push needs: `repository:<name>:pull,push` (a push reads too: existence checks, mounts). */
export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

/** The longest bearer token accepted from a token service (real ones are a few KiB of JWT). */
const MAX_TOKEN_LENGTH = 64 * 1024;
/** The largest token answer read (a token, a refresh token and a few fields). */
const MAX_TOKEN_RESPONSE_BYTES = 256 * 1024;

interface CachedToken {
  authorization: string;
  /** When to stop using it: a little before it expires. */
  renewAt: number;
}

// A token is renewed this long before it expires, so a long blob stream does not start with a dying token.
const RENEW_EARLY_MS = 10_000;
const MIN_EXPIRES_IN_S = 60;
const OAUTH_CLIENT_ID = 'etch';

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/**
 * Authentication for one registry: learns its challenge from `GET /v2/` or from a 401, exchanges credentials
 * (or nothing, for anonymous pulls) for bearer tokens at the realm, and caches them per scope set until
 * shortly before they expire. Secrets stay inside: errors and logs name only where credentials came from.
 */
export class RegistryAuth {
  private challenge: Challenge | null | undefined;
  private readonly tokens = new Map<string, Promise<CachedToken>>();
  private found: Promise<FoundCredentials | undefined> | undefined;

  constructor(
    private readonly registry: string,
    private readonly http: HttpClient,
    private readonly credentialSource: CredentialSource,
    private readonly logger: Logger = silentLogger,
  ) {}

  /** Where the credentials in use came from (`options`, `auths in ~/.docker/config.json`…), or `none`. */
  async credentialSourceName(signal?: AbortSignal): Promise<string> {
    return (await this.credentials(signal))?.source ?? 'none (anonymous)';
  }

  private credentials(signal?: AbortSignal): Promise<FoundCredentials | undefined> {
    this.found ??= this.credentialSource(this.registry, signal);
    return this.found;
  }

  /** True once the registry's auth scheme is known (from a ping or a 401). */
  get knowsChallenge(): boolean {
    return this.challenge !== undefined;
  }

  /** Records what `GET /v2/` answered: 200 means no auth, 401 carries the challenge. */
  learnFromPing(response: HttpResponse): void {
    this.challenge = response.status === 401 ? this.pick(parseChallenges(response.headers['www-authenticate'])) : null;
  }

  private pick(challenges: Challenge[]): Challenge | null {
    return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic') ?? null;
  }

  /** The Authorization header for a request needing `scopes`, or undefined when the registry wants none. */
  async authorization(scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const found = await this.credentials(signal);
    if (found && 'registryToken' in found.credentials) return `Bearer ${found.credentials.registryToken}`;
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      const c = found?.credentials;
      return c && 'password' in c ? basic(c.username, c.password) : undefined;
    }
    const key = `${challenge.params['realm']}|${challenge.params['service'] ?? ''}|${[...scopes].sort().join(' ')}`;
    const cached = this.tokens.get(key);
    if (cached) {
      const token = await cached.catch(() => undefined);
      if (token && Date.now() < token.renewAt) return token.authorization;
      if (this.tokens.get(key) === cached) this.tokens.delete(key);
    }
    const pending = this.fetchToken(challenge, scopes, found, signal);
    this.tokens.set(key, pending);
    pending.catch(() => this.tokens.delete(key));
    return (await pending).authorization;
  }

  /**
   * After a 401: take the new challenge (a registry may ask for another scope or realm), forget cached tokens
   * and return a fresh header. Returns undefined when there is nothing new to try.
   */
  async reauthorize(
    response: HttpResponse,
    scopes: readonly string[],
    previous: string | undefined,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenge = this.pick(parseChallenges(response.headers['www-authenticate']));
    if (challenge) this.challenge = challenge;
    this.tokens.clear();
    const scope = challenge?.params['scope'];
    const wanted = scope && !scopes.includes(scope) ? [scope, ...scopes] : scopes;
    const next = await this.authorization(wanted, signal);
    return next === undefined || next === previous ? undefined : next;
  }

  private async fetchToken(
    challenge: Challenge,
    scopes: readonly string[],
    found: FoundCredentials | undefined,
    signal?: AbortSignal,
  ): Promise<CachedToken> {
    const realm = challenge.params['realm'];
    if (!realm)
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        `${this.registry} asked for a bearer token without saying where to get it (no realm).`,
      );
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new EtchError('ETCH_AUTH_FAILED', `${this.registry} named a token service that is not a URL.`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new EtchError('ETCH_AUTH_FAILED', `${this.registry}'s token service is not HTTP(S).`);
    // Credentials go to a plain-HTTP token service only where plain HTTP is allowed anyway.
    if (
      url.protocol === 'http:' &&
      !isLoopbackHost(url.host) &&
      !this.http.schemesFor(apiHostOf(this.registry)).includes('http')
    ) {
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        `${this.registry} names a token service over plain HTTP (${url.host}); credentials are not sent without TLS. List the registry as insecure if that is intended.`,
      );
    }
    const service = challenge.params['service'];
    const credentials: Credentials | undefined = found?.credentials;
    const started = Date.now();
    let response: HttpResponse;
    if (credentials && 'identityToken' in credentials) {
      response = await this.postToken(
        url,
        service,
        scopes,
        { grant_type: 'refresh_token', refresh_token: credentials.identityToken },
        signal,
      );
      // Some token services only speak the GET flow; fall back as docker clients do.
      if (response.status === 404 || response.status === 405) {
        await drain(response);
        response = await this.getToken(url, service, scopes, undefined, signal);
      }
    } else {
      response = await this.getToken(
        url,
        service,
        scopes,
        credentials && 'password' in credentials ? credentials : undefined,
        signal,
      );
    }
    if (response.status === 401 || response.status === 403) {
      await drain(response);
      const source = found?.source;
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        source
          ? `The token service of ${this.registry} (${url.host}) refused the credentials from ${source} (HTTP ${response.status}). Check them, e.g. with docker login ${this.registry}.`
          : `The token service of ${this.registry} (${url.host}) refused anonymous access (HTTP ${response.status}); no credentials were found for it. Pass credentials or run docker login ${this.registry}.`,
        { details: { statusCode: response.status, registry: this.registry, credentialSource: source ?? 'none' } },
      );
    }
    if (response.status !== 200) {
      await drain(response);
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        `The token service of ${this.registry} (${url.host}) answered HTTP ${response.status}.`,
        { details: { statusCode: response.status, registry: this.registry } },
      );
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      const text = (
        await readLimited(response, MAX_TOKEN_RESPONSE_BYTES, `The token answer of ${this.registry}`)
      ).toString('utf8');
      body = JSON.parse(text) as typeof body;
    } catch (cause) {
      if (isEtchError(cause, 'ETCH_NETWORK')) throw cause;
      if (isEtchError(cause))
        throw new EtchError('ETCH_AUTH_FAILED', `The token service of ${this.registry}: ${cause.message}`, { cause });
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        `The token service of ${this.registry} answered something that is not JSON.`,
        { cause },
      );
    }
    const token =
      typeof body.access_token === 'string' && body.access_token !== ''
        ? body.access_token
        : typeof body.token === 'string'
          ? body.token
          : '';
    if (token === '')
      throw new EtchError('ETCH_AUTH_FAILED', `The token service of ${this.registry} answered without a token.`);
    // Sent with every request of the pull: a token of megabytes is an attack on memory (and no registry's).
    if (token.length > MAX_TOKEN_LENGTH)
      throw new EtchError(
        'ETCH_AUTH_FAILED',
        `The token service of ${this.registry} answered a token of ${token.length} characters; more than ${MAX_TOKEN_LENGTH} is refused.`,
        { details: { registry: this.registry } },
      );
    const expiresIn = Math.max(
      MIN_EXPIRES_IN_S,
      typeof body.expires_in === 'number' ? body.expires_in : MIN_EXPIRES_IN_S,
    );
    const issued = typeof body.issued_at === 'string' ? Date.parse(body.issued_at) : NaN;
    // A server clock far from ours would make issued_at useless; trust it only when it is plausible.
    const from = Number.isNaN(issued) || Math.abs(issued - started) > 5 * 60_000 ? started : issued;
    this.logger.debug('token', { registry: this.registry, scopes: scopes.join(' '), expiresIn });
    return { authorization: `Bearer ${token}`, renewAt: from + expiresIn * 1000 - RENEW_EARLY_MS };
  }

  private getToken(
    realm: URL,
    service: string | undefined,
    scopes: readonly string[],
    credentials: { username: string; password: string } | undefined,
    signal?: AbortSignal,
  ): Promise<HttpResponse> {
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    if (credentials) url.searchParams.set('account', credentials.username);
    return this.http.withRetries(`Getting a token for ${this.registry}`, signal, () =>
      this.http.send({
        url,
        ...(credentials ? { authorization: basic(credentials.username, credentials.password) } : {}),
        ...(signal ? { signal } : {}),
      }),
    );
  }

  private postToken(
    realm: URL,
    service: string | undefined,
    scopes: readonly string[],
    grant: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<HttpResponse> {
    const form = new URLSearchParams({
      ...grant,
      client_id: OAUTH_CLIENT_ID,
      ...(service !== undefined ? { service } : {}),
      ...(scopes.length ? { scope: scopes.join(' ') } : {}),
    });
    return this.http.withRetries(`Getting a token for ${this.registry}`, signal, () =>
      this.http.send({
        url: realm,
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        ...(signal ? { signal } : {}),
      }),
    );
  }
}
