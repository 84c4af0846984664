import type { BlobProgress } from './blob-stream.js';
import type { Descriptor } from './manifest.js';
import type { Platform } from './platform.js';
import type { FetchedManifest, ResolvedImage } from './resolve.js';

/** A name docker records for a pulled or loaded image in `repositories.json` (familiar repository form). */
export interface RepositoryName {
  repository: string;
  tag?: string;
  /** The digest a pull by this name recorded: the index digest for a multi-platform tag. */
  digest?: string;
}

/**
 * One image, wherever it lives — a registry, an OCI layout directory, a `docker save` archive — behind one
 * interface, verified the same way.
 */
export interface ImageSource {
  /** What the user wrote (`127.0.0.1:5000/etch/a:1`, `oci:/images/app:v1`). */
  readonly description: string;
  /** Resolves the image for a platform (the host's when absent). */
  resolve(options?: { platform?: Platform | string; signal?: AbortSignal }): Promise<ResolvedImage>;
  /**
   * Streams a blob of the resolved image, verified against its descriptor. `verifyDigest: false` is for a
   * consumer that hashes the bytes itself (every {@link ImageTarget} does, or its registry does): local files
   * are then only checked for size; what comes over the network is always verified.
   */
  openBlob(
    descriptor: Descriptor,
    options?: {
      signal?: AbortSignal;
      onProgress?: (progress: BlobProgress) => void;
      verifyCached?: boolean;
      verifyDigest?: boolean;
    },
  ): AsyncGenerator<Buffer>;
  /** Puts a blob in the local cache ahead of use, when the source has one (registries with a cache). */
  prefetch?(
    descriptor: Descriptor,
    options?: { signal?: AbortSignal; onProgress?: (progress: BlobProgress) => void },
  ): Promise<'cached' | 'downloaded'>;
  /**
   * The document the name points to (an image manifest or an index), exactly as stored: what a copy needs to
   * keep digests. Absent for sources that have no stored manifest (a `docker save` archive).
   */
  topManifest?(options?: { signal?: AbortSignal }): Promise<FetchedManifest>;
  /** A manifest or index the top document refers to, verified against its digest. */
  manifestByDigest?(descriptor: Descriptor, options?: { signal?: AbortSignal }): Promise<FetchedManifest>;
  /** The registry repository the blobs live in, so a target in the same registry can mount them. */
  readonly origin?: { registry: string; repository: string };
  /** The names docker would record for this image after a pull or load: none when the source has no name. */
  names(image: ResolvedImage): RepositoryName[];
  /** The full repository name to record as where layers came from (`docker.io/library/alpine`), if any. */
  readonly sourceRepository?: string;
  close(): Promise<void>;
}
