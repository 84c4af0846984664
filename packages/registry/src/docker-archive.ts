import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { EtchError } from '@etch/format';
import type { TarIndexEntry } from '@etch/tar';
import type { BlobProgress } from './blob-stream.js';
import { digestBytes } from './digest.js';
import { verifiedFileRange } from './local-blob.js';
import { parseJsonDocument, type Descriptor, type ImageManifestJson } from './manifest.js';
import { MediaType } from './media-types.js';
import { hostPlatform, toPlatform, type Platform } from './platform.js';
import { parseReference } from './reference.js';
import { resolveImage, type ResolvedImage } from './resolve.js';
import type { ImageSource, RepositoryName } from './source.js';

interface SaveManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

const HEX64 = /^[a-f0-9]{64}$/;

/** The platform an image config names, when it names one. */
function platformOf(config: { os?: unknown; architecture?: unknown; variant?: unknown }): Platform | undefined {
  if (typeof config.os !== 'string' || typeof config.architecture !== 'string') return undefined;
  return toPlatform({
    os: config.os,
    architecture: config.architecture,
    ...(typeof config.variant === 'string' ? { variant: config.variant } : {}),
  });
}

/**
 * A `docker save` archive (`docker-archive:PATH[:REF]`) as an image source. Both layouts docker writes are
 * read: the legacy one (`<id>.json`, `<id>/layer.tar`) and the OCI one of docker 25+ (`blobs/sha256/…`).
 * The archive is indexed by its headers and never extracted; the image is presented as a docker v2 manifest
 * whose uncompressed layers must hash to the config's diff_ids. Loaded images have no registry digest, so
 * only `name:tag` names are recorded, as `docker load` does.
 */
export class DockerArchiveSource implements ImageSource {
  readonly description: string;
  private index: Promise<{ entries: Map<string, TarIndexEntry>; chosen: SaveManifestEntry }> | undefined;

  constructor(
    readonly path: string,
    readonly reference?: string,
  ) {
    this.description = `docker-archive:${path}${reference !== undefined ? `:${reference}` : ''}`;
  }

  private async withFile<T>(use: (file: FileHandle) => Promise<T>): Promise<T> {
    let file: FileHandle;
    try {
      file = await open(this.path, 'r');
    } catch (cause) {
      throw new EtchError(
        (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'ETCH_NOT_FOUND' : 'ETCH_IO',
        `Cannot open the docker archive ${this.path}: ${(cause as Error).message}`,
        { cause, details: { path: this.path } },
      );
    }
    try {
      return await use(file);
    } finally {
      await file.close();
    }
  }

  private load() {
    this.index ??= this.withFile(async (file) => {
      const head = Buffer.alloc(4);
      await file.read(head, 0, 4, 0);
      if (head[0] === 0x1f && head[1] === 0x8b)
        throw new EtchError(
          'ETCH_USAGE',
          `${this.path} is gzip-compressed; docker-archive: reads it by seeking, so decompress it first (gunzip).`,
        );
      // Loaded when used: only docker-archive: sources read tars, and other commands start faster without them.
      const [{ readAtHandle }, { indexTar }] = await Promise.all([import('@etch/disk'), import('@etch/tar')]);
      const list = await indexTar(readAtHandle(file));
      const entries = new Map(list.map((e) => [posix.normalize(e.name).replace(/^\.\//, ''), e]));
      const manifestEntry = entries.get('manifest.json');
      if (!manifestEntry)
        throw new EtchError('ETCH_BAD_ARCHIVE', `${this.path} is not a docker save archive (no manifest.json).`, {
          details: { path: this.path },
        });
      const bytes = await this.readEntry(file, manifestEntry, 'manifest.json');
      const parsed = JSON.parse(bytes.toString('utf8')) as unknown;
      if (!Array.isArray(parsed))
        throw new EtchError('ETCH_BAD_MANIFEST', `manifest.json in ${this.path} is not a list.`);
      const images = parsed as SaveManifestEntry[];
      const chosen = this.choose(images);
      this.repoTags = chosen.RepoTags ?? [];
      return { entries, chosen };
    });
    return this.index;
  }

  private choose(images: SaveManifestEntry[]): SaveManifestEntry {
    const all = images.flatMap((i) => i.RepoTags ?? []);
    if (this.reference === undefined) {
      if (images.length === 1 && images[0]) return images[0];
      throw new EtchError(
        'ETCH_NOT_FOUND',
        `${this.path} holds ${images.length} images; name one with docker-archive:${this.path}:NAME:TAG (${all.join(', ') || 'untagged'}).`,
      );
    }
    const wanted = String(parseReference(this.reference));
    const found = images.find((i) => (i.RepoTags ?? []).some((t) => String(parseReference(t)) === wanted));
    if (!found)
      throw new EtchError(
        'ETCH_NOT_FOUND',
        `${this.path} has no image ${this.reference} (it holds ${all.join(', ') || 'untagged images'}).`,
      );
    return found;
  }

  private async readEntry(file: FileHandle, entry: TarIndexEntry, what: string): Promise<Buffer> {
    if (entry.size > 64 * 1024 * 1024)
      throw new EtchError('ETCH_BAD_MANIFEST', `${what} in ${this.path} is too large to read into memory.`);
    const buffer = Buffer.alloc(entry.size);
    const { bytesRead } = await file.read(buffer, 0, entry.size, entry.dataOffset);
    if (bytesRead !== entry.size) throw new EtchError('ETCH_BAD_ARCHIVE', `${this.path} is truncated inside ${what}.`);
    return buffer;
  }

  private find(entries: Map<string, TarIndexEntry>, name: string): TarIndexEntry {
    const normal = posix.normalize(name);
    if (normal.startsWith('../') || posix.isAbsolute(normal))
      throw new EtchError('ETCH_UNSAFE_PATH', `manifest.json in ${this.path} points outside the archive (${name}).`);
    let entry = entries.get(normal);
    // A symlinked layer (docker shares identical layers that way) points at the real file.
    for (let hops = 0; entry?.type === 'symlink' && hops < 8; hops += 1)
      entry = entries.get(posix.normalize(posix.join(posix.dirname(normal), entry.linkname)));
    if (!entry || entry.type !== 'file')
      throw new EtchError('ETCH_BAD_ARCHIVE', `${this.path} lists ${name} in manifest.json but does not contain it.`);
    return entry;
  }

  async resolve(options: { platform?: Platform | string; signal?: AbortSignal } = {}): Promise<ResolvedImage> {
    const { entries, chosen } = await this.load();
    const configEntry = this.find(entries, chosen.Config);
    const configBytes = await this.withFile((file) => this.readEntry(file, configEntry, chosen.Config));
    const configDigest = digestBytes(configBytes);
    // Both layouts name the config after its sha256: check it, the archive gives nothing else to verify it by.
    const named = /([a-f0-9]{64})(?:\.json)?$/.exec(chosen.Config)?.[1];
    if (named !== undefined && `sha256:${named}` !== configDigest)
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `The config ${chosen.Config} in ${this.path} does not hash to its name.`,
        { details: { digest: `sha256:${named}`, actual: configDigest } },
      );
    const config = parseJsonDocument(configBytes, `The config in ${this.path}`) as {
      rootfs?: { diff_ids?: unknown };
      os?: unknown;
      architecture?: unknown;
      variant?: unknown;
    };
    const diffIds = Array.isArray(config.rootfs?.diff_ids) ? (config.rootfs.diff_ids as string[]) : [];
    if (diffIds.length !== chosen.Layers.length)
      throw new EtchError(
        'ETCH_BAD_MANIFEST',
        `${this.path} lists ${chosen.Layers.length} layers but its config has ${diffIds.length} diff_ids.`,
      );
    // Layers are stored as docker wrote them (uncompressed) or as a registry had them (gzip, zstd: docker load
    // takes those too, and etch writes archives that way): the media type follows the bytes.
    const { detectCompression } = await import('@etch/tar');
    const layers = await this.withFile((file) =>
      Promise.all(
        chosen.Layers.map(async (name, i) => {
          const entry = this.find(entries, name);
          const head = Buffer.alloc(4);
          await file.read(head, 0, Math.min(4, entry.size), entry.dataOffset);
          const compression = detectCompression(head);
          const blob = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(posix.normalize(name))?.[1];
          // Named by digest in the OCI layout; a legacy layer.tar is uncompressed, so its digest is the diff_id.
          const digest =
            blob !== undefined && HEX64.test(blob)
              ? `sha256:${blob}`
              : compression === 'none'
                ? (diffIds[i] as string)
                : await this.hashEntry(entry);
          const mediaType =
            compression === 'gzip'
              ? MediaType.DOCKER_LAYER_GZIP
              : compression === 'zstd'
                ? MediaType.OCI_LAYER_ZSTD
                : MediaType.DOCKER_LAYER;
          return { mediaType, digest, size: entry.size, dataOffset: entry.dataOffset };
        }),
      ),
    );
    const manifest: ImageManifestJson = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { mediaType: MediaType.DOCKER_CONFIG, digest: configDigest, size: configBytes.length },
      layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    this.blobOffsets = new Map([
      [configDigest, configEntry.dataOffset],
      ...layers.map((l): [string, number] => [l.digest, l.dataOffset]),
    ]);
    // The archive holds one image: without a platform asked for, it is taken as it is.
    const wanted =
      options.platform !== undefined ? toPlatform(options.platform) : (platformOf(config) ?? hostPlatform());
    return resolveImage(
      {
        digest: digestBytes(bytes),
        mediaType: MediaType.DOCKER_MANIFEST,
        bytes,
        json: manifest as unknown as Record<string, unknown>,
      },
      wanted,
      this.description,
      {
        byDigest: () => Promise.reject(new Error('a docker archive has no index')),
        config: async () => configBytes,
      },
    );
  }

  /** Where the config and each layer start in the archive, by digest, once resolved. */
  private blobOffsets = new Map<string, number>();

  /** The sha256 of an entry's bytes (a compressed layer under a legacy name, which names no digest). */
  private async hashEntry(entry: TarIndexEntry): Promise<string> {
    const hash = createHash('sha256');
    const stream = createReadStream(this.path, { start: entry.dataOffset, end: entry.dataOffset + entry.size - 1 });
    for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
    return `sha256:${hash.digest('hex')}`;
  }
  private repoTags: string[] = [];

  openBlob(
    descriptor: Descriptor,
    options: { signal?: AbortSignal; onProgress?: (p: BlobProgress) => void; verifyDigest?: boolean } = {},
  ): AsyncGenerator<Buffer> {
    const offset = this.blobOffsets.get(descriptor.digest);
    if (offset === undefined)
      throw new EtchError(
        'ETCH_NOT_FOUND',
        `${descriptor.digest} is not the config or a layer of ${this.description}; resolve the image first.`,
        { details: { digest: descriptor.digest } },
      );
    return verifiedFileRange(this.path, offset, descriptor, `blob in ${this.description}`, options);
  }

  /** Every `RepoTags` name of the chosen image, as `docker load` would tag it. */
  names(): RepositoryName[] {
    return this.repoTags.flatMap((t) => {
      const ref = parseReference(t);
      return ref.tag !== undefined ? [{ repository: ref.familiarName, tag: ref.tag }] : [];
    });
  }

  async close(): Promise<void> {}
}
