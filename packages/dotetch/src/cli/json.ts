/**
 * The `--json` output of every command: one versioned document per command, built from the same objects
 * (`baseImage`, `partition`, `image`, `layer`) wherever a command knows them. A field a command cannot know
 * is absent, never null or a different shape. Documented in the README ("JSON output"); a change that is
 * not an added optional field bumps {@link SCHEMA_VERSION}.
 */
import type { BaseImageSourceInfo, CacheEntry } from '@etch/baseimage';
import type { ApplyResult } from '@etch/apply';
import type { CreateEtchResult } from '@etch/core';
import type { EtchRequirements, InjectEntryType } from '@etch/format';
import { formatPlatform, type ResolvedImage } from '@etch/registry';
import type { PreloadImage, StoredImage } from '@etch/docker-store';
import type { Compression } from '@etch/tar';

import { SCHEMA_VERSION } from './schema.js';

export { SCHEMA_VERSION };

/** A base OS image: in a `.etch`, written by `create`, flashed by `apply`, or kept in the cache. */
export interface JsonBaseImage {
  /** Its name in the `.etch` (the raw image's name once a zip is unpacked, for `apply`). */
  name: string;
  /** Bytes. */
  size: number;
  /** `raw`, or `zip` when the `.etch` carries the zip itself. */
  container?: 'raw' | 'zip';
  /** Where it came from (`create`, `cache ls`): kind (`file`, `url`, `eci` …), spec, mode and what resolved. */
  source?: Partial<BaseImageSourceInfo> & { kind: string; spec: string };
  /** `cache ls`: hex sha256 of the bytes and when they were stored. */
  sha256?: string;
  storedAt?: string;
}

/** A partition of the disk, numbered as in `inject/<n>/`. */
export interface JsonPartition {
  number: number;
  /** Entries written into it (files, folders, links …). */
  entries: number;
  /** Bytes of file content. */
  bytes: number;
  /** `inspect`: entries by type. */
  types?: Partial<Record<InjectEntryType, number>>;
  /** `create`, `inspect`: what `requirements.json` asks the flasher to make room for (an upper bound). */
  announced?: { entries: number; bytes: number };
  /** `apply`: the filesystem written, the partition's final size and whether it was grown. */
  filesystem?: 'ext' | 'fat';
  size?: number;
  grown?: boolean;
}

/** A layer of a container image. */
export interface JsonLayer {
  /** The blob's digest and size as the manifest lists them (compressed). */
  digest?: string;
  size?: number;
  mediaType?: string;
  /** The uncompressed tar's digest (the config's `rootfs.diff_ids`) and the engine's chain ID. */
  diffId?: string;
  chainId?: string;
  /** What the layer takes in the engine store (`docker images` adds these up). */
  unpackedSize?: number;
}

/** A container image: resolved (`manifest`), preloaded (`create`), or found in a `.etch` (`inspect`). */
export interface JsonImage {
  /** The image ID: the config's digest, as `docker images --no-trunc` shows it. */
  imageId: string;
  /** What was asked for (`alpine:3.20`, `oci:./app:v1`). */
  reference?: string;
  /** Names the engine store lists it under: `repository:tag` and `repository@sha256:…`. */
  tags?: string[];
  digests?: string[];
  /** The platform's image manifest: digest, media type; and the index it was chosen from. */
  digest?: string;
  mediaType?: string;
  indexDigest?: string;
  platform?: string;
  /** The partition whose engine store holds it. */
  partition?: number;
  /** `inspect`: false for a name the base OS's store already had, whose layers are not in this `.etch`. */
  preloaded?: boolean;
  /** Σ of the layers' `unpackedSize`: the SIZE `docker images` shows. */
  unpackedSize?: number;
  config?: { digest: string; size: number; mediaType: string };
  layers?: JsonLayer[];
}

/** `etch create --json`. */
export interface CreateJson {
  schemaVersion: typeof SCHEMA_VERSION;
  /** The file written, or `-` for stdout. */
  output: string;
  version: string;
  compression: Compression;
  bytesWritten: number;
  durationMs: number;
  baseImage: JsonBaseImage;
  partitions: JsonPartition[];
  images: JsonImage[];
  /** Where the generated apps.json went (`inject/6/apps.json`), when one was written. */
  appsJson?: string;
}

/** `etch apply --json`. */
export interface ApplyJson {
  schemaVersion: typeof SCHEMA_VERSION;
  output: string;
  diskSize: number;
  verified: boolean;
  durationMs: number;
  baseImage: JsonBaseImage;
  partitions: JsonPartition[];
}

/** `etch inspect --json`. */
export interface InspectJson {
  schemaVersion: typeof SCHEMA_VERSION;
  /** The file read, or `-` for stdin. */
  file: string;
  version: string;
  compression: Compression;
  baseImage: JsonBaseImage;
  partitions: JsonPartition[];
  images: JsonImage[];
  /** Entries of a newer format minor version that were skipped. */
  skipped: string[];
}

/** `etch manifest --json`. */
export interface ManifestJson {
  schemaVersion: typeof SCHEMA_VERSION;
  image: JsonImage;
}

/** `etch cache ls --json` and `etch cache clean --json`. */
export interface CacheJson {
  schemaVersion: typeof SCHEMA_VERSION;
  dir: string;
  /** `ls`: the cached base images, newest first; `clean`: those removed. */
  baseImages: JsonBaseImage[];
  /** Layers and manifests in `<dir>/oci` (`clean`: removed). */
  layers: { count: number; bytes: number };
  /** Layers kept unpacked for rebuilds, in `<dir>/oci/converted` (`clean`: removed). */
  convertedLayers: { count: number; bytes: number };
}

/** What every command prints on stdout with `--json` when it fails. */
export interface ErrorJson {
  schemaVersion: typeof SCHEMA_VERSION;
  error: { code: string; message: string; exitCode: number };
}

/** Partitions as an array sorted by number, with what requirements.json announced for each. */
export function partitionsJson(
  partitions: Record<number, { entries: number; bytes: number }>,
  requirements?: EtchRequirements,
): JsonPartition[] {
  const numbers = new Set([
    ...Object.keys(partitions).map(Number),
    ...Object.keys(requirements?.partitions ?? {}).map(Number),
  ]);
  return [...numbers]
    .sort((a, b) => a - b)
    .map((number) => {
      const written = partitions[number] ?? { entries: 0, bytes: 0 };
      const announced = requirements?.partitions[String(number)];
      return {
        number,
        entries: written.entries,
        bytes: written.bytes,
        ...(announced ? { announced: { entries: announced.entries, bytes: announced.bytes } } : {}),
      };
    });
}

/** `repository:tag` and `repository@digest` as docker prints them. */
export function storeNames(names: StoredImage['names']): { tags: string[]; digests: string[] } {
  return {
    tags: names.filter((n) => n.tag !== undefined).map((n) => `${n.repository}:${n.tag}`),
    digests: [...new Set(names.filter((n) => n.digest !== undefined).map((n) => `${n.repository}@${n.digest}`))],
  };
}

/** An image `create` resolved and wrote into the store of `partition`. */
export function preloadedImageJson(
  stored: StoredImage,
  preload: PreloadImage | undefined,
  partition: number,
): JsonImage {
  const resolved = preload?.resolved;
  return {
    imageId: stored.imageId,
    ...(preload ? { reference: preload.spec } : {}),
    ...storeNames(stored.names),
    ...(resolved ? resolvedFields(resolved) : {}),
    partition,
    unpackedSize: stored.size,
    layers: stored.layers.map((layer, i) => {
      const descriptor = resolved?.layers[i];
      return {
        ...(descriptor ? { digest: descriptor.digest, size: descriptor.size, mediaType: descriptor.mediaType } : {}),
        diffId: layer.diffId,
        chainId: layer.chainId,
        unpackedSize: layer.size,
      };
    }),
  };
}

function resolvedFields(image: ResolvedImage): Pick<JsonImage, 'digest' | 'mediaType' | 'indexDigest' | 'platform'> {
  return {
    digest: image.digest,
    mediaType: image.mediaType,
    ...(image.indexDigest !== undefined ? { indexDigest: image.indexDigest } : {}),
    platform: formatPlatform(image.platform),
  };
}

/** An image `manifest` resolved. */
export function resolvedImageJson(reference: string, image: ResolvedImage): JsonImage {
  return {
    imageId: image.config.digest,
    reference,
    ...resolvedFields(image),
    config: { digest: image.config.digest, size: image.config.size, mediaType: image.config.mediaType },
    layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
  };
}

/** The document `create --json` prints. */
export function createJson(
  result: CreateEtchResult,
  extra: {
    output: string;
    baseSource?: BaseImageSourceInfo;
    container: 'raw' | 'zip';
    preloads: readonly PreloadImage[];
    dataPartition: number;
    appsJson?: string;
  },
): CreateJson {
  return {
    schemaVersion: SCHEMA_VERSION,
    output: extra.output,
    version: result.version,
    compression: result.compression,
    bytesWritten: result.bytesWritten,
    durationMs: result.durationMs,
    baseImage: {
      ...result.baseImage,
      container: extra.container,
      ...(extra.baseSource ? { source: extra.baseSource } : {}),
    },
    partitions: partitionsJson(result.partitions, result.requirements),
    images: result.images.map((image, i) => preloadedImageJson(image, extra.preloads[i], extra.dataPartition)),
    ...(extra.appsJson !== undefined ? { appsJson: extra.appsJson } : {}),
  };
}

/** The document `apply --json` prints. */
export function applyJson(result: ApplyResult): ApplyJson {
  return {
    schemaVersion: SCHEMA_VERSION,
    output: result.output,
    diskSize: result.diskSize,
    verified: result.verified,
    durationMs: result.durationMs,
    baseImage: { ...result.baseImage, container: 'raw' },
    partitions: Object.entries(result.partitions)
      .map(([number, p]) => ({ number: Number(number), ...p }))
      .sort((a, b) => a.number - b.number),
  };
}

/** A cache entry as a base image. */
export function cachedBaseImageJson(entry: CacheEntry): JsonBaseImage {
  return {
    name: entry.name,
    size: entry.size,
    source: {
      kind: entry.kind,
      spec: entry.spec,
      mode: entry.mode,
      ...(entry.resolvedVersion !== undefined ? { resolvedVersion: entry.resolvedVersion } : {}),
      ...(entry.manifestDigest !== undefined ? { manifestDigest: entry.manifestDigest } : {}),
      ...(entry.etag !== undefined ? { etag: entry.etag } : {}),
      ...(entry.lastModified !== undefined ? { lastModified: entry.lastModified } : {}),
    },
    sha256: entry.sha256,
    storedAt: entry.storedAt,
  };
}

/** JSON text as every command prints it: indented, one final newline. */
export function jsonText(document: object): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}
