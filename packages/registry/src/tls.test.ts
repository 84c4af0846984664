/** HTTPS first, as docker does: a TLS registry with a private CA, trusted through the `ca` option. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  makeLoopbackCertificate,
  pushRegistryFixture,
  startRegistryServer,
  type LoopbackCertificate,
  type PushedImage,
  type RegistryServer,
} from '@etch/test-utils/system';
import { RegistryClient } from './registry-client.js';

let work: TempDir;
let cert: LoopbackCertificate;
let registry: RegistryServer;
let pushed: PushedImage;

beforeAll(async () => {
  work = await createTempDir('etch-tls-');
  cert = await makeLoopbackCertificate(work.path);
  registry = await startRegistryServer('', { tls: cert });
  const fixtures = await buildRegistryFixtures(work.join('fixtures'));
  // skopeo pushes with --dest-tls-verify=false: the client under test is what must verify.
  pushed = await pushRegistryFixture(fixtures.layout, fixtures.images.layers3.tag, `${registry.host}/etch/tls:1`);
}, 120_000);
afterAll(async () => {
  await registry?.stop();
  await work?.remove();
});

describe('TLS registries', () => {
  it('pulls over HTTPS from a registry whose certificate a custom CA signs', async () => {
    const client = new RegistryClient({ dockerConfig: false, ca: cert.ca });
    const image = await client.resolve(`${registry.host}/etch/tls:1`, { platform: 'linux/amd64' });
    expect(image.digest).toBe(pushed.digest);
    expect(client.baseUrl(registry.host)).toBe(`https://${registry.host}`);
    for await (const _ of client.openBlob(
      `${registry.host}/etch/tls:1`,
      image.layers[0] as (typeof image.layers)[number],
    ));
    await client.close();
  });

  it('does not fall back to trusting an unknown certificate, and says what HTTPS failed with', async () => {
    const client = new RegistryClient({ dockerConfig: false, retry: { attempts: 1 } });
    const error = await client
      .resolve(`${registry.host}/etch/tls:1`, { platform: 'linux/amd64' })
      .catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_NETWORK'), String(error)).toBe(true);
    expect(String(error)).toMatch(/HTTPS failed first: .*(certificate|self.signed)/i);
    await client.close();
  });
});
