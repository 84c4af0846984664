/**
 * Acceptance against the real engine: a store written by createEtch({ images }) into a `.etch`, extracted with
 * GNU tar and opened by Debian's dockerd, must be indistinguishable from what a fresh dockerd leaves after
 * `docker pull` of the same images from the same registry.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildPreloadFixtures,
  containerFingerprint,
  engineImageRows,
  pushFixture,
  readLayoutImage,
  run,
  startDockerd,
  startRegistryServer,
  type Dockerd,
  type RegistryServer,
} from '@etch/test-utils/system';
import type { StoreImage, StoredImage } from '@etch/docker-store';
import { createEtch } from './create.js';

const DATA_PARTITION = 6;

interface Pushed {
  /** Familiar repository name, as docker shows it. */
  repository: string;
  tag: string;
  /** The digest a pull by tag records: the index digest for a multi-arch tag. */
  digest: string;
}

let work: TempDir;
let registry: RegistryServer;
let preloaded: Dockerd;
let pulled: Dockerd;
let stored: StoredImage[];
const pushed: Record<string, Pushed> = {};

async function storeImageFor(layout: string, tag: string, push: Pushed): Promise<StoreImage> {
  const image = await readLayoutImage(layout, tag);
  return {
    config: image.config,
    configDigest: image.configDigest,
    layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, open: async () => createReadStream(l.path) })),
    names: [{ repository: push.repository, tag: push.tag, digest: push.digest }],
    sourceRepository: push.repository,
  };
}

/** Extended attributes of a path in an image's layer directories, as getfattr prints them (hex values). */
async function layerXattrs(engine: Dockerd, ref: string, path: string): Promise<string> {
  const inspect = await engine.docker([
    'image',
    'inspect',
    '--format',
    '{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}',
    ref,
  ]);
  const dirs = inspect.stdout
    .trim()
    .split(':')
    .filter((d) => d !== '' && d !== '<no value>');
  for (const dir of dirs) {
    const found = await stat(join(dir, path)).then(
      () => true,
      () => false,
    );
    if (!found) continue;
    const attrs = await run('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', join(dir, path)]);
    return attrs.stdout.split('\n').slice(1).filter(Boolean).sort().join('\n');
  }
  throw new Error(`${path} is in no layer of ${ref}`);
}

beforeAll(async () => {
  work = await createTempDir('etch-engine-');
  const fixtures = await buildPreloadFixtures(work.path);
  registry = await startRegistryServer();
  for (const key of ['a', 'b', 'multi', 'later'] as const) {
    const repository = `${registry.host}/etch/${key}`;
    await pushFixture(fixtures.layout, fixtures.images[key].tag, `${repository}:v1`);
    const image = await readLayoutImage(fixtures.layout, fixtures.images[key].tag);
    pushed[key] = { repository, tag: 'v1', digest: image.indexDigest ?? image.manifestDigest };
  }

  // The preload: a, b and multi (not `later`, which is pulled afterwards) into partition 6 of a .etch.
  const base = join(work.path, 'base.img');
  await writeFile(base, Buffer.alloc(1024 * 1024));
  const images = await Promise.all(
    (['a', 'b', 'multi'] as const).map((key) =>
      storeImageFor(fixtures.layout, fixtures.images[key].tag, pushed[key] as Pushed),
    ),
  );
  const etch = join(work.path, 'preload.etch');
  const result = await createEtch({
    base: { name: 'base.img', size: 1024 * 1024, stream: createReadStream(base) },
    images: { partition: DATA_PARTITION, images },
    output: createWriteStream(etch),
  });
  stored = result.images;

  // An independent reader: GNU tar, as root, keeping owners, modes, xattrs and device nodes.
  const extracted = join(work.path, 'extracted');
  await mkdir(extracted);
  await run('tar', [
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '-p',
    '-x',
    '-f',
    etch,
    '-C',
    extracted,
    `inject/${DATA_PARTITION}/docker`,
  ]);

  preloaded = await startDockerd({ dataRoot: join(extracted, 'inject', String(DATA_PARTITION), 'docker') });
  pulled = await startDockerd();
  for (const key of ['a', 'b', 'multi'] as const) await pulled.docker(['pull', `${pushed[key]?.repository}:v1`]);
}, 300_000);

afterAll(async () => {
  await preloaded?.stop();
  await pulled?.stop();
  await registry?.stop();
  await work?.remove();
});

describe('a preloaded store opened by dockerd', () => {
  it('lists the same repositories, tags, image IDs and digests as a pull', async () => {
    const ours = await engineImageRows(preloaded, registry.host);
    const theirs = await engineImageRows(pulled, registry.host);
    expect(ours).toHaveLength(3);
    expect(ours).toEqual(theirs);
    expect(stored.map((s) => s.imageId).sort()).toEqual(ours.map((line) => line.split(' ')[2]).sort());
  });

  it.each(['a', 'b', 'multi'])('gives containers of %s the same filesystem as a pull', async (key) => {
    const ref = `${pushed[key]?.repository}:v1`;
    const ours = await containerFingerprint(preloaded, ref);
    expect(ours).toContain('hardlink ok');
    expect(ours).toEqual(await containerFingerprint(pulled, ref));
  });

  it('applies whiteouts and opaque directories, and keeps setuid, owners, links and odd names', async () => {
    const seen = await containerFingerprint(preloaded, `${pushed.a?.repository}:v1`);
    expect(seen).not.toMatch(/^\/del\/x /m);
    expect(seen).toMatch(/^\/del\/kept file /m);
    expect(seen).not.toMatch(/^\/opq\/old1 /m);
    expect(seen).not.toMatch(/^\/opq\/sub/m);
    expect(seen).toMatch(/^\/opq\/new file /m);
    expect(seen).toMatch(/^\/suid file 4755 1000:1000 /m);
    expect(seen).toMatch(/^\/etc\/shadow file 0 0:0 /m);
    expect(seen).toMatch(/^\/tmp directory 1777 /m);
    expect(seen).toMatch(/^\/bin\/sh link busybox /m);
    expect(seen).toMatch(/^\/bin\/ls link \/bin\/busybox /m);
    expect(seen).toMatch(/^\/empty directory 755 /m);
    expect(seen).toContain('/unicode/naïve-ünïcödé-名前.txt file');
    expect(seen).toContain(`/long/${'d'.repeat(120)}/${'f'.repeat(120)}.txt file`);
  });

  it('keeps binary and user xattrs on layer files, like a pull', async () => {
    const ref = `${pushed.a?.repository}:v1`;
    const ours = await layerXattrs(preloaded, ref, 'cap');
    expect(ours).toContain('security.capability=0x0100000200040000000000000000000000000000');
    expect(ours).toContain('user.etch=0x');
    expect(ours).toEqual(await layerXattrs(pulled, ref, 'cap'));
    expect(await layerXattrs(preloaded, ref, 'opq')).toContain('trusted.overlay.opaque=0x79');
  });

  it('lets docker save export a preloaded image whose layers hash to the config diffIDs', async () => {
    const ref = `${pushed.a?.repository}:v1`;
    const out = join(work.path, 'saved');
    await mkdir(out);
    await preloaded.docker(['save', '-o', join(out, 'a.tar'), ref]);
    await run('tar', ['-x', '-f', join(out, 'a.tar'), '-C', out]);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as {
      Config: string;
      Layers: string[];
    }[];
    const config = JSON.parse(await readFile(join(out, manifest[0]?.Config as string), 'utf8')) as {
      rootfs: { diff_ids: string[] };
    };
    const hashes: string[] = [];
    for (const layer of manifest[0]?.Layers ?? []) {
      const sum = await run('sha256sum', [join(out, layer)]);
      hashes.push(`sha256:${sum.stdout.split(' ')[0]}`);
    }
    expect(hashes).toEqual(config.rootfs.diff_ids);
  });

  it('reuses preloaded layers when a later image shares them', async () => {
    const result = await preloaded.docker(['pull', `${pushed.later?.repository}:v1`]);
    expect(result.stdout).toMatch(/Already exists/);
    const run1 = await preloaded.docker([
      'run',
      '--rm',
      '--network',
      'none',
      `${pushed.later?.repository}:v1`,
      '/bin/busybox',
      'cat',
      '/later.txt',
      '/data/hard.txt',
    ]);
    expect(run1.stdout).toBe('pulled later\none inode, two names\n');
  });

  it('loads without layer or image errors in the daemon log', async () => {
    const log = await preloaded.log();
    expect(log).not.toMatch(
      /failed to load layer|not restoring image|invalid image|failed to get layer|no such file or directory.*layerdb/i,
    );
    const dirs = await readdir(join(preloaded.dataRoot, 'image', 'overlay2', 'layerdb', 'sha256'));
    expect(dirs.length).toBeGreaterThanOrEqual(4);
  });
});
