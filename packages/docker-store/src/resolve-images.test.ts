/** The entry points to pulls: getManifestsForImages (the original API, with the seed's auth shapes) and resolvePreloadImages. */
import { cp, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@etch/registry';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  pushRegistryFixture,
  startBasicAuthRegistry,
  type BasicAuthRegistry,
  type PushedImage,
} from '@etch/test-utils/system';
import { getManifestsForImages, resolvePreloadImages } from './resolve-images.js';
import { dockerStoreEntries, type StoreLayer } from './store.js';

let work: TempDir;
let layout: string;
let registry: BasicAuthRegistry;
let multi: PushedImage;
const PASSWORD = 'seed-shaped-auth';

beforeAll(async () => {
  work = await createTempDir('etch-legacy-api-');
  const fixtures = await buildRegistryFixtures(work.join('fixtures'));
  layout = fixtures.layout;
  registry = await startBasicAuthRegistry({ users: { seed: PASSWORD } });
  multi = await pushRegistryFixture(fixtures.layout, fixtures.images.platforms.tag, `${registry.host}/etch/multi:1`, {
    creds: registry.creds,
  });
}, 120_000);
afterAll(async () => {
  await registry?.stop();
  await work?.remove();
});

describe('getManifestsForImages', () => {
  it('takes {username, password}, a platform, and returns what streamDockerAssets needs', async () => {
    const [image] = await getManifestsForImages(
      [`${registry.host}/etch/multi:1`],
      { username: 'seed', password: PASSWORD },
      { platform: 'linux/arm/v7' },
    );
    const entry = multi.manifests?.find((m) => m.platform?.variant === 'v7');
    expect(image?.configDigest).toBe(entry?.config?.digest);
    expect(image?.names).toEqual([{ repository: `${registry.host}/etch/multi`, tag: '1', digest: multi.digest }]);
    expect(image?.sourceRepository).toBe(`${registry.host}/etch/multi`);
    let bytes = 0;
    for await (const chunk of await (image?.layers[0]?.open() as Promise<AsyncIterable<Uint8Array>>))
      bytes += chunk.length;
    expect(bytes).toBe(image?.layers[0]?.size);
  });

  it('fails with ETCH_AUTH_FAILED naming where the credentials came from, without the password', async () => {
    const error = await getManifestsForImages(
      [`${registry.host}/etch/multi:1`],
      { username: 'seed', password: 'wrong-secret' },
      { platform: 'linux/amd64' },
    ).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_AUTH_FAILED'), String(error)).toBe(true);
    expect(String(error)).toMatch(/getManifestsForImages auth/);
    expect(String(error)).not.toMatch(/wrong-secret/);
  });
});

describe('resolvePreloadImages', () => {
  it('leaves the blob digest to its source: a gzip header changed on disk, same content and diffID, is refused', async () => {
    const copy = work.join('tampered-layout');
    await cp(layout, copy, { recursive: true });
    const client = new RegistryClient({ dockerConfig: false });
    try {
      const source = `oci:${copy}:layers3`;
      const [before] = await resolvePreloadImages([source], { platform: 'linux/amd64', client });
      const layer = before?.store.layers[0] as StoreLayer;
      // Bytes 4-7 of a gzip member are its time: the data and its CRC stay valid, so only the digest tells.
      const blob = join(copy, 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
      const handle = await open(blob, 'r+');
      await handle.write(Buffer.from([0x5a]), 0, 1, 4);
      await handle.close();
      expect(gunzipSync(await readFile(blob)).length, 'the tampered blob still decompresses').toBeGreaterThan(0);
      const images = await resolvePreloadImages([source], { platform: 'linux/amd64', client });
      expect(images[0]?.store.layers[0]?.verified, 'verified by the source').toBe(true);
      const error = await (async () => {
        for await (const _ of dockerStoreEntries(images.map((i) => i.store)));
      })().catch((e: unknown) => e);
      expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
      expect(String(error), 'names the blob').toContain(layer.digest);
    } finally {
      await client.close();
    }
  });
});
