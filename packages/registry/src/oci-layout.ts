import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EtchError } from '@etch/format';
import { assertDigest } from './digest.js';
import { verifiedFileRange } from './local-blob.js';
import { asImageIndex, detectManifestMediaType, parseJsonDocument, type Descriptor } from './manifest.js';
import { hostPlatform, toPlatform } from './platform.js';
import { parseReference } from './reference.js';
import { resolveImage, type FetchedManifest, type ResolvedImage } from './resolve.js';
import type { ImageSource, RepositoryName } from './source.js';

const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME = 'io.containerd.image.name';

function blobPath(root: string, digest: string): string {
  // assertDigest limits the encoded part to [A-Za-z0-9=_-]: the path cannot leave blobs/.
  assertDigest(digest, 'a blob digest');
  const colon = digest.indexOf(':');
  return join(root, 'blobs', digest.slice(0, colon), digest.slice(colon + 1));
}

/**
 * An OCI image layout directory (`oci:PATH[:TAG]`, image-spec `image-layout.md`) as an image source: the tag
 * is matched against `org.opencontainers.image.ref.name`; without one the layout must hold a single image.
 * Every manifest, config and layer is verified against its digest as a registry's would be.
 */
export class OciLayoutSource implements ImageSource {
  readonly description: string;
  private entry: Descriptor | undefined;

  constructor(
    readonly root: string,
    readonly tag?: string,
  ) {
    this.description = `oci:${root}${tag !== undefined ? `:${tag}` : ''}`;
  }

  private async readBlob(descriptor: Descriptor, limit: number): Promise<Buffer> {
    if (descriptor.size > limit)
      throw new EtchError(
        'ETCH_BAD_MANIFEST',
        `${descriptor.digest} in ${this.description} is ${descriptor.size} bytes; too large to read into memory.`,
      );
    const chunks: Buffer[] = [];
    for await (const chunk of verifiedFileRange(
      blobPath(this.root, descriptor.digest),
      0,
      descriptor,
      `blob in ${this.description}`,
    ))
      chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  /** The document the tag names, exactly as stored. */
  async topManifest(): Promise<FetchedManifest> {
    return this.manifest(await this.top());
  }

  /** A manifest or index of the layout by descriptor, verified. */
  manifestByDigest(descriptor: Descriptor): Promise<FetchedManifest> {
    return this.manifest(descriptor);
  }

  private async manifest(descriptor: Descriptor): Promise<FetchedManifest> {
    const bytes = await this.readBlob(descriptor, 4 * 1024 * 1024);
    const json = parseJsonDocument(bytes, `The manifest ${descriptor.digest} in ${this.description}`);
    return {
      digest: descriptor.digest,
      mediaType: detectManifestMediaType(json, descriptor.mediaType, `The manifest ${descriptor.digest}`),
      bytes,
      json,
    };
  }

  /** The index.json entry the tag names. */
  private async top(): Promise<Descriptor> {
    if (this.entry) return this.entry;
    const layoutFile = await readFile(join(this.root, 'oci-layout'), 'utf8').catch(() => undefined);
    if (layoutFile === undefined) {
      const exists = await stat(this.root).catch(() => undefined);
      throw new EtchError(
        'ETCH_NOT_FOUND',
        exists
          ? `${this.root} is not an OCI image layout (no oci-layout file).`
          : `The OCI layout ${this.root} does not exist.`,
        { details: { path: this.root } },
      );
    }
    const indexBytes = await readFile(join(this.root, 'index.json'));
    const index = asImageIndex(parseJsonDocument(indexBytes, `${this.root}/index.json`), `${this.root}/index.json`);
    const tags = index.manifests.map((m) => m.annotations?.[REF_NAME]).filter((t): t is string => t !== undefined);
    const found =
      this.tag === undefined
        ? index.manifests.length === 1
          ? index.manifests[0]
          : undefined
        : index.manifests.find((m) => m.annotations?.[REF_NAME] === this.tag);
    if (!found) {
      throw new EtchError(
        'ETCH_NOT_FOUND',
        this.tag === undefined
          ? `${this.root} holds ${index.manifests.length} images; name one with oci:${this.root}:TAG (tags: ${tags.join(', ') || 'none'}).`
          : `${this.root} has no image tagged ${this.tag} (tags: ${tags.join(', ') || 'none'}).`,
        { details: { path: this.root } },
      );
    }
    this.entry = found;
    return found;
  }

  async resolve(
    options: { platform?: import('./platform.js').Platform | string; signal?: AbortSignal } = {},
  ): Promise<ResolvedImage> {
    const entry = await this.top();
    const wanted = options.platform === undefined ? hostPlatform() : toPlatform(options.platform);
    return resolveImage(await this.manifest(entry), wanted, this.description, {
      byDigest: (d) => this.manifest(d),
      config: (d) => this.readBlob(d, 64 * 1024 * 1024),
    });
  }

  openBlob(
    descriptor: Descriptor,
    options: {
      signal?: AbortSignal;
      onProgress?: (p: import('./blob-stream.js').BlobProgress) => void;
      verifyDigest?: boolean;
    } = {},
  ): AsyncGenerator<Buffer> {
    return verifiedFileRange(
      blobPath(this.root, descriptor.digest),
      0,
      descriptor,
      `blob in ${this.description}`,
      options,
    );
  }

  /** The name containerd or skopeo recorded (`io.containerd.image.name`), if it is a valid reference. */
  names(image: ResolvedImage): RepositoryName[] {
    const name = this.entry?.annotations?.[CONTAINERD_NAME];
    if (name === undefined) return [];
    try {
      const ref = parseReference(name);
      return [
        {
          repository: ref.familiarName,
          ...(ref.tag !== undefined ? { tag: ref.tag } : {}),
          digest: image.indexDigest ?? image.digest,
        },
      ];
    } catch {
      return [];
    }
  }

  async close(): Promise<void> {}
}
