/** The original API's entry point to pulls: getManifestsForImages(images, auth) with the seed's auth shapes. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  pushRegistryFixture,
  startBasicAuthRegistry,
  type BasicAuthRegistry,
  type PushedImage,
} from '@etch/test-utils/system';
import { getManifestsForImages } from './resolve-images.js';

let work: TempDir;
let registry: BasicAuthRegistry;
let multi: PushedImage;
const PASSWORD = 'seed-shaped-auth';

beforeAll(async () => {
  work = await createTempDir('etch-legacy-api-');
  const fixtures = await buildRegistryFixtures(work.join('fixtures'));
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
