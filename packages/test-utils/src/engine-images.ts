import { createHash } from 'node:crypto';
import { chmod, chown, copyFile, link, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './run.js';

/** A tag in the fixture OCI layout and what it holds. */
export interface FixtureImage {
  /** Tag in the OCI layout. */
  tag: string;
  /** What it is for, in the test names. */
  description: string;
}

/** The fixture layout and its tags. */
export interface PreloadFixtures {
  /** OCI image layout directory built by umoci. */
  layout: string;
  /** `a`: base layer + whiteouts/opaque layer; `b`: the same base layer + another (shares a layer with `a`);
   * `multi`: an OCI index for linux/amd64, linux/arm64/v8, linux/arm/v7 whose amd64 entry is runnable. */
  images: { a: FixtureImage; b: FixtureImage; multi: FixtureImage; later: FixtureImage };
}

// security.capability v2 with cap_net_bind_service permitted and effective: binary, not valid UTF-8.
const CAPABILITY = '0x0100000200040000000000000000000000000000';

async function file(path: string, content: string, mode = 0o644, owner?: [number, number]): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, content);
  if (owner) await chown(path, owner[0], owner[1]);
  await chmod(path, mode);
}

async function tarLayer(dir: string, out: string): Promise<string> {
  await run('tar', [
    '--format=pax',
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '--sort=name',
    '-C',
    dir,
    '-cf',
    out,
    '.',
  ]);
  return out;
}

/** The base layer: every kind of entry a layer can hold that the store must reproduce. */
async function baseLayer(root: string): Promise<void> {
  await mkdir(join(root, 'bin'), { recursive: true });
  await copyFile('/bin/busybox', join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  await symlink('busybox', join(root, 'bin/sh'));
  await symlink('/bin/busybox', join(root, 'bin/ls'));
  await file(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n');
  await file(join(root, 'etc/shadow'), 'root:*:19000::::::\n', 0o000);
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
  await file(join(root, 'del/x'), 'deleted by the next layer\n');
  await file(join(root, 'del/kept'), 'stays\n');
  await file(join(root, 'opq/old1'), 'hidden by the opaque dir\n');
  await file(join(root, 'opq/sub/old2'), 'also hidden\n');
  await file(join(root, 'data/file.txt'), 'one inode, two names\n');
  await link(join(root, 'data/file.txt'), join(root, 'data/hard.txt'));
  await file(join(root, 'suid'), '#!/bin/sh\necho suid\n', 0o4755, [1000, 1000]);
  await file(join(root, 'cap'), 'capable\n', 0o755);
  await run('setfattr', ['-n', 'security.capability', '-v', CAPABILITY, join(root, 'cap')]);
  await run('setfattr', ['-n', 'user.etch', '-v', 'preloaded', join(root, 'cap')]);
  const long = join(root, 'long', 'd'.repeat(120));
  await file(join(long, `${'f'.repeat(120)}.txt`), 'a long name\n');
  await file(join(root, 'unicode', 'naïve-ünïcödé-名前.txt'), 'non-ASCII\n');
  await mkdir(join(root, 'empty'));
}

/**
 * Builds the images of the docker-store acceptance with umoci, from layer tars made by GNU tar: a base
 * layer with busybox, hardlinks, relative and absolute symlinks, a setuid file owned by 1000, binary and
 * user xattrs, a long and a non-ASCII name, an empty dir and a 0000 file; a layer with a file whiteout and an
 * opaque directory replaced by new content; images sharing the base layer; and a multi-arch index.
 */
export async function buildPreloadFixtures(work: string): Promise<PreloadFixtures> {
  const ldd = await run('ldd', ['/bin/busybox'], { allowFailure: true });
  if (ldd.code === 0)
    throw new Error(
      '/bin/busybox is dynamically linked; the test images need busybox-static (apt-get install busybox-static).',
    );
  const layout = join(work, 'layout');
  const stage = (name: string) => join(work, 'stage', name);

  await baseLayer(stage('base'));
  await file(join(stage('a'), 'del/.wh.x'), '');
  await file(join(stage('a'), 'opq/.wh..wh..opq'), '');
  await file(join(stage('a'), 'opq/new'), 'replaces the old contents\n');
  await file(join(stage('a'), 'data/changed.txt'), 'layer two\n');
  await file(join(stage('b'), 'b.txt'), 'image b\n');
  await file(join(stage('multi'), 'multi.txt'), 'multi-arch\n');
  await file(join(stage('later'), 'later.txt'), 'pulled later\n');
  const tars: Record<string, string> = {};
  for (const name of ['base', 'a', 'b', 'multi', 'later'])
    tars[name] = await tarLayer(stage(name), join(work, `${name}.tar`));

  await run('umoci', ['init', '--layout', layout]);
  const image = async (tag: string, layers: string[], arch = 'amd64') => {
    await run('umoci', ['new', '--image', `${layout}:${tag}`]);
    for (const layer of layers)
      await run('umoci', ['raw', 'add-layer', '--image', `${layout}:${tag}`, tars[layer] as string]);
    await run('umoci', [
      'config',
      '--image',
      `${layout}:${tag}`,
      '--architecture',
      arch,
      '--os',
      'linux',
      '--config.cmd',
      '/bin/sh',
    ]);
  };
  await image('a', ['base', 'a']);
  await image('b', ['base', 'b']);
  await image('later', ['base', 'later']);
  await image('multi-amd64', ['base', 'multi']);
  await image('multi-arm64', ['base', 'multi'], 'arm64');
  await image('multi-armv7', ['base', 'multi'], 'arm');

  // umoci makes single-platform images; the index over them is written by hand, as the spec describes it.
  const indexPath = join(layout, 'index.json');
  const top = JSON.parse(await readFile(indexPath, 'utf8')) as {
    manifests: { digest: string; size: number; mediaType: string; annotations?: Record<string, string> }[];
  };
  const byTag = (tag: string) =>
    top.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  const platforms: [string, Record<string, string>][] = [
    ['multi-amd64', { architecture: 'amd64', os: 'linux' }],
    ['multi-arm64', { architecture: 'arm64', os: 'linux', variant: 'v8' }],
    ['multi-armv7', { architecture: 'arm', os: 'linux', variant: 'v7' }],
  ];
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: platforms.map(([tag, platform]) => {
        const entry = byTag(tag);
        return { mediaType: entry?.mediaType, digest: entry?.digest, size: entry?.size, platform };
      }),
    }),
  );
  const indexHex = createHash('sha256').update(index).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', indexHex), index);
  top.manifests.push({
    mediaType: 'application/vnd.oci.image.index.v1+json',
    digest: `sha256:${indexHex}`,
    size: index.length,
    annotations: { 'org.opencontainers.image.ref.name': 'multi' },
  });
  await writeFile(indexPath, JSON.stringify(top));

  return {
    layout,
    images: {
      a: { tag: 'a', description: 'whiteouts and an opaque directory over the base layer' },
      b: { tag: 'b', description: 'shares the base layer with a' },
      multi: { tag: 'multi', description: 'OCI index: linux/amd64, linux/arm64/v8, linux/arm/v7' },
      later: { tag: 'later', description: 'pulled after start-up, shares the base layer' },
    },
  };
}

/**
 * Pushes a tag of the layout to a loopback registry with skopeo (`--all` keeps an index whole).
 * `format: 'v2s2'` converts to the docker schema 2 manifest type.
 */
export async function pushFixture(
  layout: string,
  tag: string,
  destination: string,
  format: 'oci' | 'v2s2' = 'oci',
): Promise<void> {
  await run('skopeo', [
    'copy',
    '--all',
    '--dest-tls-verify=false',
    ...(format === 'v2s2' ? ['--format', 'v2s2'] : []),
    `oci:${layout}:${tag}`,
    `docker://${destination}`,
  ]);
}

/** An image read straight from an OCI layout: for tests that need the exact blobs a registry will serve. */
export interface LayoutImage {
  manifestDigest: string;
  /** Set when the tag names an index; the manifest is then its linux/amd64 entry. */
  indexDigest?: string;
  config: Buffer;
  configDigest: string;
  layers: { digest: string; size: number; mediaType: string; path: string }[];
}

/** Reads a tag of an OCI layout (following an index to its linux/amd64 entry). */
export async function readLayoutImage(layout: string, tag: string): Promise<LayoutImage> {
  const blob = (digest: string) => join(layout, 'blobs', 'sha256', digest.slice(7));
  const json = async (digest: string) => JSON.parse(await readFile(blob(digest), 'utf8')) as Record<string, any>;
  const top = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Record<string, any>[] };
  const entry = top.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`no tag ${tag} in ${layout}`);
  let manifestDigest = entry.digest as string;
  let indexDigest: string | undefined;
  if (String(entry.mediaType).includes('index')) {
    indexDigest = manifestDigest;
    const index = await json(manifestDigest);
    const amd64 = (index.manifests as Record<string, any>[]).find((m) => m.platform?.architecture === 'amd64');
    manifestDigest = amd64?.digest as string;
  }
  const manifest = await json(manifestDigest);
  const config = await readFile(blob(manifest.config.digest));
  return {
    manifestDigest,
    ...(indexDigest ? { indexDigest } : {}),
    config,
    configDigest: manifest.config.digest,
    layers: (manifest.layers as Record<string, any>[]).map((l) => ({
      digest: l.digest,
      size: l.size,
      mediaType: l.mediaType,
      path: blob(l.digest),
    })),
  };
}
