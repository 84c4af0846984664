import type { Readable } from 'node:stream';
import type { Logger } from '@etch/format';
import type { BufferPool } from '@etch/disk';
import type { RegistryClient } from '@etch/registry';
import type { MinRate } from '@etch/registry/http';
import type { Dispatcher } from 'undici';

/**
 * What to do with a zipped base image:
 * - `extract` (default): stream the disk image out of the zip; the `.etch` holds the raw image.
 * - `passthrough`: put the zip itself into the `.etch` (its name ends in `.zip`); the flasher unzips.
 */
export type BaseMode = 'extract' | 'passthrough';

/** The kind of source a base image came from. */
export type SourceKind = 'file' | 'zip' | 'compressed' | 'url' | 'eci';

/**
 * Progress of a base image:
 * - `download`: bytes fetched over the network (a URL, a registry blob) before they can be streamed from disk;
 * - `scan`: a preparatory pass that counts the uncompressed size (gzip beyond what ISIZE proves, zstd without
 *   a content size);
 * - `read`: bytes of the image delivered to the consumer; `total` is the image size.
 */
export interface BaseImageProgress {
  phase: 'download' | 'scan' | 'read';
  bytes: number;
  total: number | undefined;
}

/** Options of {@link openBaseImage}. */
export interface OpenBaseImageOptions {
  /** How to handle zips (default `extract`, see {@link BaseMode}). */
  mode?: BaseMode;
  /**
   * Cache directory for URL and ECI sources. Default `$XDG_CACHE_HOME/etch`, else `~/.cache/etch`.
   */
  cacheDir?: string;
  /** Cache URL and ECI sources (default true). Local files are never cached. */
  cache?: boolean;
  /**
   * Use only the cache: no network at all. A URL or ECI spec must have a complete cache entry (the newest
   * one for the same spec and mode), else the call fails with `ETCH_NOT_FOUND`.
   */
  offline?: boolean;
  /** Registry client for `eci:` specs (its credentials, insecure registries, dispatcher); one is made if absent. */
  registry?: RegistryClient;
  /** Platform for an `eci:` reference that is an index (`linux/arm64`); required only when the index has several. */
  platform?: string;
  /** undici dispatcher for URL sources (proxies, tests). */
  dispatcher?: Dispatcher;
  /** Tries per HTTP request of a URL source, including the first (default 5). */
  retries?: number;
  /**
   * The slowest a URL or ECI download may arrive: at least `bytes` in every `windowMs` of waiting (default
   * 1 KiB in 30 s, see `HttpOptions.minRate` in `@etch/registry`); slower fails with `ETCH_NETWORK` after a
   * few resumes. For `eci:` with a `registry` given, that client's own rate applies.
   */
  minRate?: MinRate;
  /** Cancels everything: pending requests, the stream (it errors with `ETCH_ABORTED`). */
  signal?: AbortSignal;
  /** Progress of downloads, scans and the delivered stream. */
  onProgress?: (event: BaseImageProgress) => void;
  /** Where debug and warning lines go (silent by default). */
  logger?: Logger;
  /**
   * Read a raw local image in buffers lent from this pool, for a writer that gives them back once written
   * (`writeEtchFile`'s `bufferPool`): a long copy then reuses a few buffers instead of one per chunk.
   * Only for a consumer that is the chunks' last user (see `BufferPool` in `@etch/disk`).
   */
  bufferPool?: BufferPool;
}

/** Where a base image came from, and how. */
export interface BaseImageSourceInfo {
  kind: SourceKind;
  /** The spec as given (a URL with its credentials removed). */
  spec: string;
  /** The mode that applied (zips only; otherwise `extract`). */
  mode: BaseMode;
  /** For zips: the entry the image was read from (extract mode). */
  entryName?: string;
  /** For compressed images: the compression. */
  compression?: 'gzip' | 'xz' | 'zstd';
  /** For ECI: the tag a version selector resolved to (or the exact tag asked for). */
  resolvedVersion?: string;
  /** For ECI: the manifest digest; for a disk layer: see `digest`. */
  manifestDigest?: string;
  /** The sha256 of the delivered bytes when known up front (cache entries, ECI raw disk layers). */
  digest?: string;
  /** True when the bytes come from the local cache. */
  fromCache: boolean;
  /** For URLs and ECI: the ETag / Last-Modified the bytes were fetched under. */
  etag?: string;
  lastModified?: string;
}

/**
 * A base image ready to stream into a `.etch`: the same shape as `@etch/core`'s `BaseImage`. `size` is known
 * before the first byte; `stream` delivers exactly `size` bytes or errors (`ETCH_SIZE_MISMATCH`,
 * `ETCH_DIGEST_MISMATCH`, `ETCH_NETWORK`, `ETCH_ABORTED`…). Consume it or destroy it: destroying releases
 * files and connections.
 */
export interface OpenedBaseImage {
  /** The archive name of the base image entry (`balena.img`, `balena.zip`). */
  name: string;
  size: number;
  stream: Readable;
  source: BaseImageSourceInfo;
}
