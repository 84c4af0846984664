/** `etch manifest` and the image flags of `etch create`, against a real docker-registry with skopeo-pushed fixtures. */
import { readdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  makeBalenaLikeImage,
  pushRegistryFixture,
  startRegistryServer,
  type PushedImage,
  type RegistryFixtures,
  type RegistryServer,
} from '@etch/test-utils/system';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
let registry: RegistryServer;
let fixtures: RegistryFixtures;
let multi: PushedImage;
let single: PushedImage;

const etch = (args: string[]) => runCli(args, { cwd: dir.path });

beforeAll(async () => {
  dir = await createTempDir('etch-registry-cli-');
  fixtures = await buildRegistryFixtures(dir.join('fixtures'));
  registry = await startRegistryServer();
  multi = await pushRegistryFixture(fixtures.layout, fixtures.images.platforms.tag, `${registry.host}/etch/multi:1`);
  single = await pushRegistryFixture(fixtures.layout, fixtures.images.layers3.tag, `${registry.host}/etch/single:1`);
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 4 });
  await makeBalenaLikeImage(dir.join('other.img'), { dataMiB: 4 });
  await writeFile(dir.join('os.zip'), 'not really a zip, never read');
}, 180_000);
afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
});

describe('etch manifest', () => {
  it('prints the platform manifest, the index it came through, config and layers as JSON', async () => {
    const result = await etch(['manifest', `${registry.host}/etch/multi:1`, '--platform', 'linux/arm/v7', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const { schemaVersion, image } = JSON.parse(result.stdout);
    const entry = multi.manifests?.find((m) => m.platform?.architecture === 'arm' && m.platform.variant === 'v7');
    expect(schemaVersion).toBe(1);
    expect(image).toMatchObject({
      reference: `${registry.host}/etch/multi:1`,
      digest: entry?.digest,
      indexDigest: multi.digest,
      platform: 'linux/arm/v7',
      imageId: entry?.config?.digest,
      config: { digest: entry?.config?.digest, size: entry?.config?.size },
    });
    expect(image.layers).toEqual(
      entry?.layers?.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
    );
  });

  it('prints a human report on stdout without --json', async () => {
    const result = await etch(['manifest', `${registry.host}/etch/single:1`, '--platform', 'linux/amd64']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).toContain(single.digest);
    expect(result.stdout).toMatch(/layers +3/);
  });

  it.each([
    ['a missing tag', ['manifest', 'REG/etch/single:nope', '--platform', 'linux/amd64'], 1, 'ETCH_NOT_FOUND'],
    ['a missing repository', ['manifest', 'REG/etch/absent:1', '--platform', 'linux/amd64'], 1, 'ETCH_NOT_FOUND'],
    [
      'a platform the index lacks',
      ['manifest', 'REG/etch/multi:1', '--platform', 'linux/riscv64'],
      1,
      'ETCH_PLATFORM_NOT_FOUND',
    ],
    ['a bad reference', ['manifest', 'REG/Etch/UPPER:1'], 2, 'ETCH_USAGE'],
    ['a bad platform', ['manifest', 'REG/etch/multi:1', '--platform', 'linux//x'], 2, 'ETCH_USAGE'],
  ])('exits non-zero on %s with a one-line error naming the code', async (_what, args, code, name) => {
    const result = await etch(args.map((a) => a.replace('REG', registry.host)));
    expect(result.code).toBe(code);
    expect(result.stderr.split('\n')[0]).toMatch(new RegExp(`^etch: ${name}: `));
    if (code !== 2) expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('etch create with images', () => {
  it.each([
    ['--image without --platform', ['--image', 'REG/etch/single:1'], /--platform is required/],
    ['--platform without --image', ['--platform', 'linux/amd64'], /only apply when preloading/],
    [
      'both base repository options',
      [
        '--image',
        'REG/etch/single:1',
        '--platform',
        'linux/amd64',
        '--repositories',
        'x.json',
        '--ignore-base-repositories',
      ],
      /contradict/,
    ],
    [
      'a zip base without a repositories choice',
      ['--image', 'REG/etch/single:1', '--platform', 'linux/amd64', '--base', 'os.zip'],
      /--repositories FILE/,
    ],
  ])('refuses %s before writing anything', async (_what, extra, message) => {
    const args = [
      'create',
      '--base',
      'base.img',
      '-o',
      'out.etch',
      ...extra.map((a) => a.replace('REG', registry.host)),
    ];
    const base = args.indexOf('--base', 2);
    if (base !== -1 && args.indexOf('--base') !== base) args.splice(1, 2);
    const result = await etch(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect((await readdir(dir.path)).filter((n) => n.includes('out.etch'))).toEqual([]);
  });

  it('fails fast on a platform the image lacks, naming the ones it has, and leaves no output', async () => {
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--image',
      `${registry.host}/etch/multi:1`,
      '--platform',
      'linux/ppc64le',
      '-o',
      'out.etch',
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/ETCH_PLATFORM_NOT_FOUND.*linux\/arm\/v6/);
    expect((await readdir(dir.path)).filter((n) => n.includes('out.etch'))).toEqual([]);
  });

  it('writes the images for the platform asked for and summarises them as JSON', async () => {
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--image',
      `${registry.host}/etch/multi:1`,
      '--platform',
      'linux/aarch64',
      '-o',
      'arm.etch',
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    const arm64 = multi.manifests?.find((m) => m.platform?.architecture === 'arm64');
    expect(summary.images).toMatchObject([
      { platform: 'linux/arm64', digest: arm64?.digest, indexDigest: multi.digest, imageId: arm64?.config?.digest },
    ]);
    const inspected = JSON.parse((await etch(['inspect', 'arm.etch', '--json'])).stdout);
    expect(inspected.images).toMatchObject([
      {
        tags: [`${registry.host}/etch/multi:1`],
        digests: [`${registry.host}/etch/multi@${multi.digest}`],
        imageId: arm64?.config?.digest,
        partition: 6,
        preloaded: true,
      },
    ]);
  });
});
