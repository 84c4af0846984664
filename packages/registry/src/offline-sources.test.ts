/** oci: and docker-archive: sources, produced by umoci and skopeo, resolved and verified like a registry. */
import { open as openFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { buildRegistryFixtures, run, type RegistryFixtures } from '@etch/test-utils/system';
import { openImageSource } from './open-source.js';
import { RegistryClient } from './registry-client.js';
import type { ImageSource } from './source.js';

let work: TempDir;
let fixtures: RegistryFixtures;
let archive: string;
const client = new RegistryClient({ dockerConfig: false });

async function readAll(source: ImageSource, platform: string): Promise<{ digests: string[]; bytes: number[] }> {
  const image = await source.resolve({ platform });
  const bytes: number[] = [];
  for (const layer of image.layers) {
    let n = 0;
    for await (const chunk of source.openBlob(layer)) n += chunk.length;
    bytes.push(n);
  }
  return { digests: image.layers.map((l) => l.digest), bytes };
}

beforeAll(async () => {
  work = await createTempDir('etch-offline-');
  fixtures = await buildRegistryFixtures(work.join('fixtures'));
  archive = work.join('saved.tar');
  // skopeo writes the same `docker save` format docker does (manifest.json, config, layer tars).
  await run('skopeo', [
    'copy',
    '--quiet',
    `oci:${fixtures.layout}:${fixtures.images.layers3.tag}`,
    `docker-archive:${archive}:etch/saved:1`,
  ]);
}, 120_000);
afterAll(async () => {
  await client.close();
  await work.remove();
});

describe('oci: layouts', () => {
  it('resolves a tag through the index by platform and streams verified blobs', async () => {
    const source = openImageSource(`oci:${fixtures.layout}:${fixtures.images.platforms.tag}`, client);
    const arm = await source.resolve({ platform: 'linux/arm/v6' });
    expect(arm.platform).toEqual({ os: 'linux', architecture: 'arm', variant: 'v6' });
    expect(arm.indexDigest).toMatch(/^sha256:/);
    const { bytes } = await readAll(
      openImageSource(`oci:${fixtures.layout}:${fixtures.images.layers3.tag}`, client),
      'linux/amd64',
    );
    expect(bytes).toHaveLength(3);
  });

  it('names the tags it has when asked for one it has not, and refuses a directory that is not a layout', async () => {
    const missing = await openImageSource(`oci:${fixtures.layout}:nope`, client)
      .resolve()
      .catch((e: unknown) => e);
    expect(isEtchError(missing, 'ETCH_NOT_FOUND')).toBe(true);
    expect(String(missing)).toMatch(new RegExp(fixtures.images.layers3.tag));
    expect(
      isEtchError(
        await openImageSource(`oci:${work.path}`, client)
          .resolve()
          .catch((e: unknown) => e),
        'ETCH_NOT_FOUND',
      ),
    ).toBe(true);
  });

  it('refuses a blob whose bytes changed on disk', async () => {
    const copy = work.join('tampered');
    await run('cp', ['-a', fixtures.layout, copy]);
    const source = openImageSource(`oci:${copy}:${fixtures.images.layers3.tag}`, client);
    const image = await source.resolve({ platform: 'linux/amd64' });
    const layer = image.layers[2] as (typeof image.layers)[number];
    const path = join(copy, 'blobs', 'sha256', layer.digest.slice(7));
    const handle = await openFile(path, 'r+');
    await handle.write(Buffer.from([0xff]), 0, 1, 1000);
    await handle.close();
    const error = await (async () => {
      for await (const _ of source.openBlob(layer));
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
  });
});

describe('docker-archive: (docker save)', () => {
  it('presents the archive as a docker v2 image whose layers are the config diff_ids', async () => {
    const source = openImageSource(`docker-archive:${archive}`, client);
    const image = await source.resolve({ platform: 'linux/amd64' });
    const config = JSON.parse(image.configBytes.toString('utf8')) as { rootfs: { diff_ids: string[] } };
    expect(image.layers.map((l) => l.digest)).toEqual(config.rootfs.diff_ids);
    expect(image.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const { bytes } = await readAll(source, 'linux/amd64');
    expect(bytes).toEqual(image.layers.map((l) => l.size));
    expect(source.names(image)).toEqual([{ repository: 'etch/saved', tag: '1' }]);
  });

  it('picks an image by name from an archive path followed by a reference', async () => {
    const source = openImageSource(`docker-archive:${archive}:etch/saved:1`, client);
    expect((await source.resolve({ platform: 'linux/amd64' })).layers).toHaveLength(3);
    const wrong = await openImageSource(`docker-archive:${archive}:etch/other:1`, client)
      .resolve()
      .catch((e: unknown) => e);
    expect(isEtchError(wrong, 'ETCH_NOT_FOUND')).toBe(true);
    expect(String(wrong)).toMatch(/etch\/saved:1/);
  });

  it('refuses a gzip-compressed archive with what to do, and a truncated one', async () => {
    const gz = work.join('saved.tar.gz');
    await run('sh', ['-c', `gzip -c ${archive} > ${gz}`]);
    expect(
      String(
        await openImageSource(`docker-archive:${gz}`, client)
          .resolve()
          .catch((e: unknown) => e),
      ),
    ).toMatch(/gunzip/);
    const cut = work.join('cut.tar');
    await writeFile(cut, (await readFile(archive)).subarray(0, 3000));
    const error = await openImageSource(`docker-archive:${cut}`, client)
      .resolve()
      .catch((e: unknown) => e);
    expect(isEtchError(error), String(error)).toBe(true);
  });
});
