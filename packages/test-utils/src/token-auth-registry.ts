import {
  createHash,
  createPrivateKey,
  randomBytes,
  randomUUID,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistryServer, type RegistryServer } from './docker-registry.js';
import { run } from './run.js';

/** One access request inside a token request: `repository:library/alpine:pull,push` parsed. */
export interface TokenScope {
  /** `repository`, `registry`, … */
  type: string;
  /** `library/alpine`, or `catalog` for `registry:catalog:*`. */
  name: string;
  actions: string[];
}

/** What {@link TokenAuthRegistryOptions.allow} is asked. */
export interface TokenGrantRequest extends TokenScope {
  /** The authenticated user; undefined for an anonymous request. */
  account: string | undefined;
}

/** A token request as the token server saw it, in arrival order. */
export interface RecordedTokenRequest {
  /** `GET` or `POST` for a well-behaved client; anything else it sent. */
  method: string;
  /** Every query parameter, repeated ones (`scope`) in order. */
  query: Record<string, string[]>;
  /** POST only: the form fields, as sent (passwords included: tests assert what travelled where). */
  form: Record<string, string> | undefined;
  /** `grant_type` of a POST: `password` or `refresh_token`. */
  grantType: string | undefined;
  /** Whether an `Authorization` header came with it. */
  authorization: boolean;
  /** Its scheme (`Basic`, `Bearer`) when there was one. */
  authorizationScheme: string | undefined;
  /** `service` from the query or form. */
  service: string | undefined;
  /** Every scope asked for (repeated `scope` params, or the space-separated POST `scope`). */
  scopes: string[];
  /** The user the credentials named, once checked; undefined for anonymous or rejected requests. */
  account: string | undefined;
  /** The status the token server answered. */
  status: number;
}

/** Options for {@link startTokenAuthRegistry}. */
export interface TokenAuthRegistryOptions {
  /** Accounts the token server accepts, `{ name: password }`, over HTTP Basic (GET) or the OAuth2 password grant (POST). Default none. */
  users?: Record<string, string>;
  /**
   * Which of the requested actions to grant. Default: an authenticated user gets every action asked for;
   * an anonymous request gets `pull` only (when {@link anonymous} lets it have a token at all).
   * A scope granted no action is still part of the token with `actions: []`, as Docker Hub does: the registry then
   * answers 401 `insufficient_scope`.
   */
  allow?: (request: TokenGrantRequest) => string[];
  /** Whether a token request without credentials gets a token (public-repository style). Default `true` when `users` is empty, else `false`. */
  anonymous?: boolean;
  /** `expires_in` reported, and the `exp` claim, in seconds. Default 300. Change later with `setExpiresIn`. */
  expiresIn?: number;
  /** Whether POST (OAuth2) token requests are served; when false they get 404, so clients fall back to GET. Default `true`. */
  oauthPost?: boolean;
  /**
   * How the JWT header names the signing key. `x5c` (default): the certificate itself, base64 DER, verified against
   * the registry's `rootcertbundle`. `kid`: distribution 2.x's libtrust key ID of the certificate's public key.
   */
  keyHeader?: 'x5c' | 'kid';
  /** `service` in the registry config and the token's `aud`. Default `etch-registry`. */
  service?: string;
  /** `issuer` in the registry config and the token's `iss`. Default `etch-token-issuer`. */
  issuer?: string;
}

/** A `docker-registry` that wants Bearer tokens, and the loopback token server that issues them. */
export interface TokenAuthRegistry extends RegistryServer {
  /** The token endpoint, as the registry's `WWW-Authenticate: Bearer realm="…"` names it. */
  realm: string;
  service: string;
  issuer: string;
  /** The accounts, as given. */
  users: Record<string, string>;
  /** Every token request so far, oldest first. Clear it with `requests.length = 0`. */
  requests: RecordedTokenRequest[];
  /** The next `count` token requests fail with `status` (default 500) before anything is checked. */
  failNext(count: number, status?: number): void;
  /**
   * Sets `expires_in` (and the `exp` claim) of the tokens issued from now on: for clients that must fetch a new
   * token once `expires_in` has passed. The registry itself still accepts a token up to 60 s past its `exp`
   * (distribution's leeway); use {@link issueExpiredTokens} for a token the registry rejects.
   */
  setExpiresIn(seconds: number): void;
  /**
   * The next `count` tokens are issued already expired (their `exp` claim is past distribution's 60 s leeway)
   * while `expires_in` still says they are good: the registry rejects them with 401 `invalid_token`.
   */
  issueExpiredTokens(count: number): void;
  /** Issues a token directly, bypassing the HTTP endpoint and the request log (for tests that craft requests by hand). */
  issueToken(scopes: TokenScope[], account?: string): string;
}

/** distribution 2.x allows this much clock skew on `exp` and `nbf`. */
const LEEWAY_SECONDS = 60;

/** Parses `type:name:actions`; the name may hold colons (`registry:5000/x`), so the type ends at the first and the actions start after the last. */
export function parseScope(scope: string): TokenScope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const actions = scope.slice(last + 1);
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: actions ? actions.split(',') : [],
  };
}

/** distribution 2.x's libtrust key ID: base32 of the first 30 bytes of SHA-256 over the DER SubjectPublicKeyInfo, in groups of four. */
function libtrustKeyId(cert: X509Certificate): string {
  const der = cert.publicKey.export({ type: 'spki', format: 'der' });
  const digest = createHash('sha256').update(der).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out.match(/.{1,4}/g)?.join(':') ?? out;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : 0);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function basicCredentials(header: string | undefined): [string, string] | undefined {
  if (!header?.toLowerCase().startsWith('basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : [decoded.slice(0, colon), decoded.slice(colon + 1)];
}

/**
 * Starts a `docker-registry` configured with `auth: token:` and, on another loopback port, a token server that
 * speaks the Docker token protocol: `GET realm?service=…&scope=…&scope=…` (HTTP Basic optional, `offline_token=true`
 * adds a `refresh_token`) and `POST realm` with an OAuth2 form (`grant_type=password` or `refresh_token`;
 * `access_type=offline` adds a `refresh_token`). It answers `{ token, access_token, expires_in, issued_at }`
 * with an RS256 JWT (claims `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`) signed by a key whose
 * self-signed certificate (made by `openssl req -x509`) is the registry's `rootcertbundle`: the registry checks
 * the tokens, the harness does not. Every token request is recorded in `requests`.
 *
 * The token server runs in the test's own process: drive skopeo or curl with the async `run`, never with
 * `spawnSync`/`execFileSync`, which would block the event loop the token server answers on.
 * @example
 * const registry = await startTokenAuthRegistry({ users: { alice: 's3cret' } });
 * // push with skopeo --dest-creds alice:s3cret, then pull with the client under test
 * expect(registry.requests.filter((r) => r.authorization)).toHaveLength(1);
 * await registry.stop();
 */
export async function startTokenAuthRegistry(options: TokenAuthRegistryOptions = {}): Promise<TokenAuthRegistry> {
  const users = { ...(options.users ?? {}) };
  const anonymous = options.anonymous ?? Object.keys(users).length === 0;
  const service = options.service ?? 'etch-registry';
  const issuer = options.issuer ?? 'etch-token-issuer';
  const keyHeader = options.keyHeader ?? 'x5c';
  const oauthPost = options.oauthPost ?? true;
  const allow =
    options.allow ??
    ((request: TokenGrantRequest) =>
      request.account === undefined ? request.actions.filter((a) => a === 'pull') : request.actions);
  let expiresIn = options.expiresIn ?? 300;
  let failures: { count: number; status: number } = { count: 0, status: 500 };
  let expired = 0;
  const refreshTokens = new Map<string, string>();
  const requests: RecordedTokenRequest[] = [];

  const dir = await mkdtemp(join(tmpdir(), 'etch-token-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  let tokenServer: Server | undefined;
  let registry: RegistryServer | undefined;
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      '-days',
      '2',
      '-subj',
      `/CN=${issuer}`,
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ]);
    const key: KeyObject = createPrivateKey(await readFile(keyFile));
    const cert = new X509Certificate(await readFile(certFile));
    const header = base64url(
      JSON.stringify(
        keyHeader === 'x5c'
          ? { typ: 'JWT', alg: 'RS256', x5c: [cert.raw.toString('base64')] }
          : { typ: 'JWT', alg: 'RS256', kid: libtrustKeyId(cert) },
      ),
    );

    const issueToken = (scopes: TokenScope[], account?: string, alreadyExpired = false): string => {
      const now = Math.floor(Date.now() / 1000);
      const exp = alreadyExpired ? now - LEEWAY_SECONDS - 60 : now + expiresIn;
      const claims = {
        iss: issuer,
        sub: account ?? '',
        aud: service,
        exp,
        nbf: now - 1,
        iat: now,
        jti: randomUUID(),
        access: scopes.map((s) => ({ type: s.type, name: s.name, actions: allow({ ...s, account }) })),
      };
      const signingInput = `${header}.${base64url(JSON.stringify(claims))}`;
      return `${signingInput}.${base64url(sign('sha256', Buffer.from(signingInput), key))}`;
    };

    const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      const url = new URL(req.url ?? '/', 'http://token');
      const query: Record<string, string[]> = {};
      for (const [name, value] of url.searchParams) (query[name] ??= []).push(value);
      const authHeader = req.headers.authorization;
      const record: RecordedTokenRequest = {
        method: req.method ?? 'GET',
        query,
        form: undefined,
        grantType: undefined,
        authorization: authHeader !== undefined,
        authorizationScheme: authHeader?.split(' ')[0],
        service: url.searchParams.get('service') ?? undefined,
        scopes: url.searchParams.getAll('scope'),
        account: undefined,
        status: 0,
      };
      requests.push(record);
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        record.status = status;
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'POST') {
        const form = Object.fromEntries(new URLSearchParams(await readBody(req)));
        record.form = form;
        record.grantType = form.grant_type;
        record.service = form.service;
        record.scopes = (form.scope ?? '').split(' ').filter(Boolean);
      } else {
        req.resume();
      }
      if (url.pathname !== '/token') return answer(404, { error: 'not_found' });
      if (failures.count > 0) {
        failures.count -= 1;
        return answer(failures.status, { errors: [{ code: 'UNAVAILABLE', message: 'failure injected by the test' }] });
      }
      if (record.service !== service)
        return answer(400, { error: 'invalid_request', error_description: `unknown service ${record.service}` });

      let account: string | undefined;
      let wantsRefresh = false;
      if (req.method === 'GET') {
        if (authHeader !== undefined) {
          const creds = basicCredentials(authHeader);
          if (!creds || users[creds[0]] !== creds[1])
            return answer(
              401,
              { details: 'incorrect username or password' },
              { 'www-authenticate': 'Basic realm="etch-token"' },
            );
          account = creds[0];
        } else if (!anonymous) {
          return answer(401, { details: 'credentials required' }, { 'www-authenticate': 'Basic realm="etch-token"' });
        }
        wantsRefresh = account !== undefined && url.searchParams.get('offline_token') === 'true';
      } else if (req.method === 'POST') {
        if (!oauthPost) return answer(404, { error: 'not_found' });
        const form = record.form ?? {};
        if (form.grant_type === 'password') {
          if (form.username === undefined || users[form.username] !== form.password)
            return answer(401, { error: 'invalid_grant', error_description: 'incorrect username or password' });
          account = form.username;
          wantsRefresh = form.access_type === 'offline';
        } else if (form.grant_type === 'refresh_token') {
          account = form.refresh_token === undefined ? undefined : refreshTokens.get(form.refresh_token);
          if (account === undefined)
            return answer(401, { error: 'invalid_grant', error_description: 'unknown refresh token' });
        } else {
          return answer(400, { error: 'unsupported_grant_type' });
        }
      } else {
        return answer(405, { error: 'method_not_allowed' });
      }
      record.account = account;
      const scopes = record.scopes.map(parseScope).filter((s): s is TokenScope => s !== undefined);
      const token = issueToken(scopes, account, expired > 0);
      if (expired > 0) expired -= 1;
      let refreshToken: string | undefined;
      if (wantsRefresh && account !== undefined) {
        refreshToken = randomBytes(24).toString('hex');
        refreshTokens.set(refreshToken, account);
      }
      return answer(200, {
        token,
        access_token: token,
        expires_in: expiresIn,
        issued_at: new Date().toISOString(),
        ...(refreshToken ? { refresh_token: refreshToken } : {}),
      });
    };

    const server = createServer((req, res) => {
      handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(error));
      });
    });
    tokenServer = server;
    const tokenPort = await listen(server);
    const realm = `http://127.0.0.1:${tokenPort}/token`;
    registry = await startRegistryServer(`auth:
  token:
    realm: ${realm}
    service: ${service}
    issuer: ${issuer}
    rootcertbundle: ${certFile}
`);
    const started = registry;
    return {
      ...started,
      realm,
      service,
      issuer,
      users,
      requests,
      failNext(count, status = 500) {
        failures = { count, status };
      },
      setExpiresIn(seconds) {
        expiresIn = seconds;
      },
      issueExpiredTokens(count) {
        expired = count;
      },
      issueToken: (scopes, account) => issueToken(scopes, account),
      async stop() {
        await started.stop();
        await close(server);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await registry?.stop();
    if (tokenServer) await close(tokenServer);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
