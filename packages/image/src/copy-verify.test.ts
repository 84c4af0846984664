/**
 * copyImage leaves the digest check of a local source's blobs to the target (a registry checks `?digest=`, a
 * layout hashes its file), so a blob changed on disk must still be refused by each target, and nothing tagged.
 */
import { cp, open } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { RegistryClient, openImageSource, openImageTarget } from '@etch/registry';
import { createTempDir, rejectionOf, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  readLayoutImage,
  run,
  startRegistryServer,
  type RegistryServer,
} from '@etch/test-utils/system';
import { copyImage } from './copy.js';

let work: TempDir;
let registry: RegistryServer;
/** An OCI layout whose third layer has one byte flipped: same size, another digest. */
let corrupted: string;
let tag: string;
let layer: string;

beforeAll(async () => {
  work = await createTempDir('etch-copy-verify-');
  registry = await startRegistryServer();
  const fixtures = await buildRegistryFixtures(work.join('fixtures'));
  tag = fixtures.images.layers3.tag;
  corrupted = work.join('corrupted');
  await cp(fixtures.layout, corrupted, { recursive: true });
  const image = await readLayoutImage(corrupted, tag);
  const last = image.layers.at(-1);
  if (!last) throw new Error('the fixture has no layers');
  layer = last.digest;
  const file = await open(last.path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, 1000);
    byte[0] = (byte[0] ?? 0) ^ 0xff;
    await file.write(byte, 0, 1, 1000);
  } finally {
    await file.close();
  }
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  await work?.remove();
});

describe('copyImage of a local blob changed on disk', () => {
  it('is refused by a registry target as ETCH_DIGEST_MISMATCH, and the tag is not written', async () => {
    const client = new RegistryClient({ dockerConfig: false, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 } });
    const target = `${registry.host}/verify/app:1`;
    try {
      const error = await rejectionOf(
        copyImage(openImageSource(`oci:${corrupted}:${tag}`, client), openImageTarget(target, client)),
      );
      expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
      expect((error as Error).message, 'the error names the blob').toContain(layer);
    } finally {
      await client.close();
    }
    const inspected = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${target}`], {
      allowFailure: true,
    });
    expect(inspected.code, `skopeo found a manifest under the tag: ${inspected.stdout}`).not.toBe(0);
  });

  it('is refused by an oci: target as ETCH_DIGEST_MISMATCH, and the blob is not kept', async () => {
    const client = new RegistryClient({ dockerConfig: false });
    const out = work.join('out');
    try {
      const error = await rejectionOf(
        copyImage(openImageSource(`oci:${corrupted}:${tag}`, client), openImageTarget(`oci:${out}:1`, client)),
      );
      expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
      expect((error as Error).message, 'the error names the blob').toContain(layer);
    } finally {
      await client.close();
    }
    const kept = await open(`${out}/blobs/sha256/${layer.slice(7)}`).then(
      async (file) => (await file.close(), true),
      () => false,
    );
    expect(kept, `the layout kept a blob under ${layer}`).toBe(false);
  });
});
