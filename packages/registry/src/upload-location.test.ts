/**
 * Upload sessions whose `Location` is not on the registry's origin: a storage host reached through a pre-signed
 * URL, which must get no credentials, and a relative path. docker-registry with htpasswd auth sits behind the
 * fault proxy, which moves the Location of every upload `POST`; skopeo reads the pushed image back.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  run,
  startBasicAuthRegistry,
  startFaultProxy,
  type BasicAuthRegistry,
  type FaultProxy,
} from '@etch/test-utils/system';
import { MediaType } from './media-types.js';
import { RegistryClient } from './registry-client.js';

let registry: BasicAuthRegistry;
let proxy: FaultProxy;

const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** `bytes` in pieces, as a socket would give them: a stream of unknown digest and size. */
function pieces(bytes: Buffer, piece = 64 * 1024): AsyncIterable<Buffer> {
  function* split(): Generator<Buffer> {
    for (let at = 0; at < bytes.length; at += piece) yield bytes.subarray(at, at + piece);
  }
  return Readable.from(split()) as AsyncIterable<Buffer>;
}

/**
 * Pushes an image through the proxy: the config in one `PUT` (digest known), the layer in 256 KiB `PATCH`
 * chunks (digest computed on the way), then the manifest. Returns the manifest's digest and the layer.
 */
async function pushThroughProxy(repository: string): Promise<{ digest: string; layer: Buffer }> {
  const client = new RegistryClient({
    dockerConfig: false,
    credentials: { [proxy.host]: registry.credentials },
    retry: { attempts: 2, baseDelayMs: 20, maxDelayMs: 200 },
  });
  const ref = `${proxy.host}/${repository}`;
  const layer = randomBytes(700 * 1024);
  try {
    const uploaded = await client.uploadBlob(ref, pieces(layer), { chunkSize: 256 * 1024 });
    expect(uploaded, 'the layer as uploaded').toEqual({ digest: digestOf(layer), size: layer.length, how: 'uploaded' });
    const config = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }),
    );
    await client.uploadBlob(ref, () => pieces(config), { digest: digestOf(config), size: config.length });
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OCI_MANIFEST,
        config: { mediaType: MediaType.OCI_CONFIG, digest: digestOf(config), size: config.length },
        layers: [{ mediaType: MediaType.OCI_LAYER, digest: digestOf(layer), size: layer.length }],
      }),
    );
    const digest = await client.putManifest(`${ref}:v1`, { bytes: manifest, mediaType: MediaType.OCI_MANIFEST });
    return { digest, layer };
  } finally {
    await client.close();
  }
}

/** Reads the image back from the registry itself (not the proxy): skopeo for the manifest, the client for the layer. */
async function readBack(repository: string, layer: Buffer): Promise<{ digest: string; layer: Buffer }> {
  const { stdout } = await run('skopeo', [
    'inspect',
    '--tls-verify=false',
    '--creds',
    registry.creds,
    '--format',
    '{{.Digest}}',
    `docker://${registry.host}/${repository}:v1`,
  ]);
  const client = new RegistryClient({ dockerConfig: false, credentials: { [registry.host]: registry.credentials } });
  try {
    const chunks: Buffer[] = [];
    const descriptor = { mediaType: MediaType.OCI_LAYER, digest: digestOf(layer), size: layer.length };
    for await (const chunk of client.openBlob(`${registry.host}/${repository}`, descriptor)) chunks.push(chunk);
    return { digest: stdout.trim(), layer: Buffer.concat(chunks) };
  } finally {
    await client.close();
  }
}

beforeAll(async () => {
  registry = await startBasicAuthRegistry({ users: { pusher: 'p-pass' } });
  proxy = await startFaultProxy(registry);
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
});

describe('an upload Location', () => {
  it('on another origin gets the body and no credentials, and the image reads back', async () => {
    proxy.clearFaults();
    proxy.addFault({ path: /\/blobs\/uploads\/(\?|$)/, method: 'POST', kind: 'relocate', to: 'blobHost', times: 2 });
    const before = proxy.blobRequests.length;
    const pushed = await pushThroughProxy('relocated/app');
    const storage = proxy.blobRequests.slice(before);
    expect(proxy.pendingFaults(), 'both upload POSTs were answered with a Location on the storage host').toBe(0);
    expect(
      storage.map((r) => r.method),
      'what reached the storage host: three PATCH chunks and a PUT for the layer, one PUT for the config',
    ).toEqual(['PATCH', 'PATCH', 'PATCH', 'PUT', 'PUT']);
    expect(
      storage.filter((r) => r.authorization).map((r) => `${r.method} ${r.url}`),
      'requests that carried an Authorization header to the storage host',
    ).toEqual([]);
    expect(
      storage.filter((r) => r.status < 200 || r.status >= 300).map((r) => `${r.method} ${r.status}`),
      'requests the storage host refused',
    ).toEqual([]);
    const back = await readBack('relocated/app', pushed.layer);
    expect(back.digest, 'the manifest digest skopeo reads from the registry').toBe(pushed.digest);
    expect(back.layer.equals(pushed.layer), 'the layer read back is the bytes uploaded').toBe(true);
  });

  it('that is relative is resolved against the URL that answered', async () => {
    proxy.clearFaults();
    proxy.addFault({ path: /\/blobs\/uploads\/(\?|$)/, method: 'POST', kind: 'relocate', to: 'relative', times: 2 });
    const before = { proxy: proxy.requests.length, storage: proxy.blobRequests.length };
    const pushed = await pushThroughProxy('relative/app');
    expect(proxy.pendingFaults(), 'both upload POSTs were answered with a relative Location').toBe(0);
    expect(proxy.blobRequests.length, 'requests that reached the storage host').toBe(before.storage);
    const sessions = proxy.requests
      .slice(before.proxy)
      .filter((r) => (r.method === 'PATCH' || r.method === 'PUT') && r.url.includes('/blobs/uploads/'));
    expect(
      sessions.map((r) => `${r.method} ${r.status}`),
      'the session requests the proxy forwarded, with the registry answers',
    ).toEqual(['PATCH 202', 'PATCH 202', 'PATCH 202', 'PUT 201', 'PUT 201']);
    const back = await readBack('relative/app', pushed.layer);
    expect(back.digest, 'the manifest digest skopeo reads from the registry').toBe(pushed.digest);
    expect(back.layer.equals(pushed.layer), 'the layer read back is the bytes uploaded').toBe(true);
  });
});
