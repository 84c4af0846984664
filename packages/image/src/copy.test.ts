/**
 * copyImage between real docker-registry instances and OCI layouts: an index copied whole keeps its digest,
 * one registry mounts instead of uploading, a platform can be picked. Upload throughput against `skopeo copy` of
 * the same image is measured by `pnpm bench` (BENCH_ONLY=copy), not here: tests do not time things.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient, openImageSource, openImageTarget } from '@etch/registry';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  inspectPushed,
  pushRegistryFixture,
  run,
  startRegistryServer,
  type PushedImage,
  type RegistryFixtures,
  type RegistryServer,
} from '@etch/test-utils/system';
import { copyImage } from './copy.js';

let work: TempDir;
let fixtures: RegistryFixtures;
let a: RegistryServer;
let b: RegistryServer;
let multi: PushedImage;

function client(): RegistryClient {
  return new RegistryClient({ dockerConfig: false, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 } });
}

/** Upload lines (PATCH/PUT on blobs/uploads) of a repository in a registry's access log. */
async function blobUploads(server: RegistryServer, repository: string): Promise<string[]> {
  return (await server.log())
    .split('\n')
    .filter((l) => !l.includes('level=') && new RegExp(`"(PATCH|PUT) /v2/${repository}/blobs/uploads/`).test(l));
}

beforeAll(async () => {
  work = await createTempDir('etch-copy-');
  fixtures = await buildRegistryFixtures(work.join('fixtures'));
  [a, b] = await Promise.all([startRegistryServer(), startRegistryServer()]);
  multi = await pushRegistryFixture(fixtures.layout, fixtures.images.platforms.tag, `${a.host}/src/multi:1`);
}, 300_000);
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await work?.remove();
});

describe('copyImage', () => {
  it('copies a multi-platform index to another registry whole, with the same digest', async () => {
    const c = client();
    try {
      const result = await copyImage(
        openImageSource(`${a.host}/src/multi:1`, c),
        openImageTarget(`${b.host}/dst/multi:copied`, c),
      );
      expect(result.digest).toBe(multi.digest);
      const copied = await inspectPushed(`${b.host}/dst/multi:copied`);
      expect(copied.digest, 'skopeo reads back the same index digest').toBe(multi.digest);
      expect(copied.manifests?.map((m) => m.digest)).toEqual(multi.manifests?.map((m) => m.digest));
      expect(result.blobs.mounted).toBe(0);
      expect(result.blobs.uploaded).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });

  it('mounts every blob within one registry: no bytes uploaded', async () => {
    const c = client();
    try {
      const result = await copyImage(
        openImageSource(`${a.host}/src/multi:1`, c),
        openImageTarget(`${a.host}/other/multi:1`, c),
      );
      expect(result.digest).toBe(multi.digest);
      expect(result.blobs.uploaded, 'uploads').toBe(0);
      expect(result.blobs.mounted).toBeGreaterThan(0);
      expect(await blobUploads(a, 'other/multi'), 'PATCH/PUT of blobs in the registry log').toEqual([]);
    } finally {
      await c.close();
    }
  });

  it('copies one platform of an index, and round-trips registry → oci: → registry with digests kept', async () => {
    const c = client();
    const layout = work.join('copied-layout');
    try {
      const arm = await copyImage(
        openImageSource(`${a.host}/src/multi:1`, c),
        openImageTarget(`${b.host}/dst/arm:1`, c),
        { platforms: 'linux/arm/v7' },
      );
      const entry = multi.manifests?.find((m) => m.platform?.architecture === 'arm' && m.platform.variant === 'v7');
      expect(arm.digest, 'the arm/v7 manifest, as the index names it').toBe(entry?.digest);

      const toLayout = await copyImage(
        openImageSource(`${a.host}/src/multi:1`, c),
        openImageTarget(`oci:${layout}:v1`, c),
      );
      expect(toLayout.digest).toBe(multi.digest);
      const back = await copyImage(openImageSource(`oci:${layout}:v1`, c), openImageTarget(`${b.host}/dst/back:v1`, c));
      expect(back.digest).toBe(multi.digest);
      expect((await inspectPushed(`${b.host}/dst/back:v1`)).digest).toBe(multi.digest);
      // skopeo can read what was written as an OCI layout.
      const inspected = await run('skopeo', ['inspect', '--raw', `oci:${layout}:v1`]);
      expect(`sha256:${createHash('sha256').update(inspected.stdoutBuffer).digest('hex')}`).toBe(multi.digest);
    } finally {
      await c.close();
    }
  });
});
