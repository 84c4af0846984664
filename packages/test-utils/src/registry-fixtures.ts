import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { FixtureImage } from './engine-images.js';
import { run } from './run.js';

/** An OCI platform, as an index entry names it. */
export interface FixturePlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The registry-client fixture layout and its tags. */
export interface RegistryFixtures {
  /** OCI image layout directory built by umoci (plus hand-written blobs). */
  layout: string;
  images: {
    /** Three gzip layers: `layer-1.txt`, `layer-2/layer-2.txt`, and `layer-3.bin` (512 KiB that does not compress, for Range and cut tests). */
    layers3: FixtureImage;
    /** The same image as `layers3` with its layers stored uncompressed (`application/vnd.oci.image.layer.v1.tar`). */
    uncompressed: FixtureImage;
    /**
     * An OCI index: an attestation-like entry first (`unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`),
     * then linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6. Each platform image holds one file, `/platform`,
     * whose content is `os/architecture[/variant]\n`.
     */
    platforms: FixtureImage;
    /** The four platform entries of `platforms` without the attestation: the one to push as a Docker manifest list (`format: 'v2s2'`). */
    platformsPlain: FixtureImage;
  };
  /** The platforms of the `platforms` index, in index order (the attestation entry left out). */
  platforms: FixturePlatform[];
  /** The file every platform image holds, and what it says for a platform. */
  platformFile: { path: string; content(platform: FixturePlatform): string };
}

/** A descriptor as manifests and indexes hold it. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: FixturePlatform;
  annotations?: Record<string, string>;
}

interface OciIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

interface OciManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const REF_NAME = 'org.opencontainers.image.ref.name';

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** `bytes` that gzip cannot shrink, the same on every run. */
function incompressible(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let offset = 0, counter = 0; offset < bytes; offset += 32, counter++) {
    createHash('sha256').update(`etch-layer-3-${counter}`).digest().copy(out, offset);
  }
  return out;
}

function platformName(platform: FixturePlatform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

/** Reads, edits and writes the blobs and `index.json` of an OCI layout. */
class Layout {
  constructor(readonly dir: string) {}

  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  async readJson<T>(digest: string): Promise<T> {
    return JSON.parse(await readFile(this.blobPath(digest), 'utf8')) as T;
  }

  /** Writes a blob and returns its descriptor. */
  async writeBlob(data: Buffer | string, mediaType: string): Promise<Descriptor> {
    const bytes = Buffer.from(data);
    const digest = sha256(bytes);
    await writeFile(this.blobPath(digest), bytes);
    return { mediaType, digest, size: bytes.length };
  }

  async index(): Promise<OciIndex> {
    return JSON.parse(await readFile(join(this.dir, 'index.json'), 'utf8')) as OciIndex;
  }

  async entry(tag: string): Promise<Descriptor> {
    const found = (await this.index()).manifests.find((m) => m.annotations?.[REF_NAME] === tag);
    if (!found) throw new Error(`no tag ${tag} in ${this.dir}`);
    return found;
  }

  /** Points `tag` at `descriptor`, replacing what it named. */
  async tag(tag: string, descriptor: Descriptor): Promise<void> {
    const top = await this.index();
    top.manifests = top.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
    top.manifests.push({
      mediaType: descriptor.mediaType,
      digest: descriptor.digest,
      size: descriptor.size,
      annotations: { [REF_NAME]: tag },
    });
    await writeFile(join(this.dir, 'index.json'), JSON.stringify(top));
  }

  /** Rewrites the manifest `tag` names through `edit` (which may write new blobs) and re-tags it. */
  async editManifest(tag: string, edit: (manifest: OciManifest) => Promise<OciManifest>): Promise<Descriptor> {
    const manifest = await edit(await this.readJson<OciManifest>((await this.entry(tag)).digest));
    const descriptor = await this.writeBlob(JSON.stringify(manifest), OCI_MANIFEST);
    await this.tag(tag, descriptor);
    return descriptor;
  }
}

/**
 * Builds the images the `@etch/registry` client tests pull, with umoci from layer tars made by GNU tar (the
 * style of `buildPreloadFixtures`): a three-layer image, the same image with uncompressed layers, and an OCI index
 * over four Linux platforms with an attestation-like entry a client must never pick. umoci cannot set a
 * platform variant, so the variant is written into the configs and the index by hand, with correct digests.
 * Push them with {@link pushRegistryFixture}.
 */
export async function buildRegistryFixtures(work: string): Promise<RegistryFixtures> {
  const dir = join(work, 'registry-layout');
  const stage = (name: string) => join(work, 'registry-stage', name);
  const tars: Record<string, string> = {};
  const tarLayer = async (name: string, files: Record<string, Buffer | string>) => {
    for (const [path, content] of Object.entries(files)) {
      await mkdir(join(stage(name), path, '..'), { recursive: true });
      await writeFile(join(stage(name), path), content);
    }
    tars[name] = join(work, `registry-${name}.tar`);
    // Fixed owner and times: the same layer bytes on every run.
    await run('tar', [
      '--format=pax',
      '--numeric-owner',
      '--owner=0',
      '--group=0',
      '--mtime=@0',
      '--sort=name',
      '--pax-option=delete=atime,delete=ctime',
      '-C',
      stage(name),
      '-cf',
      tars[name],
      '.',
    ]);
  };

  const platforms: FixturePlatform[] = [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
    { os: 'linux', architecture: 'arm', variant: 'v7' },
    { os: 'linux', architecture: 'arm', variant: 'v6' },
  ];
  const platformFile = { path: '/platform', content: (platform: FixturePlatform) => `${platformName(platform)}\n` };

  await tarLayer('layer-1', { 'layer-1.txt': 'first layer\n' });
  await tarLayer('layer-2', { 'layer-2/layer-2.txt': 'second layer\n' });
  await tarLayer('layer-3', { 'layer-3.bin': incompressible(512 * 1024) });
  for (const platform of platforms)
    await tarLayer(`platform-${platformName(platform).replaceAll('/', '-')}`, {
      platform: platformFile.content(platform),
    });

  await run('umoci', ['init', '--layout', dir]);
  const layout = new Layout(dir);
  const image = async (tag: string, layers: string[], platform: FixturePlatform) => {
    await run('umoci', ['new', '--image', `${dir}:${tag}`]);
    for (const layer of layers)
      await run('umoci', ['raw', 'add-layer', '--image', `${dir}:${tag}`, tars[layer] as string]);
    await run('umoci', [
      'config',
      '--image',
      `${dir}:${tag}`,
      '--os',
      platform.os,
      '--architecture',
      platform.architecture,
      '--config.cmd',
      '/bin/sh',
    ]);
    if (platform.variant === undefined) return layout.entry(tag);
    // umoci has no --variant: add it to the config, and point the manifest at the new config.
    return layout.editManifest(tag, async (manifest) => {
      const config = await layout.readJson<Record<string, unknown>>(manifest.config.digest);
      return {
        ...manifest,
        config: await layout.writeBlob(
          JSON.stringify({ ...config, variant: platform.variant }),
          manifest.config.mediaType,
        ),
      };
    });
  };

  await image('layers3', ['layer-1', 'layer-2', 'layer-3'], platforms[0] as FixturePlatform);
  await image('uncompressed', ['layer-1', 'layer-2', 'layer-3'], platforms[0] as FixturePlatform);
  await layout.editManifest('uncompressed', async (manifest) => ({
    ...manifest,
    layers: await Promise.all(
      manifest.layers.map(async (layer) =>
        layout.writeBlob(
          gunzipSync(await readFile(layout.blobPath(layer.digest))),
          'application/vnd.oci.image.layer.v1.tar',
        ),
      ),
    ),
  }));

  const entries: Descriptor[] = [];
  for (const platform of platforms) {
    const tag = `platform-${platformName(platform).replaceAll('/', '-')}`;
    const descriptor = await image(tag, [tag], platform);
    entries.push({ mediaType: OCI_MANIFEST, digest: descriptor.digest, size: descriptor.size, platform });
  }

  // What BuildKit attaches for provenance/SBOM: an image manifest whose one "layer" is an in-toto statement.
  const amd64 = entries[0] as Descriptor;
  const statement = await layout.writeBlob(
    JSON.stringify({
      _type: 'https://in-toto.io/Statement/v0.1',
      predicateType: 'https://slsa.dev/provenance/v0.2',
      subject: [{ name: 'etch-fixture', digest: { sha256: amd64.digest.slice(7) } }],
      predicate: { builder: { id: 'etch-test-utils' } },
    }),
    'application/vnd.in-toto+json',
  );
  const attestationConfig = await layout.writeBlob(
    JSON.stringify({
      architecture: 'unknown',
      os: 'unknown',
      config: {},
      rootfs: { type: 'layers', diff_ids: [statement.digest] },
    }),
    'application/vnd.oci.image.config.v1+json',
  );
  const attestation = await layout.writeBlob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: attestationConfig,
      layers: [{ ...statement, annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' } }],
    }),
    OCI_MANIFEST,
  );
  // First in the index, so a client that takes the first entry, or the first without a variant, is caught.
  entries.unshift({
    ...attestation,
    platform: { os: 'unknown', architecture: 'unknown' },
    annotations: { 'vnd.docker.reference.digest': amd64.digest, 'vnd.docker.reference.type': 'attestation-manifest' },
  });
  await layout.tag(
    'platforms',
    await layout.writeBlob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }), OCI_INDEX),
  );
  // skopeo cannot turn an in-toto "layer" into Docker schema 2, so the manifest-list variant has no attestation.
  const plain = entries.slice(1);
  await layout.tag(
    'platforms-plain',
    await layout.writeBlob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: plain }), OCI_INDEX),
  );

  return {
    layout: dir,
    images: {
      layers3: { tag: 'layers3', description: 'three gzip layers, the last 512 KiB and incompressible' },
      uncompressed: { tag: 'uncompressed', description: 'the three layers of layers3, uncompressed' },
      platforms: {
        tag: 'platforms',
        description: 'OCI index: attestation first, then linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6',
      },
      platformsPlain: {
        tag: 'platforms-plain',
        description: 'linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6, no attestation',
      },
    },
    platforms,
    platformFile,
  };
}

/** Options for {@link pushRegistryFixture}. */
export interface PushFixtureOptions {
  /** Manifest type written: `oci`, or `v2s2` for Docker schema 2 (an index becomes a manifest list). Default: as in the layout (OCI). */
  format?: 'oci' | 'v2s2';
  /**
   * Layer compression in the registry. `keep` (default) pushes the layout's blobs as they are, digests preserved
   * (`--preserve-digests`, so the `uncompressed` image stays uncompressed: skopeo's docker transport otherwise
   * gzips every uncompressed layer, and `--dest-decompress` only applies to its `dir:` transport); with a `format`
   * conversion, uncompressed layers get gzipped. `gzip` and `zstd` recompress (`--dest-compress-format`).
   */
  compression?: 'keep' | 'gzip' | 'zstd';
  /** `user:password` for the destination registry (`--dest-creds`). */
  creds?: string;
}

/** A manifest as the registry holds it after a push, read back with `skopeo inspect --raw`. */
export interface PushedManifest {
  /** sha256 of the raw manifest bytes the registry serves. */
  digest: string;
  mediaType: string;
  /** The raw manifest bytes. */
  raw: Buffer;
  /** Set on an image manifest. */
  config?: Descriptor;
  /** Set on an image manifest, in order. */
  layers?: Descriptor[];
  /** Set on an index entry: what the index said about it. */
  platform?: FixturePlatform;
  annotations?: Record<string, string>;
}

/** What a test needs to check a pull of a pushed fixture. */
export interface PushedImage extends PushedManifest {
  /** The reference pushed to, `host/repo:tag`. */
  ref: string;
  /** Set when an index (or manifest list) was pushed: its entries, each read back, in index order. */
  manifests?: PushedManifest[];
}

/** `host/repo:tag` → `host/repo` (a port colon is left alone). */
function repository(ref: string): string {
  const at = ref.indexOf('@');
  if (at >= 0) return ref.slice(0, at);
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? ref.slice(0, colon) : ref;
}

async function inspectRaw(ref: string, creds: string | undefined): Promise<PushedManifest> {
  const result = await run('skopeo', [
    'inspect',
    '--raw',
    '--tls-verify=false',
    ...(creds ? ['--creds', creds] : []),
    `docker://${ref}`,
  ]);
  const raw = result.stdoutBuffer;
  const json = JSON.parse(raw.toString('utf8')) as Partial<OciManifest> & {
    mediaType?: string;
    manifests?: Descriptor[];
  };
  const mediaType = json.mediaType ?? (json.manifests ? OCI_INDEX : OCI_MANIFEST);
  return {
    digest: sha256(raw),
    mediaType,
    raw,
    ...(json.config ? { config: json.config, layers: json.layers ?? [] } : {}),
  };
}

/**
 * Reads back what a registry holds for `ref` with `skopeo inspect --raw`: the manifest digest (sha256 of the raw
 * bytes), the config and layer descriptors, and for an index every entry, each read back by digest.
 */
export async function inspectPushed(ref: string, creds?: string): Promise<PushedImage> {
  const top = await inspectRaw(ref, creds);
  const json = JSON.parse(top.raw.toString('utf8')) as { manifests?: Descriptor[] };
  if (!json.manifests) return { ref, ...top };
  const manifests: PushedManifest[] = [];
  for (const entry of json.manifests) {
    const child = await inspectRaw(`${repository(ref)}@${entry.digest}`, creds);
    if (child.digest !== entry.digest) throw new Error(`${ref}: entry ${entry.digest} reads back as ${child.digest}`);
    manifests.push({
      ...child,
      ...(entry.platform ? { platform: entry.platform } : {}),
      ...(entry.annotations ? { annotations: entry.annotations } : {}),
    });
  }
  return { ref, ...top, manifests };
}

/**
 * Pushes a tag of a fixture layout to a loopback registry with `skopeo copy --all` and reads it back with
 * {@link inspectPushed}, so the test knows the digests the registry will serve.
 * @example
 * const pushed = await pushRegistryFixture(fixtures.layout, 'layers3', `${registry.host}/etch/layers3:zstd`, { compression: 'zstd' });
 * expect(pushed.layers?.[0]?.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
 */
export async function pushRegistryFixture(
  layout: string,
  tag: string,
  destination: string,
  options: PushFixtureOptions = {},
): Promise<PushedImage> {
  const compression = options.compression ?? 'keep';
  await skopeoWithoutBlobCache([
    'copy',
    '--all',
    '--quiet',
    '--dest-tls-verify=false',
    ...(options.creds ? ['--dest-creds', options.creds] : []),
    ...(options.format ? ['--format', options.format] : []),
    ...(compression !== 'keep'
      ? ['--dest-compress', '--dest-compress-format', compression]
      : options.format
        ? []
        : ['--preserve-digests']),
    `oci:${layout}:${tag}`,
    `docker://${destination}`,
  ]);
  const pushed = await inspectPushed(destination, options.creds);
  if (compression !== 'keep') {
    for (const manifest of pushed.manifests ?? [pushed]) {
      const wrong = (manifest.layers ?? []).filter(
        (layer) => isTarLayer(layer.mediaType) && !layer.mediaType.endsWith(compression === 'zstd' ? '+zstd' : 'gzip'),
      );
      if (wrong.length > 0) {
        throw new Error(
          `${destination}: asked for ${compression} layers, the registry holds ${wrong.map((l) => l.mediaType).join(', ')}: ` +
            'skopeo reused a blob it had already pushed, which it does regardless of the compression asked for. Push each compression to its own repository.',
        );
      }
    }
  }
  return pushed;
}

function isTarLayer(mediaType: string): boolean {
  return mediaType.includes('.layer.') || mediaType.includes('.rootfs.');
}

let privateMounts: boolean | undefined;

/**
 * Runs skopeo with an empty blob-info cache of its own. skopeo (containers/image) remembers, in
 * `/var/lib/containers/cache` for root, every compressed variant of every layer it pushed, and mounts a known
 * variant from another repository of the same registry instead of compressing as asked: a zstd push after a gzip
 * one would get gzip layers. In a private mount namespace (`unshare --mount`, which root has here), a tmpfs over
 * that folder hides the cache; without one, the check after the push still catches a reused blob.
 */
async function skopeoWithoutBlobCache(args: string[]): Promise<void> {
  const cache = '/var/lib/containers/cache';
  if (privateMounts === undefined) {
    await mkdir(cache, { recursive: true, mode: 0o700 }).catch(() => undefined);
    privateMounts =
      (
        await run(
          'unshare',
          ['--mount', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs etch-skopeo-cache ${cache}`],
          { allowFailure: true },
        )
      ).code === 0;
  }
  if (!privateMounts) {
    await run('skopeo', args);
    return;
  }
  await run('unshare', [
    '--mount',
    '--propagation',
    'private',
    'sh',
    '-c',
    `mount -t tmpfs etch-skopeo-cache ${cache} && exec skopeo "$@"`,
    'skopeo',
    ...args,
  ]);
}
