import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { EtchError } from '@etch/format';
import { pullScope, pushScope } from './auth.js';
import type { UploadProgress } from './blob-upload.js';
import { assertDigest, digestBytes } from './digest.js';
import { asImageIndex, parseJsonDocument, type Descriptor } from './manifest.js';
import { MediaType } from './media-types.js';
import { familiarString, parseReference, withTarget, type ImageReference } from './reference.js';
import type { RegistryClient } from './registry-client.js';
import { DockerArchiveTarget } from './docker-archive-target.js';

/** Where a blob can be found already, so a target in the same registry mounts it instead of uploading. */
export interface BlobOrigin {
  registry: string;
  repository: string;
}

/** Options of {@link ImageTarget} writes. */
export interface TargetWriteOptions {
  signal?: AbortSignal;
  onProgress?: (progress: UploadProgress) => void;
}

/** How a blob reached the target. */
export type BlobWrite = 'existed' | 'mounted' | 'uploaded';

/**
 * Where images are written: a registry repository or an OCI layout directory, behind one interface. Blobs of
 * known digest are skipped when present; manifests are stored with their exact bytes.
 */
export interface ImageTarget {
  /** What the user wrote (`127.0.0.1:5000/app:1`, `oci:/images/app:v1`). */
  readonly description: string;
  /** The tag the name carries (`1` in `app:1`), if any: where {@link putManifest} puts the top document by default. */
  readonly tag: string | undefined;
  /** True when the target holds one image manifest and no index (a docker archive): callers pick one platform. */
  readonly singleImage?: boolean;
  /** Stores a blob of known digest and size; `open` yields its bytes (opened only when needed, perhaps twice). */
  putBlob(
    descriptor: Descriptor,
    open: () => AsyncIterable<Uint8Array>,
    options?: TargetWriteOptions & { from?: BlobOrigin },
  ): Promise<BlobWrite>;
  /** Stores a stream of unknown digest (a layer being made) and says what it was. */
  putStream(
    content: AsyncIterable<Uint8Array>,
    options?: TargetWriteOptions,
  ): Promise<{ digest: string; size: number }>;
  /** Stores a manifest or index with exactly these bytes, by digest, and under each tag given. Returns its digest. */
  putManifest(
    manifest: { bytes: Uint8Array; mediaType: string },
    tags: readonly string[],
    options?: { signal?: AbortSignal },
  ): Promise<string>;
  close(): Promise<void>;
}

/** A repository of a registry, written through a shared {@link RegistryClient}. */
export class RegistryImageTarget implements ImageTarget {
  readonly description: string;
  readonly tag: string | undefined;

  constructor(
    private readonly client: RegistryClient,
    readonly reference: ImageReference,
    private readonly chunkSize?: number,
  ) {
    this.description = familiarString(reference);
    this.tag = reference.tag;
  }

  private get scopes(): string[] {
    return [pushScope(this.reference.repository)];
  }

  async putBlob(
    descriptor: Descriptor,
    open: () => AsyncIterable<Uint8Array>,
    options: TargetWriteOptions & { from?: BlobOrigin } = {},
  ): Promise<BlobWrite> {
    const signal = options.signal ? { signal: options.signal } : {};
    const blob = { digest: descriptor.digest, size: descriptor.size };
    const from = options.from;
    if (from && from.registry === this.reference.registry && from.repository !== this.reference.repository) {
      const mounted = await this.client.mountBlob(this.reference, blob, from.repository, {
        scopes: [pushScope(this.reference.repository), pullScope(from.repository)],
        fallback: open,
        ...(this.chunkSize !== undefined ? { chunkSize: this.chunkSize } : {}),
        ...signal,
      });
      return mounted.how;
    }
    const uploaded = await this.client.uploadBlob(this.reference, open, {
      ...blob,
      scopes: this.scopes,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...signal,
    });
    return uploaded.how;
  }

  async putStream(
    content: AsyncIterable<Uint8Array>,
    options: TargetWriteOptions = {},
  ): Promise<{ digest: string; size: number }> {
    const { digest, size } = await this.client.uploadBlob(this.reference, content, {
      scopes: this.scopes,
      ...(this.chunkSize !== undefined ? { chunkSize: this.chunkSize } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return { digest, size };
  }

  async putManifest(
    manifest: { bytes: Uint8Array; mediaType: string },
    tags: readonly string[],
    options: { signal?: AbortSignal } = {},
  ): Promise<string> {
    const digest = digestBytes(manifest.bytes);
    const call = { scopes: this.scopes, ...(options.signal ? { signal: options.signal } : {}) };
    if (tags.length === 0) return this.client.putManifest(withTarget(this.reference, { digest }), manifest, call);
    for (const tag of tags) await this.client.putManifest(withTarget(this.reference, { tag }), manifest, call);
    return digest;
  }

  async close(): Promise<void> {}
}

const REF_NAME = 'org.opencontainers.image.ref.name';

/**
 * An OCI image layout directory (`oci:DIR[:TAG]`) as a target: created when missing, blobs written to a
 * temporary name, verified, then renamed into `blobs/<alg>/<hex>`; tags recorded in `index.json` as
 * `org.opencontainers.image.ref.name`, replacing what the tag named.
 */
export class OciLayoutTarget implements ImageTarget {
  readonly description: string;

  constructor(
    readonly root: string,
    readonly tag: string | undefined = undefined,
  ) {
    this.description = `oci:${root}${tag !== undefined ? `:${tag}` : ''}`;
  }

  private blobPath(digest: string): string {
    assertDigest(digest, 'a blob digest');
    const colon = digest.indexOf(':');
    return join(this.root, 'blobs', digest.slice(0, colon), digest.slice(colon + 1));
  }

  private async ready(): Promise<void> {
    await mkdir(join(this.root, 'blobs', 'sha256'), { recursive: true });
    const layout = join(this.root, 'oci-layout');
    if (!(await stat(layout).catch(() => undefined)))
      await writeFile(layout, `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
    const index = join(this.root, 'index.json');
    if (!(await stat(index).catch(() => undefined)))
      await writeFile(
        index,
        `${JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] }, null, 2)}\n`,
      );
  }

  /** Writes a stream to a temporary file beside the blobs, hashing it; the caller renames or removes it. */
  private async spool(
    content: AsyncIterable<Uint8Array>,
    algorithm: string,
    options: TargetWriteOptions,
  ): Promise<{ temp: string; digest: string; size: number }> {
    await this.ready();
    const temp = join(this.root, 'blobs', `.tmp-${randomBytes(8).toString('hex')}`);
    const hash = createHash(algorithm);
    let size = 0;
    const onProgress = options.onProgress;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const data of content) {
        hash.update(data);
        size += data.length;
        onProgress?.({ bytes: size });
        yield data;
      }
    }
    try {
      await pipeline(
        Readable.from(counted()),
        createWriteStream(temp),
        options.signal ? { signal: options.signal } : {},
      );
    } catch (cause) {
      await rm(temp, { force: true });
      throw cause;
    }
    return { temp, digest: `${algorithm}:${hash.digest('hex')}`, size };
  }

  async putBlob(
    descriptor: Descriptor,
    open: () => AsyncIterable<Uint8Array>,
    options: TargetWriteOptions = {},
  ): Promise<BlobWrite> {
    const path = this.blobPath(descriptor.digest);
    const present = await stat(path).catch(() => undefined);
    if (present?.size === descriptor.size) return 'existed';
    const algorithm = descriptor.digest.slice(0, descriptor.digest.indexOf(':'));
    await mkdir(join(this.root, 'blobs', algorithm), { recursive: true });
    const { temp, digest, size } = await this.spool(open(), algorithm, options);
    if (digest !== descriptor.digest || size !== descriptor.size) {
      await rm(temp, { force: true });
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `${this.description}: the content for ${descriptor.digest} is ${digest} (${size} bytes); nothing was kept.`,
        { details: { digest: descriptor.digest, actual: digest } },
      );
    }
    await rename(temp, path);
    return 'uploaded';
  }

  async putStream(
    content: AsyncIterable<Uint8Array>,
    options: TargetWriteOptions = {},
  ): Promise<{ digest: string; size: number }> {
    const { temp, digest, size } = await this.spool(content, 'sha256', options);
    await rename(temp, this.blobPath(digest));
    return { digest, size };
  }

  async putManifest(manifest: { bytes: Uint8Array; mediaType: string }, tags: readonly string[]): Promise<string> {
    await this.ready();
    const digest = digestBytes(manifest.bytes);
    await writeFile(this.blobPath(digest), manifest.bytes);
    if (tags.length === 0) return digest;
    const indexPath = join(this.root, 'index.json');
    const indexBytes = await readFile(indexPath);
    const index = asImageIndex(parseJsonDocument(indexBytes, indexPath), indexPath);
    const kept = index.manifests.filter((m) => !tags.includes(m.annotations?.[REF_NAME] ?? '\0'));
    const added = tags.map((tag) => ({
      mediaType: manifest.mediaType,
      digest,
      size: manifest.bytes.length,
      annotations: { [REF_NAME]: tag },
    }));
    const next = { ...index, manifests: [...kept, ...added] };
    const temp = `${indexPath}.tmp-${randomBytes(4).toString('hex')}`;
    await writeFile(temp, `${JSON.stringify(next, null, 2)}\n`);
    await rename(temp, indexPath);
    return digest;
  }

  async close(): Promise<void> {}
}

/** Splits `DIR[:TAG]`, the tag after the last `:` that follows the last `/`. */
function splitLayoutSpec(spec: string): [string, string | undefined] {
  const slash = spec.lastIndexOf('/');
  const colon = spec.indexOf(':', slash + 1);
  return colon === -1 ? [spec, undefined] : [spec.slice(0, colon), spec.slice(colon + 1)];
}

/**
 * Opens a target by what a user typed: `oci:DIR[:TAG]`, `docker-archive:PATH[:NAME:TAG]`, `docker://REF` or a
 * plain reference, which goes to the registry client. A reference with neither tag nor digest is tagged `latest`.
 */
export function openImageTarget(
  spec: string,
  client: RegistryClient,
  options: { chunkSize?: number } = {},
): ImageTarget {
  if (spec.startsWith('oci:')) {
    const [path, tag] = splitLayoutSpec(spec.slice(4));
    if (path === '') throw new EtchError('ETCH_USAGE', `${spec}: the OCI layout path is missing (oci:DIR[:TAG]).`);
    return new OciLayoutTarget(path, tag);
  }
  if (spec.startsWith('docker-archive:')) {
    // skopeo's form: the path ends at the first colon, a name:tag for RepoTags may follow.
    const rest = spec.slice('docker-archive:'.length);
    const colon = rest.indexOf(':');
    const path = colon === -1 ? rest : rest.slice(0, colon);
    if (path === '')
      throw new EtchError('ETCH_USAGE', `${spec}: the archive path is missing (docker-archive:PATH[:NAME:TAG]).`);
    return new DockerArchiveTarget(path, colon === -1 ? undefined : rest.slice(colon + 1));
  }
  const reference = parseReference(spec.startsWith('docker://') ? spec.slice('docker://'.length) : spec);
  const tagged =
    reference.tag === undefined && reference.digest === undefined
      ? withTarget(reference, { tag: 'latest' })
      : reference;
  return new RegistryImageTarget(client, tagged, options.chunkSize);
}
