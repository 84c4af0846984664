/**
 * copyImage between real docker-registry instances and OCI layouts: an index copied whole keeps its digest,
 * one registry mounts instead of uploading, a platform can be picked, and upload throughput is measured against
 * `skopeo copy` of the same image in the same run.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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

  it('uploads at least as fast as skopeo copy of the same image (measured in this run)', async () => {
    // One 64 MiB incompressible layer in an OCI layout, pushed to two fresh registries: by copyImage and by skopeo.
    const layout = work.join('big-layout');
    const size = 64 * 1024 * 1024;
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    // AES-CTR over zeros: incompressible, the same on every run, and fast to make.
    const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16, 0));
    const layer = Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
    const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
    const blob = async (bytes: Buffer) => {
      const hex = sha(bytes);
      await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
      return `sha256:${hex}`;
    };
    const layerDigest = await blob(layer);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] },
      }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: await blob(config),
          size: config.length,
        },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size }],
      }),
    );
    const manifestDigest = await blob(manifest);
    await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(
      join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: manifestDigest,
            size: manifest.length,
            annotations: { 'org.opencontainers.image.ref.name': 'big' },
          },
        ],
      }),
    );
    const [ours, theirs] = await Promise.all([startRegistryServer(), startRegistryServer()]);
    const c = client();
    try {
      let started = performance.now();
      const result = await copyImage(openImageSource(`oci:${layout}:big`, c), openImageTarget(`${ours.host}/big:1`, c));
      const etchSeconds = (performance.now() - started) / 1000;
      expect(result.digest).toBe(manifestDigest);
      started = performance.now();
      await run('skopeo', [
        'copy',
        '--quiet',
        '--preserve-digests',
        '--dest-tls-verify=false',
        `oci:${layout}:big`,
        `docker://${theirs.host}/big:1`,
      ]);
      const skopeoSeconds = (performance.now() - started) / 1000;
      const mib = size / 1024 / 1024;
      console.log(
        `upload of a ${mib} MiB image: etch ${etchSeconds.toFixed(2)} s (${(mib / etchSeconds).toFixed(0)} MiB/s), skopeo copy ${skopeoSeconds.toFixed(2)} s (${(mib / skopeoSeconds).toFixed(0)} MiB/s)`,
      );
      // The goal is "not slower"; on a shared 2-core machine one run can be off by 2x either way, so only a
      // gross regression fails here and the numbers above are what gets reported.
      expect(etchSeconds, `etch ${etchSeconds.toFixed(2)} s vs skopeo ${skopeoSeconds.toFixed(2)} s`).toBeLessThan(
        skopeoSeconds * 3,
      );
    } finally {
      await c.close();
      await Promise.all([ours.stop(), theirs.stop()]);
    }
  });
});
