import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@etch/registry';
import { craftTar, createTempDir, rejectionOf, sha256Of, type TempDir } from '@etch/test-utils';
import {
  pushOciArtifact,
  startFaultProxy,
  startRegistryServer,
  type ArtifactBlob,
  type RegistryServer,
} from '@etch/test-utils/system';
import { EciAnnotation, EciMediaType, parseEciSpec } from './eci.js';
import { listCache, openBaseImage } from './open.js';

let registry: RegistryServer;
let dir: TempDir;
let client: RegistryClient;

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

type Blob = ArtifactBlob;

async function push(name: string, tag: string, config: Blob, layers: Blob[]): Promise<void> {
  await pushOciArtifact(dir.path, registry.host, name, tag, config, layers);
}

const ociConfig = (labels: Record<string, string> = {}): Blob => ({
  mediaType: 'application/vnd.oci.image.config.v1+json',
  data: Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [] },
      config: { Labels: labels },
    }),
  ),
});
const eciConfig: Blob = { mediaType: EciMediaType.CONFIG, data: Buffer.from('{"name":"os"}') };
const kernel: Blob = {
  mediaType: 'application/vnd.lfedge.eci.kernel.layer.v1+kernel',
  data: Buffer.from('kern'),
  annotations: { [EciAnnotation.ROLE]: 'kernel', [EciAnnotation.TITLE]: 'kernel' },
};
const rawDisk = (data: Buffer, title = 'disk-root-balena.img', type = 'raw'): Blob => ({
  mediaType: `${EciMediaType.DISK_PREFIX}${type}`,
  data,
  annotations: {
    [EciAnnotation.MEDIA_TYPE]: `${EciMediaType.DISK_PREFIX}${type}`,
    [EciAnnotation.ROLE]: 'disk-root',
    [EciAnnotation.TITLE]: title,
  },
});

const disks = new Map<string, Buffer>();

beforeAll(async () => {
  dir = await createTempDir('etch-baseimage-eci-');
  registry = await startRegistryServer();
  client = new RegistryClient({ dockerConfig: false });
  for (const tag of ['2.58.3_rev1', '2.58.4', '2.80.0-beta.1', 'nightly']) {
    const data = Buffer.concat([Buffer.from(`disk ${tag}\n`), randomBytes(300_000)]);
    disks.set(tag, data);
    await push('eci/os', tag, eciConfig, [kernel, rawDisk(data)]);
  }
  // Legacy, as the code pushes it: the disk tar+gzipped in a standard layer, the role in annotations.
  const legacy = randomBytes(200_000);
  disks.set('legacy', legacy);
  const tar = await craftTar([{ name: 'disk-root-legacy.img', content: legacy }]);
  await push('eci/legacy', '1.0.0', ociConfig(), [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      data: gzipSync(tar),
      annotations: {
        [EciAnnotation.MEDIA_TYPE]: `${EciMediaType.DISK_PREFIX}raw`,
        [EciAnnotation.ROLE]: 'disk-root',
        [EciAnnotation.TITLE]: 'disk-root-legacy.img',
      },
    },
  ]);
  // Legacy, as the docs describe it: an uncompressed tar layer.
  await push('eci/legacy', '1.0.1', ociConfig(), [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      data: tar,
      annotations: { [EciAnnotation.ROLE]: 'disk-root', [EciAnnotation.TITLE]: 'disk-root-legacy.img' },
    },
  ]);
  // A docker-built image: the label says where the disk is (EVE's bits/rootfs.img); a later layer replaces it.
  const early = randomBytes(1000);
  const rootfs = randomBytes(150_000);
  disks.set('label', rootfs);
  await push('eci/label', '3.0.0', ociConfig({ [EciAnnotation.ROOT_LABEL]: '/bits/rootfs.img' }), [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      data: gzipSync(
        await craftTar([
          { name: 'bits/', type: 'directory' },
          { name: 'bits/rootfs.img', content: early },
        ]),
      ),
    },
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      data: gzipSync(await craftTar([{ name: 'etc/os-release', content: Buffer.from('x') }])),
    },
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      data: gzipSync(await craftTar([{ name: 'bits/rootfs.img', content: rootfs }])),
    },
  ]);
  await push('eci/qcow', '1.0.0', eciConfig, [rawDisk(randomBytes(1000), 'disk-root-vm.qcow2', 'qcow2')]);
  await push('eci/plain', '1.0.0', ociConfig(), [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      data: await craftTar([{ name: 'hello', content: Buffer.from('hi') }]),
    },
  ]);
  await push('eci/beta', '2.0.0-beta.1', eciConfig, [rawDisk(randomBytes(1000))]);
}, 120_000);

afterAll(async () => {
  await client?.close();
  await registry?.stop();
  await dir?.remove();
});

describe('eci: specs', () => {
  it('parses tags, selectors and digests, and refuses mixtures', () => {
    expect(parseEciSpec('eci:127.0.0.1:5000/eci/os:2.58.4')).toMatchObject({
      tag: '2.58.4',
      repository: { registry: '127.0.0.1:5000', repository: 'eci/os' },
    });
    expect(parseEciSpec('eci:127.0.0.1:5000/eci/os@^2.58')).toMatchObject({
      selector: { kind: 'range' },
      selectorText: '^2.58',
    });
    expect(parseEciSpec('eci:127.0.0.1:5000/eci/os')).toMatchObject({ selector: { kind: 'latest' } });
    expect(parseEciSpec(`eci:127.0.0.1:5000/eci/os@sha256:${'a'.repeat(64)}`)).toMatchObject({
      digest: `sha256:${'a'.repeat(64)}`,
    });
    expect(() => parseEciSpec('eci:127.0.0.1:5000/eci/os:1.0.0@^1')).toThrow(
      expect.objectContaining({ code: 'ETCH_USAGE' }),
    );
    expect(() => parseEciSpec('eci:127.0.0.1:5000/eci/os@garbage!')).toThrow(
      expect.objectContaining({ code: 'ETCH_USAGE' }),
    );
    expect(() => parseEciSpec('eci:127.0.0.1:5000/ECI/os')).toThrow(expect.objectContaining({ code: 'ETCH_USAGE' }));
  });
});

describe('eci: artifacts in a registry', () => {
  it.each([
    ['@^2.58', '2.58.4'],
    ['@latest', '2.80.0-beta.1'],
    ['@recommended', '2.58.4'],
    ['@2.58.3+rev1', '2.58.3_rev1'],
    [':nightly', 'nightly'],
    ['', '2.80.0-beta.1'],
  ])('eci:…/eci/os%s resolves to %s and streams the disk-root layer', async (suffix, tag) => {
    const cacheDir = dir.join(`cache-${tag}-${suffix.length}`);
    const opened = await openBaseImage(`eci:${registry.host}/eci/os${suffix}`, { registry: client, cacheDir });
    expect(opened).toMatchObject({
      name: 'balena.img',
      size: disks.get(tag)?.length,
      source: { kind: 'eci', resolvedVersion: tag, fromCache: false },
    });
    expect(opened.source.digest).toBe(`sha256:${sha(disks.get(tag) as Buffer)}`);
    expect((await sha256Of(opened.stream)).sha).toBe(sha(disks.get(tag) as Buffer));
  });

  it('serves the second get from the cache, and offline by spec', async () => {
    const cacheDir = dir.join('cache-reuse');
    const spec = `eci:${registry.host}/eci/os@^2.58`;
    (await sha256Of((await openBaseImage(spec, { registry: client, cacheDir })).stream)).sha;
    const again = await openBaseImage(spec, { registry: client, cacheDir });
    expect(again.source).toMatchObject({ fromCache: true, resolvedVersion: '2.58.4' });
    expect((await sha256Of(again.stream)).sha).toBe(sha(disks.get('2.58.4') as Buffer));
    const offline = await openBaseImage(spec, { cacheDir, offline: true });
    expect(offline.source).toMatchObject({ fromCache: true, resolvedVersion: '2.58.4' });
    expect((await sha256Of(offline.stream)).sha).toBe(sha(disks.get('2.58.4') as Buffer));
    expect(
      await rejectionOf(openBaseImage(`eci:${registry.host}/eci/os@^2.80`, { cacheDir, offline: true })),
    ).toMatchObject({ code: 'ETCH_NOT_FOUND' });
  });

  it.each(['1.0.0', '1.0.1'])('reads the legacy format (tar layer annotated disk-root), tag %s', async (tag) => {
    const opened = await openBaseImage(`eci:${registry.host}/eci/legacy:${tag}`, { registry: client, cache: false });
    expect(opened).toMatchObject({
      name: 'legacy.img',
      size: disks.get('legacy')?.length,
      source: { kind: 'eci', resolvedVersion: tag },
    });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(disks.get('legacy') as Buffer));
  });

  it.each(['1.0.0', '1.0.1'])(
    'refuses a legacy layer whose bytes do not match its digest, and caches nothing (tag %s)',
    async (tag) => {
      const proxy = await startFaultProxy(registry);
      try {
        // Deep inside the layer, so the disk file itself is altered, and far past the small config blob.
        proxy.addFault({ kind: 'corrupt', offset: 60_000, path: /\/blobs\//, times: Infinity });
        const cacheDir = dir.join(`cache-corrupt-${tag}`);
        const proxied = new RegistryClient({ dockerConfig: false, retry: { attempts: 1 } });
        const error = await rejectionOf(
          openBaseImage(`eci:${proxy.host}/eci/legacy:${tag}`, { registry: proxied, cacheDir }).then((opened) =>
            sha256Of(opened.stream),
          ),
        );
        expect(error).toMatchObject({ code: 'ETCH_DIGEST_MISMATCH' });
        expect(await listCache(cacheDir)).toEqual([]);
        await proxied.close();
      } finally {
        await proxy.stop();
      }
    },
  );

  it('reads a docker-built image through its org.lfedge.eci.artifact.root label (the top layer wins)', async () => {
    const opened = await openBaseImage(`eci:${registry.host}/eci/label@^3`, { registry: client, cache: false });
    expect(opened).toMatchObject({
      name: 'rootfs.img',
      size: disks.get('label')?.length,
      source: { resolvedVersion: '3.0.0' },
    });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(disks.get('label') as Buffer));
  });

  it('refuses non-raw disks, images without a root disk, missing tags and recommended without releases', async () => {
    const options = { registry: client, cache: false };
    expect(await rejectionOf(openBaseImage(`eci:${registry.host}/eci/qcow:1.0.0`, options))).toMatchObject({
      code: 'ETCH_UNSUPPORTED_MANIFEST',
    });
    expect(await rejectionOf(openBaseImage(`eci:${registry.host}/eci/plain:1.0.0`, options))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
    expect(await rejectionOf(openBaseImage(`eci:${registry.host}/eci/os:9.9.9`, options))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
    expect(await rejectionOf(openBaseImage(`eci:${registry.host}/eci/os@^9`, options))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
    expect(await rejectionOf(openBaseImage(`eci:${registry.host}/eci/beta@recommended`, options))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
    const fallback = await openBaseImage(`eci:${registry.host}/eci/beta@default`, options);
    expect(fallback.source.resolvedVersion).toBe('2.0.0-beta.1');
    fallback.stream.destroy();
  });
});
