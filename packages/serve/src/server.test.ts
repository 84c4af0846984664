/** `etch serve` against real registries on loopback: bytes, shared downloads, refusals, limits, hostile clients. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, open, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  freePort,
  makeBalenaLikeImage,
  pushRegistryFixture,
  run,
  startFaultProxy,
  startRegistryServer,
  type FaultProxy,
  type PushedImage,
  type RegistryServer,
} from '@etch/test-utils/system';
import { EPOCH, digestOf, metric, post, postRaw, serve, until } from './serve.test.helper.js';
import type { EtchServer } from './server.js';

const bin = fileURLToPath(new URL('../../dotetch/bin/etch.js', import.meta.url));
const TOKEN = 'serve-test-token-7f3a';

let dir: TempDir;
let registry: RegistryServer;
let app: PushedImage;
let ref: string;
/** What `etch create` writes for {@link request}. */
let expected: { sha256: string; bytes: number };
const servers: EtchServer[] = [];

const request = () => ({ base: 'file:base.img', images: [ref], platform: 'linux/amd64' });

/** A server on this suite's base directory and registry, closed after the suite. */
async function server(options: Partial<Parameters<typeof serve>[0]> = {}): Promise<EtchServer> {
  const started = await serve({
    cacheDir: dir.join(`cache-${servers.length}`),
    baseDir: dir.join('os'),
    tokens: [TOKEN],
    allowHosts: [registry.host],
    ...options,
  });
  servers.push(started);
  return started;
}

/** Registry log lines of blob GETs answered 200, by digest. */
async function blobGets(log: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const match of log.matchAll(/"GET \/v2\/[^ ]+\/blobs\/(sha256:[0-9a-f]{64}) HTTP\/1\.1" 20[06]/g))
    counts.set(match[1] as string, (counts.get(match[1] as string) ?? 0) + 1);
  return counts;
}

/** The whole body of a raw response: its status, sha256 and length. */
async function bodyOf(response: IncomingMessage): Promise<{ status: number; sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { status: response.statusCode ?? 0, sha256: hash.digest('hex'), bytes };
}

/** Files left in the server's shared stage directory (`<cacheDir>/oci/stage-<host>-<pid>-shared`). */
async function sharedFiles(started: EtchServer): Promise<string[]> {
  const cacheDir = dir.join(`cache-${servers.indexOf(started)}`, 'oci');
  const shared = (await readdir(cacheDir)).filter((name) => name.startsWith('stage-') && name.endsWith('-shared'));
  const files = await Promise.all(shared.map(async (name) => readdir(join(cacheDir, name))));
  return files.flat();
}

beforeAll(async () => {
  dir = await createTempDir('etch-serve-');
  await mkdir(dir.join('os'));
  await makeBalenaLikeImage(dir.join('os', 'base.img'), { dataMiB: 8 });
  const fixtures = await buildRegistryFixtures(dir.join('fixtures'));
  registry = await startRegistryServer();
  app = await pushRegistryFixture(fixtures.layout, fixtures.images.layers3.tag, `${registry.host}/etch/app:1`);
  ref = `${registry.host}/etch/app:1`;
  await run(
    'node',
    [
      bin,
      'create',
      '--base',
      dir.join('os', 'base.img'),
      '--image',
      ref,
      '--platform',
      'linux/amd64',
      '-o',
      'cli.etch',
      '-q',
    ],
    { env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH, XDG_CACHE_HOME: dir.join('cli-cache') }, cwd: dir.path },
  );
  const bytes = await readFile(dir.join('cli.etch'));
  expected = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}, 180_000);

afterAll(async () => {
  for (const started of servers) await started.close(0);
  await registry?.stop();
  await dir?.remove();
});

describe('POST /v1/etch', () => {
  it('streams exactly the bytes etch create writes for the same choices', async () => {
    const started = await server();
    const response = await post(started, request(), TOKEN);
    expect(response.status, await (response.status === 200 ? '' : response.text())).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/x-tar');
    expect(response.headers.get('content-disposition')).toBe('attachment; filename="base.etch"');
    expect(await digestOf(response), 'the served .etch against etch create -o').toEqual(expected);
  });

  it('streams the bytes etch create writes for a target state, pinned, with the supervisor', async () => {
    const image = `${registry.host}/etch/app@${app.digest}`;
    const state = {
      name: 'greenhouse',
      config: {},
      apps: {
        aaaabbbbccccddddeeeeffff00001111: {
          id: 1001,
          name: 'greenhouse',
          is_host: false,
          class: 'fleet',
          releases: {
            c0ffee00c0ffee00c0ffee00c0ffee00: {
              id: 2002,
              services: {
                main: { id: 31, image_id: 41, image, environment: {}, labels: {}, composition: {} },
              },
              volumes: {},
              networks: {},
            },
          },
        },
      },
    };
    await writeFile(dir.join('state.json'), JSON.stringify(state));
    await run(
      'node',
      [
        bin,
        'create',
        '--base',
        dir.join('os', 'base.img'),
        '--target-state',
        'state.json',
        '--supervisor-version',
        'v14.11.2',
        '--pin-device',
        '--supervisor',
        ref,
        '--platform',
        'linux/amd64',
        '-o',
        'state.etch',
        '-q',
      ],
      { env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH, XDG_CACHE_HOME: dir.join('cli-cache') }, cwd: dir.path },
    );
    const bytes = await readFile(dir.join('state.etch'));
    const started = await server();
    const response = await post(
      started,
      {
        base: 'file:base.img',
        targetState: state,
        supervisorVersion: 'v14.11.2',
        pinDevice: true,
        supervisor: ref,
        platform: 'linux/amd64',
      },
      TOKEN,
    );
    expect(response.status).toBe(200);
    expect(await digestOf(response), 'the served .etch against etch create --target-state').toEqual({
      sha256: createHash('sha256').update(bytes).digest('hex'),
      bytes: bytes.length,
    });
  });

  it('serves 50 concurrent requests for one release with one registry download per blob', async () => {
    const started = await server({ maxConcurrent: 8, maxQueue: 64 });
    const before = await blobGets(await registry.log());
    const results = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const response = await post(started, request(), TOKEN);
        return { status: response.status, ...(await digestOf(response)) };
      }),
    );
    const wrong = results.filter((r) => r.status !== 200 || r.sha256 !== expected.sha256);
    expect(wrong, 'responses that were not the etch create bytes').toEqual([]);
    const after = await blobGets(await registry.log());
    const blobs = [app.config?.digest, ...(app.layers ?? []).map((l) => l.digest)].filter(
      (d): d is string => d !== undefined,
    );
    const fetched = Object.fromEntries(blobs.map((d) => [d, (after.get(d) ?? 0) - (before.get(d) ?? 0)]));
    expect(fetched, 'registry GETs per blob during the 50 requests').toEqual(
      Object.fromEntries(blobs.map((d) => [d, 1])),
    );
    expect(await metric(started, 'etch_blob_cache_hits_total'), 'cache hits').toBeGreaterThan(0);
    // The server counts a request once its response has ended, which the client may see first.
    await until(
      '50 complete requests in the metrics',
      async () => (await metric(started, 'etch_requests_total', { outcome: 'complete' })) === 50,
    );
  });

  it('converts each layer once for concurrent requests, shares it, and removes it when the last is done', async () => {
    const started = await server({ maxConcurrent: 8, maxQueue: 8 });
    const layers = new Set((app.layers ?? []).map((l) => l.digest)).size;
    expect(layers).toBeGreaterThan(1);
    // Paused clients hold their builds inside the base image, so every request needs the layers at once.
    const responses = await Promise.all(Array.from({ length: 6 }, async () => postRaw(started, request(), TOKEN)));
    for (const response of responses) response.pause();
    await until('every layer converted', async () => (await metric(started, 'etch_layer_conversions_total')) >= layers);
    const bodies = await Promise.all(responses.map(async (response) => bodyOf(response)));
    expect(bodies.filter((b) => b.status !== 200 || b.sha256 !== expected.sha256)).toEqual([]);
    expect(await metric(started, 'etch_layer_conversions_total'), 'conversions for 6 requests').toBe(layers);
    await until('the shared stage to be empty', async () => (await sharedFiles(started)).length === 0);
  });

  it('keeps converting for the others when the first requester of a layer disconnects', async () => {
    const started = await server({ maxConcurrent: 8, maxQueue: 8 });
    const first = await postRaw(started, request(), TOKEN);
    first.pause();
    await until('the first conversion', async () => (await metric(started, 'etch_layer_conversions_total')) >= 1);
    const others = await Promise.all(Array.from({ length: 3 }, async () => postRaw(started, request(), TOKEN)));
    for (const response of others) response.pause();
    first.destroy();
    await until(
      'the first request to stop',
      async () => (await metric(started, 'etch_requests_total', { outcome: 'disconnected' })) === 1,
    );
    const bodies = await Promise.all(others.map(async (response) => bodyOf(response)));
    expect(bodies.filter((b) => b.status !== 200 || b.sha256 !== expected.sha256)).toEqual([]);
    await until('the shared stage to be empty', async () => (await sharedFiles(started)).length === 0);
  });

  it('logs a damaged cached conversion as a warning naming it, and serves the same bytes', async () => {
    const lines: string[] = [];
    const started = await server({ log: { level: 'warn', stream: { write: (line) => void lines.push(line) } } });
    const cold = await post(started, request(), TOKEN);
    expect(await digestOf(cold), 'the first .etch against etch create -o').toEqual(expected);
    const converted = dir.join(`cache-${servers.indexOf(started)}`, 'oci', 'converted');
    const [data] = (await readdir(converted)).filter((name) => name.endsWith('.tar'));
    const damaged = join(converted, data as string);
    const handle = await open(damaged, 'r+');
    try {
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, 1000);
      await handle.write(Buffer.from([(byte[0] as number) ^ 0xff]), 0, 1, 1000);
    } finally {
      await handle.close();
    }
    const warm = await post(started, request(), TOKEN);
    expect(await digestOf(warm), 'the .etch built past the damage against etch create -o').toEqual(expected);
    const warnings = lines
      .map((line) => JSON.parse(line) as { level: number; msg: string; code?: string })
      .filter((entry) => entry.level === 40);
    expect(
      warnings.map((w) => w.code),
      'codes of the warnings logged',
    ).toEqual(['ETCH_DIGEST_MISMATCH']);
    expect(warnings[0]?.msg).toContain(damaged);
  });

  it('downloads a URL base image once for concurrent requests, and serves the bytes etch create writes', async () => {
    const image = await readFile(dir.join('os', 'base.img'));
    let served = 0;
    const origin = createServer((req, res) => {
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      const start = range ? Number(range[1]) : 0;
      const end = range && range[2] ? Number(range[2]) : image.length - 1;
      res.writeHead(range ? 206 : 200, {
        'content-length': end - start + 1,
        'accept-ranges': 'bytes',
        etag: '"base-v1"',
        ...(range ? { 'content-range': `bytes ${start}-${end}/${image.length}` } : {}),
      });
      if (req.method === 'HEAD') return res.end();
      served += end - start + 1;
      res.end(image.subarray(start, end + 1));
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(origin.address() as { port: number }).port}`;
    try {
      const started = await server({ allowHosts: [host] });
      const reference = dir.join('url.etch');
      await run('node', [bin, 'create', '--base', `http://${host}/base.img`, '--no-cache', '-o', reference, '-q'], {
        env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH },
      });
      const bytes = await readFile(reference);
      const want = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
      served = 0;
      const results = await Promise.all(
        Array.from({ length: 5 }, async () =>
          digestOf(await post(started, { base: `http://${host}/base.img` }, TOKEN)),
        ),
      );
      expect(results, 'the five responses against etch create --base URL').toEqual(Array(5).fill(want));
      expect(served, 'bytes the origin served for five concurrent requests').toBeLessThan(2 * image.length);
    } finally {
      await new Promise((resolve) => origin.close(resolve));
    }
  });

  it('answers what is wrong with a request with a 4xx naming the field, before any work', async () => {
    const started = await server();
    await symlink('/etc/hostname', dir.join('os', 'escape.img')).catch(() => undefined);
    const cases: [string, unknown, string | undefined, number, string, string?][] = [
      ['no token', request(), undefined, 401, 'ETCH_AUTH_FAILED'],
      ['a wrong token', request(), 'nope', 401, 'ETCH_AUTH_FAILED'],
      ['bad JSON', '{"base": ', TOKEN, 400, 'ETCH_USAGE'],
      ['an unknown field', { ...request(), colour: 'red' }, TOKEN, 400, 'ETCH_USAGE', 'colour'],
      [
        'an unknown inject field',
        { base: 'file:base.img', inject: [{ partition: 1, path: 'a', content: '', x: 1 }] },
        TOKEN,
        400,
        'ETCH_USAGE',
        'inject/0/x',
      ],
      ['a malformed platform', { ...request(), platform: 'arm64' }, TOKEN, 400, 'ETCH_USAGE', 'platform'],
      ['a base name with ../', { base: 'file:../os/base.img' }, TOKEN, 400, 'ETCH_UNSAFE_PATH', 'base'],
      ['a base link out of the directory', { base: 'file:escape.img' }, TOKEN, 400, 'ETCH_UNSAFE_PATH', 'base'],
      ['a missing base', { base: 'file:absent.img' }, TOKEN, 404, 'ETCH_NOT_FOUND', 'base'],
      [
        'a URL outside the allow-list',
        { base: 'http://169.254.169.254/latest/meta-data' },
        TOKEN,
        403,
        'ETCH_DENIED',
        'base',
      ],
      [
        'a registry outside the allow-list',
        { ...request(), images: ['10.1.2.3:5000/x:1'] },
        TOKEN,
        403,
        'ETCH_DENIED',
        'images/0',
      ],
      [
        'a partition the base image lacks',
        { base: 'file:base.img', inject: [{ partition: 9, path: 'a', content: '' }] },
        TOKEN,
        400,
        'ETCH_USAGE',
        'inject/0/partition',
      ],
      ['an oci: path', { ...request(), images: ['oci:/etc'] }, TOKEN, 400, 'ETCH_USAGE', 'images/0'],
      ['preloading without a platform', { base: 'file:base.img', images: [ref] }, TOKEN, 400, 'ETCH_USAGE', 'platform'],
    ];
    for (const [what, body, token, status, code, field] of cases) {
      const response = await post(started, body, token);
      const text = await response.text();
      expect(response.status, `${what}: ${text}`).toBe(status);
      const { error } = JSON.parse(text) as { error: { code: string; field?: string } };
      expect(error.code, what).toBe(code);
      if (field !== undefined) expect(error.field, what).toBe(field);
      expect(text, `${what}: the token echoed`).not.toContain(TOKEN);
      if (status === 401) expect(response.headers.get('www-authenticate'), what).toMatch(/^Bearer/);
    }
  });

  it('refuses a body over the limit with 413', async () => {
    const started = await server({ bodyLimit: 256 });
    const response = await post(started, { base: 'file:base.img', images: ['x'.repeat(300)] }, TOKEN);
    expect(response.status, await response.text()).toBe(413);
  });

  it('gives an error status before any byte when the registry is down', async () => {
    const down = `127.0.0.1:${await freePort()}`;
    const started = await server({ allowHosts: [down] });
    const response = await post(started, { ...request(), images: [`${down}/etch/app:1`] }, TOKEN);
    const text = await response.text();
    expect(response.status, text).toBe(502);
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'ETCH_NETWORK' } });
  });

  it('cuts the stream, so it cannot pass for complete, when the registry fails after the first byte', async () => {
    let proxy: FaultProxy | undefined;
    try {
      proxy = await startFaultProxy(registry);
      // Manifests and the config resolve; the layers, fetched while the base image streams, never come.
      const layers = (app.layers ?? []).map((l) => l.digest.slice(7)).join('|');
      proxy.addFault({
        kind: 'status',
        status: 500,
        method: 'GET',
        path: new RegExp(`/blobs/sha256:(${layers})`),
        times: Infinity,
      });
      const started = await server({ allowHosts: [proxy.host] });
      const response = await post(started, { ...request(), images: [`${proxy.host}/etch/app:1`] }, TOKEN);
      expect(response.status, 'the status, sent once the images resolved').toBe(200);
      await expect(digestOf(response), 'a body cut by a failed layer must not end cleanly').rejects.toThrow();
      await until(
        'the cut to be counted',
        async () => (await metric(started, 'etch_requests_total', { outcome: 'truncated' })) === 1,
      );
    } finally {
      await proxy?.stop();
    }
  });

  it('never connects to a listed name that resolves to loopback', async () => {
    const name = `localhost:${registry.port}`;
    const started = await server({ allowHosts: [name] });
    const before = (await registry.log()).length;
    const response = await post(started, { ...request(), images: [`${name}/etch/app:1`] }, TOKEN);
    const text = await response.text();
    expect(response.status, text).toBe(403);
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'ETCH_DENIED' } });
    expect((await registry.log()).slice(before), 'requests the registry saw').not.toMatch(/GET \/v2\//);
  });

  it('refuses to follow a redirect off the allow-list', async () => {
    let proxy: FaultProxy | undefined;
    try {
      proxy = await startFaultProxy(registry);
      proxy.addFault({ kind: 'redirect', path: /\/blobs\/sha256:/, times: Infinity });
      const started = await server({ allowHosts: [proxy.host] });
      const response = await post(started, { ...request(), images: [`${proxy.host}/etch/app:1`] }, TOKEN);
      // Resolution reads the config blob, which is redirected too: the refusal comes before any byte.
      const text = await response.text();
      expect(response.status, text).toBe(403);
      expect(JSON.parse(text)).toMatchObject({ error: { code: 'ETCH_DENIED' } });
      expect(proxy.blobRequests, 'requests that reached the redirect target').toEqual([]);
    } finally {
      await proxy?.stop();
    }
  });
});

describe('hostile and slow clients', () => {
  it('drops a client that stops reading, and frees its slot', async () => {
    const started = await server({ stallTimeoutMs: 800, maxConcurrent: 1 });
    const response = await postRaw(started, request(), TOKEN);
    expect(response.statusCode).toBe(200);
    response.pause();
    await until(
      'the stalled client to be dropped',
      async () => (await metric(started, 'etch_requests_total', { outcome: 'stalled' })) === 1,
    );
    response.destroy();
    // The slot is free again: a normal request goes through.
    const next = await post(started, request(), TOKEN);
    expect(await digestOf(next)).toEqual(expected);
  });

  it('stops the build of a client that disconnects within a second', async () => {
    const started = await server();
    const response = await postRaw(started, request(), TOKEN);
    await new Promise((resolve) => response.once('data', resolve));
    response.destroy();
    const took = await until(
      'the build to stop',
      async () =>
        (await metric(started, 'etch_requests_total', { outcome: 'disconnected' })) === 1 &&
        (await metric(started, 'etch_active_streams')) === 0,
    );
    expect(took, 'ms from disconnect to the build stopping').toBeLessThan(1000);
  });

  it('cuts a stream at the request deadline', async () => {
    const started = await server({ deadlineMs: 1500, stallTimeoutMs: 60_000 });
    const response = await postRaw(started, request(), TOKEN);
    response.pause();
    await until(
      'the deadline',
      async () => (await metric(started, 'etch_requests_total', { outcome: 'deadline' })) === 1,
    );
    response.resume();
    await expect(
      new Promise((resolve, reject) =>
        response
          .on('end', resolve)
          .on('error', reject)
          .on('aborted', () => reject(new Error('aborted'))),
      ),
      'a stream cut at the deadline must not end cleanly',
    ).rejects.toThrow();
  });

  it('answers 504 when the deadline passes before the first byte', async () => {
    // A registry that accepts requests and never answers: planning is still resolving the image at the deadline.
    const hung = new Set<ServerResponse>();
    const silent = createServer((_req, res) => hung.add(res));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const host = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const started = await server({ allowHosts: [host], deadlineMs: 1000 });
      const response = await post(started, { ...request(), images: [`${host}/etch/app:1`] }, TOKEN);
      const text = await response.text();
      expect(response.status, text).toBe(504);
      expect(JSON.parse(text)).toMatchObject({ error: { code: 'ETCH_ABORTED' } });
      expect(hung.size, 'requests the silent registry received').toBeGreaterThan(0);
      expect(await metric(started, 'etch_requests_total', { outcome: 'deadline' })).toBe(1);
    } finally {
      silent.closeAllConnections();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('answers 503 with Retry-After when every slot and the queue are busy', async () => {
    const started = await server({ maxConcurrent: 1, maxQueue: 0, retryAfterSeconds: 7 });
    const first = await postRaw(started, request(), TOKEN);
    first.pause();
    const second = await post(started, request(), TOKEN);
    expect(second.status, await second.text()).toBe(503);
    expect(second.headers.get('retry-after')).toBe('7');
    first.destroy();
  });
});

describe('scaling out behind a pull-through mirror', () => {
  it('two instances behind a docker-registry mirror: upstream blobs are fetched only to fill the mirror', async () => {
    const upstream = await startRegistryServer();
    let mirror: RegistryServer | undefined;
    try {
      const fixtures = await buildRegistryFixtures(dir.join('fixtures-mirror'));
      const pushed = await pushRegistryFixture(
        fixtures.layout,
        fixtures.images.layers3.tag,
        `${upstream.host}/etch/app:2`,
      );
      mirror = await startRegistryServer(`proxy:\n  remoteurl: http://${upstream.host}\n`);
      const mirrors = { [upstream.host]: `http://${mirror.host}` };
      const a = await server({ allowHosts: [], mirrors });
      const b = await server({ allowHosts: [], mirrors });
      const body = { ...request(), images: [`${upstream.host}/etch/app:2`] };
      const fetchFrom = async (instance: EtchServer) => {
        const response = await post(instance, body, TOKEN);
        return { status: response.status, ...(await digestOf(response)) };
      };
      const layers = (pushed.layers ?? []).map((l) => l.digest);
      const upstreamGets = async () => {
        const gets = await blobGets(await upstream.log());
        return Object.fromEntries(layers.map((d) => [d, gets.get(d) ?? 0]));
      };
      // The first request fills the mirror. (docker-registry streams a blob straight from upstream to requests
      // that arrive while it is still fetching it, and Debian's 2.8 reads a missed blob from upstream twice,
      // once for the client and once for its store: what the fleet must not do is multiply that.)
      const results = [await fetchFrom(a)];
      const filled = await upstreamGets();
      expect(
        Object.values(filled).every((n) => n >= 1 && n <= 2),
        `upstream GETs to fill the mirror: ${JSON.stringify(filled)}`,
      ).toBe(true);
      results.push(await fetchFrom(b), ...(await Promise.all([a, b, a, b].map(fetchFrom))));
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
      expect(new Set(results.map((r) => r.sha256)).size, 'different bytes from the two instances').toBe(1);
      expect(await upstreamGets(), 'upstream blob GETs after five more requests on two instances').toEqual(filled);
    } finally {
      await mirror?.stop();
      await upstream.stop();
    }
  });
});

describe('etch serve (the CLI)', () => {
  it('on SIGTERM refuses new requests, lets a stream in flight finish, and exits 0', async () => {
    const port = await freePort();
    const cache = dir.join('sigterm-cache');
    await writeFile(dir.join('tokens'), `# tokens\n${TOKEN}\n`);
    const child = spawn(
      'node',
      [
        bin,
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--token-file',
        'tokens',
        '--base-dir',
        'os',
        '--cache-dir',
        cache,
        '--allow-host',
        registry.host,
        '--shutdown-grace',
        '60',
      ],
      { cwd: dir.path, env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      await until('etch serve to listen', () => stderr.includes('listening on'), 20_000);
      const url = `http://127.0.0.1:${port}`;
      const fake = { url } as EtchServer;
      const response = await postRaw(fake, request(), TOKEN);
      expect(response.statusCode).toBe(200);
      response.pause();
      child.kill('SIGTERM');
      await until('the shutdown to start', () => stderr.includes('shutting down'));
      const refused = await fetch(`${url}/readyz`).then(
        (r) => r.status,
        () => 'refused',
      );
      expect(refused === 503 || refused === 'refused', `a new request during shutdown got ${refused}`).toBe(true);
      const hash = createHash('sha256');
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      response.resume();
      await new Promise((resolve, reject) => response.on('end', resolve).on('error', reject));
      expect({ sha256: hash.digest('hex'), bytes }, 'the stream in flight during SIGTERM').toEqual(expected);
      expect(await exited, stderr).toBe(0);
      expect(stdout, 'the JSON log').toMatch(/"reqId":"[0-9a-f-]{36}"/);
      expect(stdout, 'the token in the log').not.toContain(TOKEN);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    }
  });
});
