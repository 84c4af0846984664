/**
 * The client against Debian's docker-registry (distribution) three ways — open, htpasswd, token auth whose
 * JWTs the registry validates — with fixtures built by umoci and pushed by skopeo, and faults injected by a
 * loopback proxy in front of the open registry.
 */
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError, type EtchError } from '@etch/format';
import { extractTar } from '@etch/tar';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  pushRegistryFixture,
  run,
  startBasicAuthRegistry,
  startFaultProxy,
  startRegistryServer,
  startTokenAuthRegistry,
  type BasicAuthRegistry,
  type FaultProxy,
  type PushedImage,
  type RegistryFixtures,
  type RegistryServer,
  type TokenAuthRegistry,
} from '@etch/test-utils/system';
import { decompressLayer } from './decompress.js';
import { RegistryAuth, pullScope } from './auth.js';
import { staticCredentials } from './credentials.js';
import { HttpClient } from './http.js';
import { RegistryClient } from './registry-client.js';
import type { ResolvedImage } from './resolve.js';

let work: TempDir;
let fixtures: RegistryFixtures;
let open: RegistryServer;
let basic: BasicAuthRegistry;
let token: TokenAuthRegistry;
let proxy: FaultProxy;
const pushed: Record<string, PushedImage> = {};
const PASSWORD = 'pa55-w0rd:with-colon';

/** A client that never reads the machine's docker config and retries fast. */
function client(options: ConstructorParameters<typeof RegistryClient>[0] = {}): RegistryClient {
  return new RegistryClient({
    dockerConfig: false,
    retry: { attempts: 4, baseDelayMs: 50, maxDelayMs: 2_000 },
    ...options,
  });
}

async function failure(promise: Promise<unknown>): Promise<EtchError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isEtchError(error)) throw new Error(`expected an EtchError, got ${String(error)}`);
  return error;
}

/** Names and contents of the files in a layer blob, decompressed by magic. */
async function layerFiles(
  c: RegistryClient,
  ref: string,
  image: ResolvedImage,
  index: number,
): Promise<{ compression: string; files: Record<string, string> }> {
  const layer = image.layers[index];
  if (!layer) throw new Error('no such layer');
  const { compression, stream } = await decompressLayer(c.openBlob(ref, layer));
  const files: Record<string, string> = {};
  for await (const { header, body } of extractTar(stream)) {
    if (header.type === 'file') {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      const data = Buffer.concat(chunks);
      files[header.name.replace(/^\.\//, '')] = data.length > 64 ? `${data.length} bytes` : data.toString('utf8');
    }
  }
  return { compression, files };
}

beforeAll(async () => {
  work = await createTempDir('etch-registry-test-');
  fixtures = await buildRegistryFixtures(work.join('fixtures'));
  [open, basic, token] = await Promise.all([
    startRegistryServer(),
    startBasicAuthRegistry({ users: { alice: PASSWORD } }),
    startTokenAuthRegistry({ users: { bob: PASSWORD } }),
  ]);
  const push = async (
    key: string,
    tag: string,
    dest: string,
    options: Parameters<typeof pushRegistryFixture>[3] = {},
  ) => {
    pushed[key] = await pushRegistryFixture(fixtures.layout, tag, dest, options);
  };
  await push('oci', fixtures.images.layers3.tag, `${open.host}/etch/layers3:oci`);
  await push('v2s2', fixtures.images.layers3.tag, `${open.host}/etch/layers3:v2s2`, { format: 'v2s2' });
  await push('zstd', fixtures.images.layers3.tag, `${open.host}/etch/zstd:1`, { compression: 'zstd' });
  await push('uncompressed', fixtures.images.uncompressed.tag, `${open.host}/etch/uncompressed:1`);
  await push('multi', fixtures.images.platforms.tag, `${open.host}/etch/multi:oci`);
  await push('list', fixtures.images.platformsPlain.tag, `${open.host}/etch/multi:list`, { format: 'v2s2' });
  await push('basic', fixtures.images.layers3.tag, `${basic.host}/etch/private:1`, { creds: basic.creds });
  await push('token', fixtures.images.layers3.tag, `${token.host}/etch/private:1`, { creds: `bob:${PASSWORD}` });
  proxy = await startFaultProxy(open);
}, 300_000);

afterAll(async () => {
  await Promise.all([proxy?.stop(), open?.stop(), basic?.stop(), token?.stop()]);
  await work?.remove();
});

describe('resolving images in an open registry', () => {
  it('resolves an OCI image: digests as the registry serves them, every blob verified, layers readable', async () => {
    const c = client();
    const ref = `${open.host}/etch/layers3:oci`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    const p = pushed['oci'] as PushedImage;
    expect(image.digest).toBe(p.digest);
    expect(image.indexDigest).toBeUndefined();
    expect(image.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(image.config.digest).toBe(p.config?.digest);
    expect(image.layers.map((l) => l.digest)).toEqual(p.layers?.map((l) => l.digest));
    expect(image.manifestBytes.equals(p.raw)).toBe(true);
    const first = await layerFiles(c, ref, image, 0);
    expect(first.compression).toBe('gzip');
    expect(Object.keys(first.files)).toContain('layer-1.txt');
    expect(Object.values((await layerFiles(c, ref, image, 2)).files)).toContain('524288 bytes');
    await c.close();
  });

  it('resolves the same image pushed as Docker schema 2', async () => {
    const c = client();
    const image = await c.resolve(`${open.host}/etch/layers3:v2s2`, { platform: 'linux/amd64' });
    expect(image.digest).toBe(pushed['v2s2']?.digest);
    expect(image.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(image.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    await c.close();
  });

  it('reads zstd and uncompressed layers by their magic bytes', async () => {
    const c = client();
    const zstd = await c.resolve(`${open.host}/etch/zstd:1`, { platform: 'linux/amd64' });
    expect(zstd.layers[0]?.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    const z = await layerFiles(c, `${open.host}/etch/zstd:1`, zstd, 0);
    expect(z.compression).toBe('zstd');
    expect(Object.keys(z.files)).toContain('layer-1.txt');
    const plain = await c.resolve(`${open.host}/etch/uncompressed:1`, { platform: 'linux/amd64' });
    expect(plain.layers[0]?.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
    expect((await layerFiles(c, `${open.host}/etch/uncompressed:1`, plain, 0)).compression).toBe('none');
    await c.close();
  });

  it.each([
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['linux/arm64', 'linux/arm64/v8'],
    ['linux/aarch64', 'linux/arm64/v8'],
    ['linux/arm64/v8', 'linux/arm64/v8'],
    ['linux/arm/v7', 'linux/arm/v7'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/v6', 'linux/arm/v6'],
    ['linux/armel', 'linux/arm/v6'],
  ])('picks %s from an OCI index (with an attestation entry) and a manifest list: %s', async (asked, expected) => {
    const c = client();
    for (const [key, tag] of [
      ['multi', 'oci'],
      ['list', 'list'],
    ] as const) {
      const ref = `${open.host}/etch/multi:${tag}`;
      const image = await c.resolve(ref, { platform: asked });
      const index = pushed[key] as PushedImage;
      expect(image.indexDigest).toBe(index.digest);
      const entry = index.manifests?.find((m) => m.digest === image.digest);
      expect(entry?.annotations?.['vnd.docker.reference.type']).toBeUndefined();
      // The image's own file says which platform it was built for.
      const { files } = await layerFiles(c, ref, image, image.layers.length - 1);
      expect(files[fixtures.platformFile.path.replace(/^\//, '')]).toBe(`${expected}\n`);
    }
    await c.close();
  });

  it('refuses a platform the index does not offer, listing what it does', async () => {
    const c = client();
    const error = await failure(c.resolve(`${open.host}/etch/multi:oci`, { platform: 'linux/s390x' }));
    expect(error.code).toBe('ETCH_PLATFORM_NOT_FOUND');
    expect(error.message).toMatch(/linux\/amd64, linux\/arm64, linux\/arm\/v7, linux\/arm\/v6/);
    expect(error.message).not.toMatch(/unknown/);
    // An ARMv6 device never gets v7, and a single-platform amd64 image is refused for arm64.
    expect(
      await c.resolve(`${open.host}/etch/multi:oci`, { platform: 'linux/arm/v5' }).catch((e: EtchError) => e.code),
    ).toBe('ETCH_PLATFORM_NOT_FOUND');
    expect((await failure(c.resolve(`${open.host}/etch/layers3:oci`, { platform: 'linux/arm64' }))).code).toBe(
      'ETCH_PLATFORM_NOT_FOUND',
    );
    await c.close();
  });

  it('resolves a pinned digest, and refuses a digest the registry does not have', async () => {
    const c = client();
    const digest = pushed['multi']?.digest as string;
    const image = await c.resolve(`${open.host}/etch/multi@${digest}`, { platform: 'linux/arm/v7' });
    expect(image.indexDigest).toBe(digest);
    const missing = await failure(
      c.resolve(`${open.host}/etch/multi@sha256:${'0'.repeat(64)}`, { platform: 'linux/amd64' }),
    );
    expect(missing.code).toBe('ETCH_NOT_FOUND');
    await c.close();
  });

  it('names a missing tag and a missing repository in ETCH_NOT_FOUND', async () => {
    const c = client();
    const tag = await failure(c.resolve(`${open.host}/etch/layers3:nope`));
    expect(tag.code).toBe('ETCH_NOT_FOUND');
    expect(tag.message).toMatch(/tag nope/);
    const repo = await failure(c.resolve(`${open.host}/etch/absent:1`));
    expect(repo.code).toBe('ETCH_NOT_FOUND');
    await c.close();
  });

  it('lists tags, and the catalog following Link pagination', async () => {
    const c = client();
    // distribution 2.x ignores `n` on tags/list; its catalog paginates, which exercises the Link handling.
    expect((await c.listTags(`${open.host}/etch/layers3`, { pageSize: 1 })).sort()).toEqual(['oci', 'v2s2']);
    expect((await c.catalog(open.host, { pageSize: 2 })).sort()).toEqual([
      'etch/layers3',
      'etch/multi',
      'etch/uncompressed',
      'etch/zstd',
    ]);
    const pages = (await open.log()).match(/GET \/v2\/_catalog/g)?.length ?? 0;
    expect(pages).toBeGreaterThanOrEqual(2);
    await c.close();
  });
});

describe('authentication', () => {
  it('sends Basic credentials to an htpasswd registry, and says which source failed', async () => {
    const ref = `${basic.host}/etch/private:1`;
    const ok = client({ credentials: { [basic.host]: { username: 'alice', password: PASSWORD } } });
    expect((await ok.resolve(ref, { platform: 'linux/amd64' })).digest).toBe(pushed['basic']?.digest);
    await ok.close();
    const anonymous = await failure(client().resolve(ref, { platform: 'linux/amd64' }));
    expect(anonymous.code).toBe('ETCH_AUTH_FAILED');
    expect(anonymous.message).toMatch(/none/);
    const wrong = await failure(
      client({ credentials: { [basic.host]: { username: 'alice', password: 'wrong-password' } } }).resolve(ref, {
        platform: 'linux/amd64',
      }),
    );
    expect(wrong.code).toBe('ETCH_AUTH_FAILED');
    expect(wrong.message).toMatch(/options/);
    expect(JSON.stringify({ message: wrong.message, details: wrong.details })).not.toMatch(/wrong-password/);
  });

  it('gets one token per scope from the token service (GET with Basic) and reuses it for manifests and blobs', async () => {
    token.requests.length = 0;
    const c = client({ credentials: { [token.host]: { username: 'bob', password: PASSWORD } } });
    const ref = `${token.host}/etch/private:1`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    expect(image.digest).toBe(pushed['token']?.digest);
    for (const layer of image.layers) for await (const _ of c.openBlob(ref, layer));
    expect(token.requests).toHaveLength(1);
    expect(token.requests[0]).toMatchObject({
      method: 'GET',
      authorizationScheme: 'Basic',
      account: 'bob',
      scopes: ['repository:etch/private:pull'],
      status: 200,
    });
    await c.close();
  });

  it('asks for several repositories in one token, which the registry then honours for each', async () => {
    await pushRegistryFixture(fixtures.layout, fixtures.images.layers3.tag, `${token.host}/etch/second:1`, {
      creds: `bob:${PASSWORD}`,
    });
    const http = new HttpClient();
    const auth = new RegistryAuth(
      token.host,
      http,
      staticCredentials({ [token.host]: { username: 'bob', password: PASSWORD } }),
    );
    auth.learnFromPing(await http.send({ url: new URL(`http://${token.host}/v2/`) }));
    token.requests.length = 0;
    const authorization = await auth.authorization([pullScope('etch/private'), pullScope('etch/second')]);
    expect(token.requests).toHaveLength(1);
    expect(token.requests[0]?.scopes.sort()).toEqual(['repository:etch/private:pull', 'repository:etch/second:pull']);
    for (const repo of ['etch/private', 'etch/second']) {
      const response = await http.send({
        url: new URL(`http://${token.host}/v2/${repo}/manifests/1`),
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
        ...(authorization ? { authorization } : {}),
      });
      await response.body.dump();
      expect(response.status).toBe(200);
    }
    await http.close();
  });

  it('refuses anonymous pulls from a private token registry with a message naming the token service', async () => {
    const error = await failure(client().resolve(`${token.host}/etch/private:1`, { platform: 'linux/amd64' }));
    expect(error.code).toBe('ETCH_AUTH_FAILED');
    expect(error.message).toMatch(/anonymous/);
  });

  it('uses an identity token with the OAuth2 refresh grant (POST)', async () => {
    // A refresh token as `docker login` stores it: obtained here with the password grant.
    const realm = new URL(token.realm);
    const form = new URLSearchParams({
      grant_type: 'password',
      username: 'bob',
      password: PASSWORD,
      service: token.service,
      client_id: 'test',
      access_type: 'offline',
      scope: 'repository:etch/private:pull',
    });
    const response = await fetch(realm, { method: 'POST', body: form });
    const { refresh_token: refresh } = (await response.json()) as { refresh_token: string };
    expect(refresh).toBeTruthy();
    token.requests.length = 0;
    const c = client({ credentials: { [token.host]: { identityToken: refresh } } });
    expect((await c.resolve(`${token.host}/etch/private:1`, { platform: 'linux/amd64' })).digest).toBe(
      pushed['token']?.digest,
    );
    expect(token.requests[0]).toMatchObject({ method: 'POST', grantType: 'refresh_token', status: 200 });
    await c.close();
  });

  it('re-authenticates when the registry rejects an expired token', async () => {
    const c = client({ credentials: { [token.host]: { username: 'bob', password: PASSWORD } } });
    token.requests.length = 0;
    token.issueExpiredTokens(1);
    expect((await c.resolve(`${token.host}/etch/private:1`, { platform: 'linux/amd64' })).digest).toBe(
      pushed['token']?.digest,
    );
    expect(token.requests.length).toBe(2);
    await c.close();
  });

  it('reads credentials from DOCKER_CONFIG-style config files', async () => {
    const path = work.join('docker-config.json');
    await writeFile(
      path,
      JSON.stringify({ auths: { [token.host]: { auth: Buffer.from(`bob:${PASSWORD}`).toString('base64') } } }),
    );
    const c = new RegistryClient({ dockerConfig: { path } });
    expect((await c.resolve(`${token.host}/etch/private:1`, { platform: 'linux/amd64' })).digest).toBe(
      pushed['token']?.digest,
    );
    await c.close();
  });
});

describe('faults on the wire', () => {
  const ref = () => `${proxy.host}/etch/layers3:oci`;
  const bigLayer = async (c: RegistryClient) => {
    const image = await c.resolve(ref(), { platform: 'linux/amd64' });
    return image.layers[2] as NonNullable<ResolvedImage['layers'][number]>;
  };
  const read = async (c: RegistryClient, layer: { digest: string; size: number; mediaType: string }) => {
    const chunks: Buffer[] = [];
    for await (const chunk of c.openBlob(ref(), layer)) chunks.push(chunk);
    return Buffer.concat(chunks);
  };

  it('resumes a blob cut mid-way with Range and keeps hashing', async () => {
    const c = client();
    const layer = await bigLayer(c);
    proxy.requests.length = 0;
    proxy.addFault({ kind: 'cut', afterBytes: 100_000, path: new RegExp(`/blobs/${layer.digest}`) });
    expect((await read(c, layer)).length).toBe(layer.size);
    const ranges = proxy.requests.filter((r) => r.url.includes(layer.digest)).map((r) => r.headers.range);
    expect(ranges[0]).toBeUndefined();
    expect(ranges[1]).toMatch(/^bytes=\d+-$/);
    expect(Number(/=(\d+)-/.exec(ranges[1] as string)?.[1])).toBeGreaterThan(0);
    await c.close();
  });

  it('starts again from byte 0 when the registry ignores Range, delivering each byte once', async () => {
    const c = client();
    const layer = await bigLayer(c);
    proxy.addFault({ kind: 'cut', afterBytes: 150_000, path: new RegExp(`/blobs/${layer.digest}`) });
    proxy.addFault({ kind: 'ignoreRange', path: new RegExp(`/blobs/${layer.digest}`) });
    const data = await read(c, layer);
    expect(data.length).toBe(layer.size);
    expect(proxy.pendingFaults()).toBe(0);
    await c.close();
  });

  it('retries a 503 and honours Retry-After on a 429', async () => {
    const c = client();
    proxy.addFault({ kind: 'status', status: 503, path: /\/manifests\//, times: 2 });
    expect((await c.resolve(ref(), { platform: 'linux/amd64' })).digest).toBe(pushed['oci']?.digest);
    proxy.addFault({ kind: 'status', status: 429, headers: { 'retry-after': '1' }, path: /\/manifests\// });
    const started = Date.now();
    await c.resolve(ref(), { platform: 'linux/amd64' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    await c.close();
  });

  it('gives up with ETCH_NETWORK after the configured attempts', async () => {
    const c = client();
    proxy.addFault({ kind: 'status', status: 502, path: /\/manifests\//, times: 10 });
    const error = await failure(c.resolve(ref(), { platform: 'linux/amd64' }));
    expect(error.code).toBe('ETCH_NETWORK');
    expect(error.details.statusCode).toBe(502);
    proxy.clearFaults();
    await c.close();
  });

  it('follows a blob redirect to another host without sending it the Authorization header', async () => {
    const front = await startFaultProxy(token);
    try {
      const c = client({ credentials: { [front.host]: { username: 'bob', password: PASSWORD } } });
      const r = `${front.host}/etch/private:1`;
      const image = await c.resolve(r, { platform: 'linux/amd64' });
      front.addFault({ kind: 'redirect', path: /\/blobs\//, times: Infinity });
      for (const layer of image.layers) for await (const _ of c.openBlob(r, layer));
      expect(front.blobRequests.length).toBe(image.layers.length);
      expect(front.blobRequests.every((q) => !q.authorization)).toBe(true);
      expect(front.requests.filter((q) => q.url.includes('/blobs/')).every((q) => q.authorization)).toBe(true);
      await c.close();
    } finally {
      await front.stop();
    }
  });

  it('never answers a challenge from the storage host with the registry credentials', async () => {
    const { createServer } = await import('node:http');
    const seen: string[] = [];
    const evil = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.end('{"token":"x"}');
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
    const realm = `http://127.0.0.1:${(evil.address() as { port: number }).port}/token`;
    const front = await startFaultProxy(basic);
    try {
      const c = client({ credentials: { [front.host]: { username: 'alice', password: PASSWORD } } });
      const r = `${front.host}/etch/private:1`;
      const image = await c.resolve(r, { platform: 'linux/amd64' });
      front.addFault({ kind: 'redirect', path: /\/blobs\//, times: Infinity });
      front.addFault({
        kind: 'status',
        status: 401,
        headers: { 'www-authenticate': `Bearer realm="${realm}",service="evil"` },
        path: /\/blobs\//,
        on: 'blobHost',
        times: Infinity,
      });
      const error = await failure(
        (async () => {
          for await (const _ of c.openBlob(r, image.layers[0] as ResolvedImage['layers'][number]));
        })(),
      );
      expect(error.code).toBe('ETCH_AUTH_FAILED');
      expect(seen).toEqual([]);
      expect(front.blobRequests.every((q) => !q.authorization)).toBe(true);
      await c.close();
    } finally {
      await front.stop();
      await new Promise((resolve) => evil.close(resolve));
    }
  });

  it('keeps Range across a redirect when resuming', async () => {
    const c = client();
    const layer = await bigLayer(c);
    proxy.addFault({ kind: 'redirect', path: new RegExp(`/blobs/${layer.digest}`), times: 2 });
    proxy.addFault({ kind: 'cut', afterBytes: 80_000, path: new RegExp(`/blobs/${layer.digest}`), on: 'blobHost' });
    proxy.blobRequests.length = 0;
    expect((await read(c, layer)).length).toBe(layer.size);
    expect(proxy.blobRequests[1]?.headers.range).toMatch(/^bytes=\d+-$/);
    await c.close();
  });

  it('refuses a blob whose bytes do not match its digest', async () => {
    const c = client();
    const layer = await bigLayer(c);
    proxy.addFault({ kind: 'corrupt', offset: 4096, path: new RegExp(`/blobs/${layer.digest}`) });
    const error = await failure(read(c, layer));
    expect(error.code).toBe('ETCH_DIGEST_MISMATCH');
    expect(error.details.digest).toBe(layer.digest);
    await c.close();
  });

  it('refuses a manifest fetched by digest whose bytes do not match', async () => {
    const c = client();
    const digest = pushed['oci']?.digest as string;
    proxy.addFault({ kind: 'corrupt', offset: 10, path: new RegExp(`/manifests/${digest}`) });
    const error = await failure(c.resolve(`${proxy.host}/etch/layers3@${digest}`, { platform: 'linux/amd64' }));
    expect(error.code).toBe('ETCH_DIGEST_MISMATCH');
    await c.close();
  });
});

describe('the registry log', () => {
  it('shows the docker-registry really served these pulls', async () => {
    expect(await open.log()).toMatch(/GET \/v2\/etch\/multi\/manifests\/oci/);
    expect((await run('docker-registry', ['--version'])).stdout).toMatch(/registry|distribution|v?2\./i);
  });
});

describe('the blob cache', () => {
  it('serves manifests and blobs fetched by digest from disk: a warm run makes no request', async () => {
    const cacheDir = work.join('cache');
    const digest = pushed['multi']?.digest as string;
    const ref = `${proxy.host}/etch/multi@${digest}`;
    const pull = async () => {
      const c = client({ cache: cacheDir });
      const image = await c.resolve(ref, { platform: 'linux/arm/v7' });
      let bytes = 0;
      for (const layer of image.layers) for await (const chunk of c.openBlob(ref, layer)) bytes += chunk.length;
      await c.close();
      return { image, bytes };
    };
    proxy.requests.length = 0;
    const cold = await pull();
    expect(proxy.requests.length).toBeGreaterThan(0);
    proxy.requests.length = 0;
    const warm = await pull();
    expect(proxy.requests).toEqual([]);
    expect(warm.image.digest).toBe(cold.image.digest);
    expect(warm.image.configBytes.equals(cold.image.configBytes)).toBe(true);
    expect(warm.bytes).toBe(cold.bytes);
  });

  it('refuses and removes a cache entry damaged on disk, so the next run downloads it again', async () => {
    const cacheDir = work.join('cache-damaged');
    const c = client({ cache: cacheDir });
    const ref = `${open.host}/etch/layers3:oci`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    const layer = image.layers[2] as (typeof image.layers)[number];
    await c.prefetch(ref, layer);
    const path = c.cache?.pathOf(layer.digest) as string;
    const { open: openFile } = await import('node:fs/promises');
    const handle = await openFile(path, 'r+');
    await handle.write(Buffer.from([0x00, 0x01]), 0, 2, 4000);
    await handle.close();
    const error = await failure(
      (async () => {
        for await (const _ of c.openBlob(ref, layer));
      })(),
    );
    expect(error.code).toBe('ETCH_DIGEST_MISMATCH');
    expect(error.message).toMatch(/removed/);
    expect(await c.cache?.has(layer)).toBe(false);
    await c.prefetch(ref, layer);
    expect(await c.cache?.has(layer)).toBe(true);
    await c.close();
  });

  it('keeps nothing from a download that failed verification', async () => {
    const cacheDir = work.join('cache-corrupt');
    const c = client({ cache: cacheDir });
    const ref = `${proxy.host}/etch/layers3:oci`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    const layer = image.layers[2] as (typeof image.layers)[number];
    proxy.addFault({ kind: 'corrupt', offset: 100, path: new RegExp(`/blobs/${layer.digest}`) });
    expect((await failure(c.prefetch(ref, layer))).code).toBe('ETCH_DIGEST_MISMATCH');
    expect(await c.cache?.has(layer)).toBe(false);
    const { readdir } = await import('node:fs/promises');
    expect(await readdir(`${cacheDir}/tmp`)).toEqual([]);
    await c.close();
  });

  it('downloads a blob once for concurrent readers, and hands the download on when its first reader gives up', async () => {
    const c = client({ cache: work.join('cache-single-flight') });
    const ref = `${proxy.host}/etch/layers3:oci`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    const layer = image.layers[2] as (typeof image.layers)[number];
    const blobGets = () => proxy.requests.filter((r) => r.method === 'GET' && r.url.includes(layer.digest)).length;
    const before = blobGets();
    // The first reader stops after one chunk: a waiter must take the download over, not fail with it.
    const quitter = new AbortController();
    const first = (async () => {
      for await (const _ of c.openBlob(ref, layer, { signal: quitter.signal })) quitter.abort();
    })();
    const readers = Array.from({ length: 8 }, async () => {
      let bytes = 0;
      for await (const chunk of c.openBlob(ref, layer)) bytes += chunk.length;
      return bytes;
    });
    expect((await failure(first)).code).toBe('ETCH_ABORTED');
    expect(await Promise.all(readers), 'bytes each reader got').toEqual(Array(8).fill(layer.size));
    expect(blobGets() - before, 'GETs of the blob for nine readers, one of them giving up').toBeLessThanOrEqual(2);
    await c.close();
  });

  it('reports ETCH_ABORTED to a reader that gives up on the cached copy another reader downloaded', async () => {
    // The interleaving a loaded machine can produce in the test above: the reader that gives up is not the
    // one downloading, so it waits for the download and then gives up while reading the cache.
    const c = client({ cache: work.join('cache-waiter-quits') });
    const ref = `${proxy.host}/etch/layers3:oci`;
    const image = await c.resolve(ref, { platform: 'linux/amd64' });
    const layer = image.layers[2] as (typeof image.layers)[number];
    const downloader = c.openBlob(ref, layer);
    const head = await downloader.next();
    const quitter = new AbortController();
    const first = (async () => {
      for await (const _ of c.openBlob(ref, layer, { signal: quitter.signal })) quitter.abort();
    })();
    let bytes = head.done === true ? 0 : head.value.length;
    for await (const chunk of downloader) bytes += chunk.length;
    expect(bytes).toBe(layer.size);
    expect((await failure(first)).code).toBe('ETCH_ABORTED');
    await c.close();
  });

  it('sends every request for a mirrored registry to its mirror, keeping the image names', async () => {
    const mirrored = 'registry.invalid:5000';
    const c = client({ mirrors: { [mirrored]: `http://${proxy.host}` } });
    proxy.requests.length = 0;
    const image = await c.resolve(`${mirrored}/etch/layers3:oci`, { platform: 'linux/amd64' });
    expect(image.digest).toBe(pushed['oci']?.digest);
    expect(
      proxy.requests.some((r) => r.url.startsWith('/v2/etch/layers3/manifests/oci')),
      'the mirror asked',
    ).toBe(true);
    await c.close();
  });
});
