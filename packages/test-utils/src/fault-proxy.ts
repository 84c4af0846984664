import { randomBytes } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** What a fault does to a matching request. */
export type FaultAction =
  /** Forward the upstream status and headers (its `Content-Length` included), send the first `afterBytes` bytes of the body, then destroy the socket. */
  | { kind: 'cut'; afterBytes: number }
  /** Answer `status` without asking upstream, e.g. 503, or 429 with `headers: { 'retry-after': '1' }`. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /**
   * When upstream answers 2xx, answer `status` (default 307) with a `Location` on the blob host (`localhost:PORT`, a
   * different host string than the proxy's `127.0.0.1:PORT`) carrying a presigned-style `etch-signature` query
   * parameter. The blob host forwards to upstream with the Authorization of the redirected request, so a client
   * must follow it without credentials, as with S3.
   */
  | { kind: 'redirect'; status?: 301 | 302 | 303 | 307 | 308 }
  /** Flip (XOR 0xff) the byte at `offset` (default 0) of a 2xx response body. */
  | { kind: 'corrupt'; offset?: number }
  /** Strip `Range` (and `If-Range`) from a request that has one, so upstream answers 200 with the whole body. */
  | { kind: 'ignoreRange' }
  /**
   * Forward the request with only the first `afterBytes` bytes of its body, then cut both connections: an upload
   * (`PATCH`, `PUT`) broken mid-body, as the registry sees a client that lost its network.
   */
  | { kind: 'cutRequest'; afterBytes: number }
  /**
   * When upstream answers 2xx with a `Location` (an upload session: the `POST`'s 202), move that Location: to the
   * blob host, signed like a storage host's pre-signed URL (the blob host forwards with the credentials of the
   * request that opened the session and points the Locations it answers at itself), or to a relative path.
   */
  | { kind: 'relocate'; to: 'blobHost' | 'relative' };

/** A programmed fault: an action, which requests it matches and how many times it fires. */
export type Fault = FaultAction & {
  /** Tested against the request's path and query, e.g. `/\/blobs\/sha256:/`. */
  path: RegExp;
  /** Only requests with this method (`GET`, `HEAD`, …). Default any. */
  method?: string;
  /** How many matching requests it fires on; `Infinity` for all. Default 1. */
  times?: number;
  /** Which server applies it: the proxy (default) or the blob host that redirects land on. */
  on?: 'proxy' | 'blobHost';
};

/** A request as the proxy or the blob host saw it. */
export interface ProxiedRequest {
  method: string;
  /** Path and query as received (the blob host's without the `etch-signature` parameter). */
  url: string;
  /** The request headers as received, Authorization included. */
  headers: IncomingHttpHeaders;
  /** Whether an `Authorization` header came with it. */
  authorization: boolean;
  /** The status sent back (0 until the response starts). */
  status: number;
  /** The fault that fired on it, if any. */
  fault: FaultAction['kind'] | undefined;
}

/** The upstream a {@link startFaultProxy} forwards to: anything with a `host` such as a {@link RegistryServer}. */
export interface FaultProxyUpstream {
  /** `127.0.0.1:<port>` */
  host: string;
}

/** A running {@link startFaultProxy}. */
export interface FaultProxy {
  /** The proxy: `127.0.0.1:<port>`; point the client here instead of the registry. */
  host: string;
  port: number;
  /** Where redirects go: `localhost:<port>`, a different host string for the same loopback. */
  blobHost: string;
  /** Every request the proxy received, oldest first. */
  requests: ProxiedRequest[];
  /** Every request the blob host received, oldest first. */
  blobRequests: ProxiedRequest[];
  /** Programs a fault; faults are tried in the order added and the first matching one with shots left fires. */
  addFault(fault: Fault): void;
  /** Drops every pending fault. */
  clearFaults(): void;
  /** How many shots the pending faults have left in total (0 when every fault has fired). */
  pendingFaults(): number;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
const SIGNATURE = 'etch-signature';
/** Faults that fire only on a 2xx upstream answer, so a 401 before the token dance does not use them up. */
const ON_SUCCESS = new Set<FaultAction['kind']>(['cut', 'corrupt', 'redirect', 'relocate']);

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers))
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  return out;
}

interface ArmedFault {
  fault: Fault;
  left: number;
}

/** Flips the byte at `offset` of the stream. */
class Corrupt extends Transform {
  private seen = 0;
  constructor(private readonly offset: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const at = this.offset - this.seen;
    this.seen += chunk.length;
    if (at >= 0 && at < chunk.length) {
      const copy = Buffer.from(chunk);
      copy[at] = (copy[at] ?? 0) ^ 0xff;
      callback(null, copy);
      return;
    }
    callback(null, chunk);
  }
}

/**
 * Sends the first `limit` bytes of `body`, waits until they are handed to the kernel, then destroys the socket:
 * the client has the headers (with the full `Content-Length`) and a short body. A body shorter than `limit` is sent whole.
 */
async function cut(body: IncomingMessage, res: ServerResponse, limit: number): Promise<void> {
  res.flushHeaders();
  let sent = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    const room = limit - sent;
    if (chunk.length < room) {
      sent += chunk.length;
      if (!res.write(chunk)) await once(res, 'drain');
      continue;
    }
    if (room > 0) await new Promise<void>((resolve) => res.write(chunk.subarray(0, room), () => resolve()));
    body.destroy();
    res.socket?.destroy();
    return;
  }
  res.end();
}

function listen(server: Server, port: number, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound ? bound.port : 0);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * Starts a loopback HTTP proxy in front of a registry that streams requests and responses through untouched
 * (Range included), records each one, and fires programmed faults: `cut`, `status`, `redirect`, `corrupt`,
 * `ignoreRange`, `cutRequest`, `relocate` (see {@link FaultAction}). Redirects land on a second server, the blob host, which proxies to
 * the same upstream and records what it received, so a test can assert no Authorization arrived there.
 * Both run in the test's own process: call skopeo or curl through them with the async `run`, never `spawnSync`.
 * @example
 * const proxy = await startFaultProxy(registry);
 * proxy.addFault({ path: /\/blobs\//, kind: 'cut', afterBytes: 1000 });
 * proxy.addFault({ path: /\/blobs\//, kind: 'status', status: 429, headers: { 'retry-after': '1' }, times: 2 });
 * // …pull through `proxy.host`…
 * expect(proxy.blobRequests.every((r) => !r.authorization)).toBe(true);
 * await proxy.stop();
 */
export async function startFaultProxy(upstream: FaultProxyUpstream): Promise<FaultProxy> {
  const [upstreamHostname = '127.0.0.1', upstreamPort = '80'] = upstream.host.split(/:(?=\d+$)/);
  let faults: ArmedFault[] = [];
  const requests: ProxiedRequest[] = [];
  const blobRequests: ProxiedRequest[] = [];
  /** signature → the Authorization of the redirected request (or none). */
  const signatures = new Map<string, string | undefined>();
  let blobHost = '';

  const pick = (on: 'proxy' | 'blobHost', req: IncomingMessage, url: string): ArmedFault | undefined =>
    faults.find(
      (armed) =>
        armed.left > 0 &&
        (armed.fault.on ?? 'proxy') === on &&
        (armed.fault.method === undefined || armed.fault.method.toUpperCase() === req.method) &&
        armed.fault.path.test(url) &&
        (armed.fault.kind !== 'ignoreRange' || req.headers.range !== undefined),
    );

  const handle = async (on: 'proxy' | 'blobHost', req: IncomingMessage, res: ServerResponse): Promise<void> => {
    let url = req.url ?? '/';
    let upstreamAuthorization = req.headers.authorization;
    if (on === 'blobHost') {
      const parsed = new URL(url, 'http://blob');
      const signature = parsed.searchParams.get(SIGNATURE);
      parsed.searchParams.delete(SIGNATURE);
      url = `${parsed.pathname}${parsed.search}`;
      const record: ProxiedRequest = {
        method: req.method ?? 'GET',
        url,
        headers: req.headers,
        authorization: req.headers.authorization !== undefined,
        status: 0,
        fault: undefined,
      };
      blobRequests.push(record);
      if (signature === null || !signatures.has(signature)) {
        record.status = 403;
        req.resume();
        res.writeHead(403, { 'content-type': 'text/plain' }).end('missing or unknown etch-signature\n');
        return;
      }
      upstreamAuthorization = signatures.get(signature);
      return forward(on, req, res, url, upstreamAuthorization, record, signature);
    }
    const record: ProxiedRequest = {
      method: req.method ?? 'GET',
      url,
      headers: req.headers,
      authorization: req.headers.authorization !== undefined,
      status: 0,
      fault: undefined,
    };
    requests.push(record);
    return forward(on, req, res, url, upstreamAuthorization, record);
  };

  const forward = async (
    on: 'proxy' | 'blobHost',
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    authorization: string | undefined,
    record: ProxiedRequest,
    signature?: string,
  ): Promise<void> => {
    const armed = pick(on, req, url);
    const fault = armed?.fault;
    if (armed && fault?.kind === 'status') {
      armed.left -= 1;
      record.fault = 'status';
      record.status = fault.status;
      req.resume();
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end(
        req.method === 'HEAD'
          ? undefined
          : (fault.body ??
              JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'fault injected by the test' }] })),
      );
      return;
    }
    const headers = endToEnd(req.headers);
    delete headers.authorization;
    if (authorization !== undefined) headers.authorization = authorization;
    if (armed && fault?.kind === 'ignoreRange') {
      armed.left -= 1;
      record.fault = 'ignoreRange';
      delete headers.range;
      delete headers['if-range'];
    }
    const upstreamReq = httpRequest({
      host: upstreamHostname,
      port: Number(upstreamPort),
      method: req.method,
      path: url,
      headers,
    });
    if (armed && fault?.kind === 'cutRequest') {
      armed.left -= 1;
      record.fault = 'cutRequest';
      upstreamReq.on('error', () => undefined);
      const socket = req.socket;
      const limit = fault.afterBytes;
      await new Promise<void>((resolve) => {
        let sent = 0;
        const onData = (chunk: Buffer) => {
          const part = chunk.subarray(0, limit - sent);
          sent += part.length;
          if (part.length > 0) upstreamReq.write(part);
          if (sent >= limit) {
            req.off('data', onData);
            req.pause();
            resolve();
          }
        };
        req.on('data', onData);
        req.once('end', () => resolve());
      });
      // Give upstream a moment to read what arrived, as a real network delivers it before the reset.
      await new Promise((resolve) => setTimeout(resolve, 100));
      upstreamReq.destroy();
      socket.destroy();
      return;
    }
    const answered = new Promise<IncomingMessage>((resolve, reject) => {
      upstreamReq.once('response', resolve);
      upstreamReq.once('error', reject);
    });
    res.once('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    // The request body streams on its own: upstream may answer (401) before reading all of it.
    pipeline(req, upstreamReq).catch(() => undefined);
    let upstreamRes: IncomingMessage;
    try {
      upstreamRes = await answered;
    } catch (error) {
      record.status = 502;
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`upstream ${upstream.host}: ${String(error)}\n`);
      return;
    }
    const status = upstreamRes.statusCode ?? 502;
    const ok = status >= 200 && status < 300;
    const fires = armed !== undefined && fault !== undefined && ON_SUCCESS.has(fault.kind) && ok && armed.left > 0;
    if (fires) {
      armed.left -= 1;
      record.fault = fault.kind;
    }
    if (fires && fault.kind === 'redirect') {
      upstreamRes.destroy();
      const signature = randomBytes(12).toString('hex');
      signatures.set(signature, authorization);
      const target = new URL(url, `http://${blobHost}`);
      target.searchParams.set(SIGNATURE, signature);
      record.status = fault.status ?? 307;
      res.writeHead(record.status, { location: target.href, 'content-length': '0' }).end();
      return;
    }
    const answer = endToEnd(upstreamRes.headers);
    const location = upstreamRes.headers.location;
    // A storage host names itself in the Locations it answers, keeping the signature it was reached with.
    if (signature !== undefined && location !== undefined) answer.location = signed(location, signature);
    if (fires && fault.kind === 'relocate' && location !== undefined) {
      const path = new URL(location, `http://${upstream.host}`);
      if (fault.to === 'relative') answer.location = `${path.pathname}${path.search}`;
      else {
        const fresh = randomBytes(12).toString('hex');
        signatures.set(fresh, authorization);
        answer.location = signed(location, fresh);
      }
    }
    record.status = status;
    res.writeHead(status, answer);
    try {
      if (fires && fault.kind === 'cut') await cut(upstreamRes, res, fault.afterBytes);
      else if (fires && fault.kind === 'corrupt') await pipeline(upstreamRes, new Corrupt(fault.offset ?? 0), res);
      else await pipeline(upstreamRes, res);
    } catch {
      upstreamRes.destroy();
      res.destroy();
    }
  };

  /** `location`'s path and query on the blob host, with `signature`. */
  const signed = (location: string, signature: string): string => {
    const source = new URL(location, `http://${upstream.host}`);
    const target = new URL(`${source.pathname}${source.search}`, `http://${blobHost}`);
    target.searchParams.set(SIGNATURE, signature);
    return target.href;
  };

  const serve = (on: 'proxy' | 'blobHost') =>
    createServer((req, res) => {
      handle(on, req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(error));
      });
    });
  const proxy = serve('proxy');
  const blob4 = serve('blobHost');
  const blob6 = serve('blobHost');
  const port = await listen(proxy, 0, '127.0.0.1');
  const blobPort = await listen(blob4, 0, '127.0.0.1');
  // `localhost` may resolve to ::1 first; answer there too when this machine has IPv6 loopback.
  await listen(blob6, blobPort, '::1').catch(() => undefined);
  blobHost = `localhost:${blobPort}`;

  return {
    host: `127.0.0.1:${port}`,
    port,
    blobHost,
    requests,
    blobRequests,
    addFault(fault) {
      faults.push({ fault, left: fault.times ?? 1 });
    },
    clearFaults() {
      faults = [];
    },
    pendingFaults: () => faults.reduce((sum, armed) => sum + armed.left, 0),
    async stop() {
      await Promise.all([close(proxy), close(blob4), close(blob6)]);
    },
  };
}
