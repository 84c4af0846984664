import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { EtchError } from '@etch/format';
import type { Descriptor } from './manifest.js';
import { asImageManifest, parseJsonDocument } from './manifest.js';
import { isIndexType } from './media-types.js';
import { parseReference, type ImageReference } from './reference.js';
import { OciLayoutTarget, type BlobWrite, type ImageTarget, type TargetWriteOptions } from './target.js';

/** Archive entries get this time, so the same image gives the same archive bytes. */
const EPOCH = new Date(0);

/**
 * A `docker save` archive as a target (`docker-archive:PATH[:NAME:TAG]`), which `docker load` (20.10 and
 * later) and `skopeo` read: `manifest.json` naming the config and the layers, which are stored as the
 * registry has them (`docker load` decompresses gzip and zstd layers itself), in the OCI layout docker 25+
 * writes (`oci-layout`, `index.json`, `blobs/sha256/…`). The archive holds one image, so callers copying an
 * index pick one platform ({@link DockerArchiveTarget.singleImage}).
 *
 * Blobs are spooled into a temporary directory beside `PATH`; the archive is written to a temporary name
 * and renamed over `PATH` when the image manifest is stored, so a failed write leaves no partial archive.
 */
export class DockerArchiveTarget implements ImageTarget {
  readonly description: string;
  readonly tag: string | undefined;
  /** An archive holds one image manifest, never an index: callers choose a platform. */
  readonly singleImage = true;
  private readonly name: ImageReference | undefined;
  private readonly spool: OciLayoutTarget;
  private readonly spoolDir: string;

  constructor(
    readonly path: string,
    reference?: string,
  ) {
    this.description = `docker-archive:${path}${reference !== undefined ? `:${reference}` : ''}`;
    this.name = reference !== undefined ? parseReference(reference) : undefined;
    if (this.name?.digest !== undefined)
      throw new EtchError(
        'ETCH_USAGE',
        `${this.description}: a docker archive records name:tag, not a digest (docker load would drop it).`,
      );
    this.tag = this.name ? (this.name.tag ?? 'latest') : undefined;
    this.spoolDir = join(dirname(path), `.${basename(path)}.etch-${randomBytes(6).toString('hex')}`);
    this.spool = new OciLayoutTarget(this.spoolDir);
  }

  putBlob(
    descriptor: Descriptor,
    open: () => AsyncIterable<Uint8Array>,
    options: TargetWriteOptions = {},
  ): Promise<BlobWrite> {
    return this.spool.putBlob(descriptor, open, options);
  }

  putStream(
    content: AsyncIterable<Uint8Array>,
    options: TargetWriteOptions = {},
  ): Promise<{ digest: string; size: number }> {
    return this.spool.putStream(content, options);
  }

  /**
   * Writes the archive: the image manifest's config and layers (already stored with {@link putBlob}) and a
   * `manifest.json` naming them, with `RepoTags` from the archive's name and each tag given. An index is
   * refused: pick a platform first.
   */
  async putManifest(
    manifest: { bytes: Uint8Array; mediaType: string },
    tags: readonly string[],
    options: { signal?: AbortSignal } = {},
  ): Promise<string> {
    if (isIndexType(manifest.mediaType))
      throw new EtchError(
        'ETCH_UNSUPPORTED',
        `${this.description}: a docker archive holds one image, not an index; copy or build one platform (--platform).`,
      );
    const image = asImageManifest(parseJsonDocument(Buffer.from(manifest.bytes), this.description), this.description);
    const digest = await this.spool.putManifest(manifest, []);
    const blobName = (d: Descriptor) => `blobs/${d.digest.replace(':', '/')}`;
    const repoTags = this.name ? [...new Set(tags)].map((tag) => `${this.name?.familiarName}:${tag}`) : [];
    const saveManifest = [{ Config: blobName(image.config), RepoTags: repoTags, Layers: image.layers.map(blobName) }];
    const index = {
      schemaVersion: 2,
      manifests: [
        {
          mediaType: manifest.mediaType,
          digest,
          size: manifest.bytes.length,
          ...(repoTags[0] !== undefined ? { annotations: { 'io.containerd.image.name': repoTags[0] } } : {}),
        },
      ],
    };
    const temp = `${this.path}.tmp-${randomBytes(4).toString('hex')}`;
    const signal = options.signal ? { signal: options.signal } : {};
    // Loaded when used: only a docker-archive target needs the tar writer.
    const { createTarPack, promisePacker, whenPackerIdle } = await import('@etch/tar');
    const tarball = createTarPack();
    const entry = promisePacker(tarball, undefined, { mtime: EPOCH, ...signal });
    const put = (name: string, text: string) => entry({ name }, Buffer.from(text));
    const entries = async () => {
      await put('oci-layout', `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
      await put('index.json', `${JSON.stringify(index)}\n`);
      await put('manifest.json', `${JSON.stringify(saveManifest)}\n`);
      const seen = new Set<string>();
      for (const blob of [image.config, ...image.layers, { digest, size: manifest.bytes.length }]) {
        if (seen.has(blob.digest)) continue;
        seen.add(blob.digest);
        const name = blobName(blob as Descriptor);
        const file = join(this.spoolDir, name);
        const size = await stat(file).then(
          (s) => s.size,
          (cause: unknown) => {
            throw new EtchError(
              'ETCH_NOT_FOUND',
              `${this.description}: ${blob.digest} was not stored before its manifest.`,
              { cause, details: { digest: blob.digest } },
            );
          },
        );
        await entry({ name, size }, createReadStream(file));
      }
      await whenPackerIdle(tarball);
      tarball.finalize();
    };
    try {
      // Both at once, each failure seen: the file written as the entries go in.
      await Promise.all([pipeline(tarball, createWriteStream(temp), signal), entries()]);
      await rename(temp, this.path);
    } catch (error) {
      tarball.destroy();
      await rm(temp, { force: true });
      throw error;
    }
    return digest;
  }

  /** Removes the spooled blobs. */
  async close(): Promise<void> {
    await rm(this.spoolDir, { recursive: true, force: true });
  }
}
