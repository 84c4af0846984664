/**
 * copyImage between real docker-registry instances, OCI layouts and docker archives: an index copied whole keeps
 * its digest, one registry mounts instead of uploading, a platform can be picked, and a real dockerd gives the
 * same image ID for an archive it loads and for the same image pulled after etch pushed it (and back). Upload throughput against `skopeo copy` of
 * the same image is measured by `pnpm bench` (BENCH_ONLY=copy), not here: tests do not time things.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient, openImageSource, openImageTarget } from '@etch/registry';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  DOCKERD_TOOLS,
  buildRegistryFixtures,
  ensureTools,
  inspectPushed,
  pushRegistryFixture,
  run,
  startDockerd,
  startRegistryServer,
  type Dockerd,
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
let engine: Dockerd;

function client(): RegistryClient {
  return new RegistryClient({ dockerConfig: false, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 } });
}

/** Upload lines (PATCH/PUT on blobs/uploads) of a repository in a registry's access log. */
async function blobUploads(server: RegistryServer, repository: string): Promise<string[]> {
  return (await server.log())
    .split('\n')
    .filter((l) => !l.includes('level=') && new RegExp(`"(PATCH|PUT) /v2/${repository}/blobs/uploads/`).test(l));
}

/** The image ID the engine gives `ref`. */
async function imageId(ref: string): Promise<string> {
  return (await engine.docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
}

beforeAll(async () => {
  ensureTools(DOCKERD_TOOLS);
  work = await createTempDir('etch-copy-');
  fixtures = await buildRegistryFixtures(work.join('fixtures'));
  [a, b, engine] = await Promise.all([startRegistryServer(), startRegistryServer(), startDockerd()]);
  multi = await pushRegistryFixture(fixtures.layout, fixtures.images.platforms.tag, `${a.host}/src/multi:1`);
}, 300_000);
afterAll(async () => {
  await engine?.stop();
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

  it('docker-archive: → registry → docker pull gives the image ID docker load gives for the archive', async () => {
    // A docker save archive as skopeo writes it (legacy layout, uncompressed layer.tar files).
    const archive = work.join('saved.tar');
    await run('skopeo', [
      'copy',
      '--quiet',
      `oci:${fixtures.layout}:layers3`,
      `docker-archive:${archive}:etch/saved:1`,
    ]);
    const loaded = await engine.docker(['load', '-i', archive]);
    expect(loaded.stdout, 'docker load names the image').toContain('etch/saved:1');
    const fromLoad = await imageId('etch/saved:1');
    const c = client();
    try {
      const result = await copyImage(
        openImageSource(`docker-archive:${archive}`, c),
        openImageTarget(`${b.host}/from/archive:1`, c),
      );
      expect(result.manifests).toEqual([result.digest]);
      await engine.docker(['pull', '-q', `${b.host}/from/archive:1`]);
      expect(await imageId(`${b.host}/from/archive:1`), 'image ID after docker pull vs after docker load').toBe(
        fromLoad,
      );
    } finally {
      await c.close();
      await engine.docker(['rmi', '-f', fromLoad]);
    }
  });

  it('registry index → docker-archive: (the host platform) → docker load gives the image ID docker pull gives', async () => {
    const archive = work.join('written.tar');
    const c = client();
    const target = openImageTarget(`docker-archive:${archive}:etch/written:1`, c);
    try {
      const result = await copyImage(openImageSource(`${a.host}/src/multi:1`, c), target);
      const amd64 = multi.manifests?.find((m) => m.platform?.architecture === 'amd64');
      expect(result.digest, 'the linux/amd64 manifest of the index').toBe(amd64?.digest);
      const loaded = await engine.docker(['load', '-i', archive]);
      expect(loaded.stdout, 'docker load names the image as asked').toContain('etch/written:1');
      await engine.docker(['pull', '-q', `${a.host}/src/multi:1`]);
      expect(await imageId('etch/written:1'), 'image ID after docker load vs after docker pull').toBe(
        await imageId(`${a.host}/src/multi:1`),
      );
      // And etch reads back what it wrote, layers compressed as the registry had them.
      const back = await copyImage(
        openImageSource(`docker-archive:${archive}`, c),
        openImageTarget(`${b.host}/from/written:1`, c),
      );
      expect(back.blobs.uploaded, 'config and layers uploaded from the archive').toBeGreaterThan(1);
      expect((await inspectPushed(`${b.host}/from/written:1`)).digest).toBe(back.digest);
    } finally {
      await target.close();
      await c.close();
    }
  });
});
