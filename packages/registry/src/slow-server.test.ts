// Servers that answer, then send their body a byte at a time (or not at all): every body read has a minimum
// rate, so a download, a manifest and a token answer end in bounded time with a typed error (issue 19, "no
// overall deadline against a 1 byte/s server").
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { RegistryAuth } from './auth.js';
import { staticCredentials } from './credentials.js';
import { HttpClient, readBody } from './http.js';
import { readLimited } from './registry-errors.js';
import { resumableGet } from './resumable-get.js';

const RATE = { bytes: 1024, windowMs: 400 };
let servers: Server[] = [];
let clients: HttpClient[] = [];

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function client(): HttpClient {
  const http = new HttpClient({ minRate: RATE, retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 } });
  clients.push(http);
  return http;
}

/** Sends `length` as Content-Length, then one byte every 20 ms until the client goes away. */
function trickle(length: number) {
  return (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': String(length), 'content-type': 'application/json' });
    const timer = setInterval(() => res.write('x'), 20);
    res.on('close', () => clearInterval(timer));
  };
}

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const server of servers) server.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  servers = [];
  clients = [];
});

describe('a minimum rate on every response body', () => {
  it('gives up on a download a byte at a time after a few resumes, with ETCH_NETWORK', async () => {
    let connections = 0;
    const url = await serve((req, res) => {
      connections += 1;
      trickle(1024 * 1024)(req, res);
    });
    const http = client();
    const started = Date.now();
    const error = await (async () => {
      for await (const chunk of resumableGet(http, {
        what: 'Downloading the base image',
        length: 1024 * 1024,
        open: (offset) => http.send({ url: new URL(`${url}/disk.img`), headers: { range: `bytes=${offset}-` } }),
        accept: () => 0,
        beyondLength: 'stop',
      }))
        void chunk;
    })().catch((e: unknown) => e);
    const ms = Date.now() - started;
    expect(isEtchError(error, 'ETCH_NETWORK'), String(error)).toBe(true);
    expect(String(error), 'says it stalled and what').toMatch(/Downloading the base image stalled/);
    expect(connections, 'connections tried (one per resume)').toBe(3);
    expect(ms, 'milliseconds before giving up (3 windows of 400 ms and back-off)').toBeLessThan(5000);
  });

  it('refuses a manifest sent a byte at a time', async () => {
    const url = await serve(trickle(4096));
    const http = client();
    const response = await http.send({ url: new URL(`${url}/v2/x/manifests/1`) });
    const error = await readLimited(response, 4 * 1024 * 1024, 'The manifest of x:1').catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_NETWORK'), String(error)).toBe(true);
    expect(String(error)).toMatch(/The manifest of x:1 stalled/);
  });

  it('refuses a token answer sent a byte at a time, and a token of 100,000 characters', async () => {
    let token = '';
    const url = await serve((req, res) => {
      if (req.url?.startsWith('/v2/')) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="s"` });
        res.end();
        return;
      }
      if (token === '') return void trickle(4096)(req, res);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
    });
    const host = new URL(url).host;
    for (const [label, value, pattern] of [
      ['a byte at a time', '', /stalled/],
      ['a huge token', 't'.repeat(100_000), /token of 100000 characters/],
    ] as const) {
      token = value;
      const http = client();
      const auth = new RegistryAuth(host, http, staticCredentials({}));
      auth.learnFromPing(await http.send({ url: new URL(`${url}/v2/`) }));
      const error = await auth.authorization(['repository:x:pull']).catch((e: unknown) => e);
      expect(isEtchError(error), `${label}: ${String(error)}`).toBe(true);
      expect(String(error), label).toMatch(pattern);
    }
  });

  it('does not count the time the reader holds the body back', async () => {
    const body = Buffer.alloc(256 * 1024, 0x61);
    const url = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    });
    const http = client();
    const response = await http.send({ url: new URL(`${url}/blob`) });
    let bytes = 0;
    for await (const chunk of readBody(response, 'the blob')) {
      // A reader busy elsewhere (a slow disk) for longer than the rate's window, once.
      if (bytes === 0) await delay(RATE.windowMs * 2);
      bytes += chunk.length;
    }
    expect(bytes, 'bytes read in all').toBe(body.length);
  });
});
