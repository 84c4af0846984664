// Shared by the serve tests (not shipped: `*.test.*` is left out of the package).
import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { startEtchServer, type EtchServer, type ServeOptions } from './server.js';

export const EPOCH = '1700000000';

/** A server with no log output unless asked, loopback, epoch fixed. */
export function serve(options: ServeOptions): Promise<EtchServer> {
  return startEtchServer({ log: false, sourceDateEpoch: EPOCH, ...options });
}

/** `POST /v1/etch` with `fetch`. */
export function post(server: EtchServer, body: unknown, token?: string): Promise<Response> {
  return fetch(`${server.url}/v1/etch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Reads a response body whole: its sha256 and length. */
export async function digestOf(response: Response): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** `POST /v1/etch` with node:http, for tests that pause or drop the connection: resolves once headers arrive. */
export function postRaw(server: EtchServer, body: unknown, token?: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${server.url}/v1/etch`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      },
      resolve,
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** The value of one sample of the server's metrics (`etch_requests_total{outcome="stalled"}`), 0 when absent. */
export async function metric(server: EtchServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const json = await server.metrics.registry.getMetricsAsJSON();
  const found = json.find((m) => m.name === name);
  const value = (found?.values as { value: number; labels: Record<string, string | number> }[] | undefined)?.find((v) =>
    Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return value?.value ?? 0;
}

/** Polls `check` until it returns true (no fixed sleeps), failing with `what` after `timeoutMs`. */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
