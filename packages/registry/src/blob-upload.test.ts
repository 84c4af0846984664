/**
 * The write half against Debian's docker-registry (distribution 2.8): monolithic and chunked uploads, resume and
 * restart through a fault proxy, mounts, manifests byte for byte, deletes, and typed refusals from a token
 * registry that grants pull only.
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError, type EtchError } from '@etch/format';
import {
  startFaultProxy,
  startRegistryServer,
  startTokenAuthRegistry,
  type FaultProxy,
  type RegistryServer,
  type TokenAuthRegistry,
} from '@etch/test-utils/system';
import { pullScope, pushScope } from './auth.js';
import { MediaType } from './media-types.js';
import { RegistryClient } from './registry-client.js';

let open: RegistryServer;
let proxy: FaultProxy;
let token: TokenAuthRegistry;

function client(options: ConstructorParameters<typeof RegistryClient>[0] = {}): RegistryClient {
  return new RegistryClient({
    dockerConfig: false,
    retry: { attempts: 4, baseDelayMs: 20, maxDelayMs: 500 },
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

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Yields `bytes` in pieces of `piece`, like a socket or a gzip stream would. */
function pieces(bytes: Buffer, piece = 10_000): AsyncIterable<Buffer> {
  function* split(): Generator<Buffer> {
    for (let at = 0; at < bytes.length; at += piece) yield bytes.subarray(at, at + piece);
  }
  return Readable.from(split()) as AsyncIterable<Buffer>;
}

async function readBack(c: RegistryClient, ref: string, digest: string, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of c.openBlob(ref, { mediaType: MediaType.OCI_LAYER, digest, size })) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Upload-related lines of the registry's access log for a repository. */
async function uploads(server: RegistryServer, repository: string): Promise<string[]> {
  return (await server.log())
    .split('\n')
    .filter(
      (line) => line.includes(`"`) && line.includes(`/v2/${repository}/blobs/uploads/`) && !line.includes('level='),
    );
}

beforeAll(async () => {
  [open, token] = await Promise.all([
    startRegistryServer(),
    startTokenAuthRegistry({
      users: { writer: 'w-pass', reader: 'r-pass' },
      allow: (request) =>
        request.account === 'writer' ? request.actions : request.actions.filter((a) => a === 'pull'),
    }),
  ]);
  proxy = await startFaultProxy(open);
}, 60_000);
afterAll(async () => {
  await proxy?.stop();
  await Promise.all([open?.stop(), token?.stop()]);
});

describe('uploadBlob', () => {
  it('streams a blob of known digest and size in one PUT, then finds it and skips it', async () => {
    const c = client();
    const bytes = randomBytes(300_000);
    const blob = { digest: digestOf(bytes), size: bytes.length };
    const ref = `${open.host}/push/mono`;
    try {
      expect(await c.blobExists(ref, blob)).toBe(false);
      const first = await c.uploadBlob(ref, () => pieces(bytes), blob);
      expect(first).toEqual({ ...blob, how: 'uploaded' });
      expect(await c.blobExists(ref, blob), 'HEAD after the upload').toBe(true);
      expect((await readBack(c, ref, blob.digest, blob.size)).equals(bytes), 'bytes read back').toBe(true);
      expect(await c.uploadBlob(ref, () => pieces(bytes), blob)).toEqual({ ...blob, how: 'existed' });
      const lines = await uploads(open, 'push/mono');
      expect(
        lines.filter((l) => l.includes('"PATCH ')),
        'no PATCH in a monolithic upload',
      ).toHaveLength(0);
      expect(
        lines.filter((l) => l.includes('"PUT ')),
        'one PUT',
      ).toHaveLength(1);
    } finally {
      await c.close();
    }
  });

  it('sends a stream of unknown digest in Content-Range chunks and computes digest and size on the way', async () => {
    const c = client();
    const bytes = randomBytes(1_000_000);
    const ref = `${open.host}/push/chunked`;
    const progress: number[] = [];
    try {
      const result = await c.uploadBlob(ref, pieces(bytes, 7_777), {
        chunkSize: 256 * 1024,
        onProgress: (p) => progress.push(p.bytes),
      });
      expect(result).toEqual({ digest: digestOf(bytes), size: bytes.length, how: 'uploaded' });
      expect(progress).toEqual([262144, 524288, 786432, 1_000_000]);
      expect((await readBack(c, ref, result.digest, result.size)).equals(bytes), 'bytes read back').toBe(true);
      const patches = (await uploads(open, 'push/chunked')).filter((l) => l.includes('"PATCH '));
      expect(patches, 'one PATCH per chunk').toHaveLength(4);
    } finally {
      await c.close();
    }
  });

  it('resumes from the offset the registry reports after a chunk fails', async () => {
    const c = client();
    const bytes = randomBytes(600_000);
    const ref = `${proxy.host}/push/resume`;
    proxy.requests.length = 0;
    try {
      // The second PATCH never reaches the registry: the proxy answers 503 in its place. It is armed once the
      // first chunk is acknowledged.
      let patches = 0;
      const result = await c.uploadBlob(ref, pieces(bytes), {
        chunkSize: 200_000,
        onProgress: () => {
          patches += 1;
          if (patches === 1)
            proxy.addFault({ path: /\/blobs\/uploads\//, method: 'PATCH', kind: 'status', status: 503, times: 1 });
        },
      });
      expect(result.digest).toBe(digestOf(bytes));
      const seen = proxy.requests.filter((r) => r.url.includes('/blobs/uploads/'));
      const statusCheck = seen.findIndex((r) => r.method === 'GET');
      expect(statusCheck, 'the client asked the registry for its offset').toBeGreaterThan(0);
      expect(seen[statusCheck - 1]?.status, 'the failed PATCH').toBe(503);
      expect(seen[statusCheck + 1]?.headers['content-range'], 'the retry starts where the registry stands').toBe(
        '200000-399999',
      );
      expect((await readBack(c, ref, result.digest, result.size)).equals(bytes)).toBe(true);
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  it('resumes in the same session when a PATCH connection is cut before the registry read any of it', async () => {
    const c = client();
    const bytes = randomBytes(600_000);
    const ref = `${proxy.host}/push/cut-resume`;
    proxy.requests.length = 0;
    let opened = 0;
    let chunks = 0;
    try {
      // Armed once the first chunk is acknowledged: the second PATCH's connection is reset mid-body.
      const result = await c.uploadBlob(
        ref,
        () => {
          opened += 1;
          return pieces(bytes);
        },
        {
          chunkSize: 200_000,
          onProgress: () => {
            chunks += 1;
            if (chunks === 1)
              proxy.addFault({ path: /\/blobs\/uploads\//, method: 'PATCH', kind: 'cutRequest', afterBytes: 0 });
          },
        },
      );
      expect(proxy.pendingFaults(), 'the cut happened').toBe(0);
      expect(result.digest).toBe(digestOf(bytes));
      expect(opened, 'the content was read once: no start over').toBe(1);
      const seen = proxy.requests.filter((r) => r.url.includes('/blobs/uploads/'));
      expect(
        seen.filter((r) => r.method === 'POST'),
        'one session',
      ).toHaveLength(1);
      const cut = seen.findIndex((r) => r.fault === 'cutRequest');
      expect(seen[cut + 1]?.method, 'after the cut the client asks for the offset').toBe('GET');
      expect(seen[cut + 2]?.headers['content-range'], 'and sends the chunk again from there').toBe('200000-399999');
      expect((await readBack(c, ref, result.digest, result.size)).equals(bytes)).toBe(true);
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  it('starts over when a PATCH is cut mid-body and the registry drops the session (content that reopens)', async () => {
    const c = client();
    const bytes = randomBytes(500_000);
    const ref = `${proxy.host}/push/cut`;
    proxy.requests.length = 0;
    proxy.addFault({ path: /\/blobs\/uploads\//, method: 'PATCH', kind: 'cutRequest', afterBytes: 50_000 });
    let opened = 0;
    try {
      const result = await c.uploadBlob(
        ref,
        () => {
          opened += 1;
          return pieces(bytes);
        },
        { chunkSize: 200_000 },
      );
      expect(proxy.pendingFaults(), 'the cut happened').toBe(0);
      expect(result.digest).toBe(digestOf(bytes));
      expect(opened, 'the content was read again from the start').toBe(2);
      expect(proxy.requests.filter((r) => r.method === 'POST').length, 'a second session').toBe(2);
      expect((await readBack(c, ref, result.digest, result.size)).equals(bytes)).toBe(true);
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  it('fails with a typed error when a one-shot stream is cut and the session is lost', async () => {
    const c = client();
    const bytes = randomBytes(500_000);
    proxy.addFault({ path: /\/blobs\/uploads\//, method: 'PATCH', kind: 'cutRequest', afterBytes: 50_000 });
    try {
      const error = await failure(c.uploadBlob(`${proxy.host}/push/cut-once`, pieces(bytes), { chunkSize: 200_000 }));
      expect(error.code).toBe('ETCH_NETWORK');
      expect(error.details['restartable']).toBe(false);
      expect(error.message).toMatch(/cannot start over/);
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  it('refuses content that does not hash to the digest given', async () => {
    const c = client();
    const bytes = randomBytes(10_000);
    try {
      const error = await failure(
        c.uploadBlob(`${open.host}/push/wrong`, () => pieces(bytes), {
          digest: digestOf(Buffer.from('x')),
          size: bytes.length,
        }),
      );
      expect(error.code).toBe('ETCH_DIGEST_MISMATCH');
    } finally {
      await c.close();
    }
  });
});

describe('mountBlob', () => {
  it('mounts a blob from another repository without uploading it, and uploads when the source lacks it', async () => {
    const c = client();
    const bytes = randomBytes(100_000);
    const blob = { digest: digestOf(bytes), size: bytes.length };
    try {
      await c.uploadBlob(`${open.host}/mount/source`, () => pieces(bytes), blob);
      const mounted = await c.mountBlob(`${open.host}/mount/target`, blob, 'mount/source');
      expect(mounted.how).toBe('mounted');
      const target = await uploads(open, 'mount/target');
      expect(
        target.filter((l) => /"(PATCH|PUT) /.test(l)),
        'no bytes uploaded to the target',
      ).toHaveLength(0);
      expect((await readBack(c, `${open.host}/mount/target`, blob.digest, blob.size)).equals(bytes)).toBe(true);

      const other = randomBytes(50_000);
      const fallback = await c.mountBlob(
        `${open.host}/mount/target`,
        { digest: digestOf(other), size: other.length },
        'mount/empty',
        { fallback: () => pieces(other) },
      );
      expect(fallback.how, 'a 202 answer is uploaded into the session it opened').toBe('uploaded');
      const posts = (await uploads(open, 'mount/target')).filter((l) => l.includes('"POST '));
      expect(posts, 'the mount attempt opened the session that was used').toHaveLength(2);
    } finally {
      await c.close();
    }
  });

  it('asks the token service once for pull on the source and pull,push on the target', async () => {
    const c = client({ credentials: { [token.host]: { username: 'writer', password: 'w-pass' } } });
    const bytes = randomBytes(20_000);
    const blob = { digest: digestOf(bytes), size: bytes.length };
    try {
      await c.uploadBlob(`${token.host}/t/source`, () => pieces(bytes), blob);
      token.requests.length = 0;
      expect((await c.mountBlob(`${token.host}/t/target`, blob, 't/source')).how).toBe('mounted');
      expect(token.requests.map((r) => r.scopes.sort())).toEqual([
        [pullScope('t/source'), pushScope('t/target')].sort(),
      ]);
    } finally {
      await c.close();
    }
  });
});

describe('refusals', () => {
  it('a push without push rights is ETCH_DENIED naming where the credentials came from', async () => {
    const c = client({ credentials: { [token.host]: { username: 'reader', password: 'r-pass' } } });
    const bytes = randomBytes(1000);
    try {
      const error = await failure(c.uploadBlob(`${token.host}/t/denied`, () => pieces(bytes)));
      expect(error.code).toBe('ETCH_DENIED');
      expect(error.details['credentialSource']).toBe('options');
      expect(error.message).toContain('options');
      expect(error.message).not.toContain('r-pass');
    } finally {
      await c.close();
    }
  });

  it('bad credentials stay ETCH_AUTH_FAILED', async () => {
    const c = client({ credentials: { [token.host]: { username: 'writer', password: 'nope' } } });
    try {
      const error = await failure(c.uploadBlob(`${token.host}/t/bad`, () => pieces(Buffer.from('x'))));
      expect(error.code).toBe('ETCH_AUTH_FAILED');
    } finally {
      await c.close();
    }
  });
});

describe('putManifest', () => {
  async function pushImage(c: RegistryClient, ref: string): Promise<{ bytes: Buffer; mediaType: string }> {
    const config = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
    );
    await c.uploadBlob(ref, () => pieces(config), { digest: digestOf(config), size: config.length });
    // Odd spacing and key order: a registry must keep the bytes, not re-serialise them.
    const bytes = Buffer.from(
      `{"schemaVersion":2,  "mediaType":"${MediaType.OCI_MANIFEST}",\n"config":{"mediaType":"${MediaType.OCI_CONFIG}","size":${config.length},"digest":"${digestOf(config)}"},"layers":[]}\n`,
    );
    return { bytes, mediaType: MediaType.OCI_MANIFEST };
  }

  it('stores exact bytes by tag and by digest; the digest is sha256 of the bytes', async () => {
    const c = client();
    const ref = `${open.host}/manifests/exact`;
    try {
      const manifest = await pushImage(c, ref);
      const digest = await c.putManifest(`${ref}:v1`, manifest);
      expect(digest).toBe(digestOf(manifest.bytes));
      expect(await c.putManifest(`${ref}@${digest}`, manifest)).toBe(digest);
      const fetched = await c.getManifest(`${ref}:v1`);
      expect(fetched.digest).toBe(digest);
      expect(fetched.bytes.equals(manifest.bytes), 'the registry serves the bytes sent').toBe(true);
    } finally {
      await c.close();
    }
  });

  it('detects a registry that stored something else than the bytes sent', async () => {
    const c = client();
    const ref = `${proxy.host}/manifests/rewritten`;
    try {
      const manifest = await pushImage(c, ref);
      proxy.addFault({
        path: /\/manifests\//,
        method: 'PUT',
        kind: 'status',
        status: 201,
        headers: { 'docker-content-digest': digestOf(Buffer.from('rewritten')) },
        body: '',
      });
      const error = await failure(c.putManifest(`${ref}:v1`, manifest));
      expect(error.code).toBe('ETCH_DIGEST_MISMATCH');
      expect(error.details['actual']).toBe(digestOf(Buffer.from('rewritten')));
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });

  it('reports a manifest whose blobs are missing as ETCH_NOT_FOUND with the registry code', async () => {
    const c = client();
    const missing = digestOf(Buffer.from('never uploaded'));
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OCI_MANIFEST,
        config: { mediaType: MediaType.OCI_CONFIG, size: 14, digest: missing },
        layers: [],
      }),
    );
    try {
      const error = await failure(
        c.putManifest(`${open.host}/manifests/missing:v1`, { bytes, mediaType: MediaType.OCI_MANIFEST }),
      );
      expect(error.code).toBe('ETCH_NOT_FOUND');
      expect(error.details['registryCodes']).toContain('MANIFEST_BLOB_UNKNOWN');
    } finally {
      await c.close();
    }
  });

  it('deletes a manifest by digest, and reports a registry that will not as ETCH_UNSUPPORTED', async () => {
    const c = client();
    const ref = `${proxy.host}/manifests/deleted`;
    try {
      const manifest = await pushImage(c, ref);
      const digest = await c.putManifest(`${ref}:v1`, manifest);
      proxy.addFault({
        path: /\/manifests\//,
        method: 'DELETE',
        kind: 'status',
        status: 405,
        body: JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'The operation is unsupported.' }] }),
      });
      expect((await failure(c.deleteManifest(ref, digest))).code).toBe('ETCH_UNSUPPORTED');
      await c.deleteManifest(ref, digest);
      expect((await failure(c.getManifest(`${ref}@${digest}`))).code).toBe('ETCH_NOT_FOUND');
    } finally {
      proxy.clearFaults();
      await c.close();
    }
  });
});

describe('a large streamed blob', () => {
  // 256 MiB in 4 MiB chunks by default, so the suite does not starve timing tests on two cores: a client that
  // held the blob would grow by its size, this one by a few chunks. ETCH_BIG_BLOB_MIB=2048 runs the 2 GiB case.
  const mib = Number(process.env['ETCH_BIG_BLOB_MIB'] ?? 256);

  it(`uploads ${mib} MiB generated on the fly in chunks with bounded memory`, async () => {
    const c = client();
    const size = mib * 1024 * 1024;
    const piece = 1024 * 1024;
    const zeros = Buffer.alloc(piece);
    const expected = createHash('sha256');
    function* generated(): Generator<Buffer> {
      const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
      for (let at = 0; at < size; at += piece) {
        const bytes = cipher.update(zeros);
        expected.update(bytes);
        yield bytes;
      }
    }
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 50);
    const started = performance.now();
    try {
      const result = await c.uploadBlob(`${open.host}/push/big`, Readable.from(generated()) as AsyncIterable<Buffer>, {
        chunkSize: 4 * 1024 * 1024,
      });
      const seconds = (performance.now() - started) / 1000;
      peak = Math.max(peak, process.memoryUsage().rss);
      console.log(
        `streamed upload of ${mib} MiB: ${seconds.toFixed(1)} s (${(mib / seconds).toFixed(0)} MiB/s), RSS ${(before / 2 ** 20).toFixed(0)} → peak ${(peak / 2 ** 20).toFixed(0)} MiB`,
      );
      expect(result.size).toBe(size);
      expect(result.digest).toBe(`sha256:${expected.digest('hex')}`);
      expect(await c.blobExists(`${open.host}/push/big`, result), 'the registry has it').toBe(true);
      // Two 4 MiB chunks in hand, buffers in flight and garbage not yet collected: far below the blob's size.
      expect(peak - before, 'RSS growth in bytes').toBeLessThan(128 * 1024 * 1024);
    } finally {
      clearInterval(sampler);
      await c.close();
    }
  }, 900_000);
});
