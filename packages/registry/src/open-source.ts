import { existsSync } from 'node:fs';
import { EtchError } from '@etch/format';
import { DockerArchiveSource } from './docker-archive.js';
import type { Descriptor } from './manifest.js';
import { OciLayoutSource } from './oci-layout.js';
import type { Platform } from './platform.js';
import { familiarString, parseReference, withTarget, type ImageReference } from './reference.js';
import type { RegistryClient } from './registry-client.js';
import type { FetchedManifest, ResolvedImage } from './resolve.js';
import type { ImageSource, RepositoryName } from './source.js';
import type { BlobProgress } from './blob-stream.js';

/** An image in a registry, through a shared {@link RegistryClient}. */
export class RegistryImageSource implements ImageSource {
  readonly description: string;
  readonly sourceRepository: string;
  readonly origin: { registry: string; repository: string };

  constructor(
    private readonly client: RegistryClient,
    readonly reference: ImageReference,
  ) {
    this.description = familiarString(reference);
    this.sourceRepository = reference.fullName;
    this.origin = { registry: reference.registry, repository: reference.repository };
  }

  topManifest(options: { signal?: AbortSignal } = {}): Promise<FetchedManifest> {
    return this.client.getManifest(this.reference, options);
  }

  manifestByDigest(descriptor: Descriptor, options: { signal?: AbortSignal } = {}): Promise<FetchedManifest> {
    return this.client.getManifest(withTarget(this.reference, { digest: descriptor.digest }), options);
  }

  resolve(options: { platform?: Platform | string; signal?: AbortSignal } = {}): Promise<ResolvedImage> {
    return this.client.resolve(this.reference, options);
  }

  openBlob(
    descriptor: Descriptor,
    options: { signal?: AbortSignal; onProgress?: (p: BlobProgress) => void; verifyCached?: boolean } = {},
  ): AsyncGenerator<Buffer> {
    return this.client.openBlob(this.reference, descriptor, options);
  }

  /** Present only when the client has a cache to prefetch into. */
  get prefetch(): ImageSource['prefetch'] {
    return this.client.cache
      ? (descriptor, options = {}) => this.client.prefetch(this.reference, descriptor, options)
      : undefined;
  }

  /**
   * What `docker pull` records: `name:tag` and `name@<digest the tag pointed to>` for a pull by tag (the index
   * digest for a multi-platform tag); `name@digest` alone for a pull by digest.
   */
  names(image: ResolvedImage): RepositoryName[] {
    const repository = this.reference.familiarName;
    if (this.reference.digest !== undefined) return [{ repository, digest: this.reference.digest }];
    return [{ repository, tag: this.reference.tag ?? 'latest', digest: image.indexDigest ?? image.digest }];
  }

  async close(): Promise<void> {}
}

/** Splits `PATH[:SUFFIX]` where the suffix follows the last `:` after the last `/`. */
function splitPathSuffix(spec: string): [string, string | undefined] {
  const slash = spec.lastIndexOf('/');
  const colon = spec.indexOf(':', slash + 1);
  return colon === -1 ? [spec, undefined] : [spec.slice(0, colon), spec.slice(colon + 1)];
}

function splitArchiveSpec(spec: string): [string, string | undefined] {
  if (existsSync(spec)) return [spec, undefined];
  for (let at = spec.indexOf(':'); at !== -1; at = spec.indexOf(':', at + 1)) {
    if (existsSync(spec.slice(0, at))) return [spec.slice(0, at), spec.slice(at + 1)];
  }
  const colon = spec.indexOf(':');
  return colon === -1 ? [spec, undefined] : [spec.slice(0, colon), spec.slice(colon + 1)];
}

/**
 * Opens an image by what a user typed: `oci:PATH[:TAG]`, `docker-archive:PATH[:NAME:TAG]`, `docker://REF`
 * or a plain reference (`alpine:3`, `127.0.0.1:5000/etch/a@sha256:…`), which goes to the registry client.
 */
export function openImageSource(spec: string, client: RegistryClient): ImageSource {
  if (spec.startsWith('oci:')) {
    const [path, tag] = splitPathSuffix(spec.slice(4));
    if (path === '') throw new EtchError('ETCH_USAGE', `${spec}: the OCI layout path is missing (oci:PATH[:TAG]).`);
    return new OciLayoutSource(path, tag);
  }
  if (spec.startsWith('docker-archive:')) {
    const rest = spec.slice('docker-archive:'.length);
    // The reference holds colons and slashes of its own (etch/a:1): the path is the prefix that is a file.
    const [path, reference] = splitArchiveSpec(rest);
    if (path === '')
      throw new EtchError('ETCH_USAGE', `${spec}: the archive path is missing (docker-archive:PATH[:REF]).`);
    return new DockerArchiveSource(path, reference);
  }
  const reference = parseReference(spec.startsWith('docker://') ? spec.slice('docker://'.length) : spec);
  return new RegistryImageSource(client, reference);
}
