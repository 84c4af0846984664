import { EtchError } from '@etch/format';
import { assertDigest } from './digest.js';
import { MediaType, bareMediaType, isIndexType, isManifestType, isSchema1Type } from './media-types.js';
import type { Platform } from './platform.js';

/** A content descriptor (OCI image-spec `descriptor.md`). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  /** Anything else the descriptor carried (artifactType, data…), kept as received. */
  [key: string]: unknown;
}

/** An image manifest (docker schema 2 or OCI), or an OCI artifact manifest with config and layers. */
export interface ImageManifestJson {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

/** An image index or docker manifest list. */
export interface ImageIndexJson {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

function bad(what: string, why: string, cause?: unknown): EtchError {
  return new EtchError('ETCH_BAD_MANIFEST', `${what} ${why}.`, cause === undefined ? {} : { cause });
}

/** Parses manifest bytes as JSON, with a clear error for anything else. */
export function parseJsonDocument(bytes: Buffer, what: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    throw bad(what, 'is not JSON', cause);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(what, 'is not a JSON object');
  return json as Record<string, unknown>;
}

/**
 * The media type of a manifest document: the `Content-Type` when it is specific and agrees with the body,
 * otherwise what the body says (its `mediaType` field, or its shape: `manifests[]` is an index, `config` +
 * `layers` a manifest). Schema 1 is refused with `ETCH_UNSUPPORTED_MANIFEST`, whatever the header claims.
 */
export function detectManifestMediaType(
  json: Record<string, unknown>,
  contentType: string | undefined,
  what: string,
): string {
  const header = bareMediaType(contentType);
  if (json['schemaVersion'] === 1 || isSchema1Type(header)) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_MANIFEST',
      `${what} is a Docker schema 1 manifest, which this client does not support (docker removed it too). Re-push the image with a current docker or skopeo.`,
      { details: { mediaType: header || MediaType.DOCKER_SCHEMA1 } },
    );
  }
  const declared = typeof json['mediaType'] === 'string' ? json['mediaType'] : undefined;
  const shape = Array.isArray(json['manifests'])
    ? 'index'
    : typeof json['config'] === 'object' && json['config'] !== null && Array.isArray(json['layers'])
      ? 'manifest'
      : undefined;
  const fits = (type: string) =>
    shape === 'index' ? !isManifestType(type) : shape === 'manifest' ? !isIndexType(type) : true;
  const generic =
    header === '' || header === 'application/json' || header === 'text/plain' || header === 'application/octet-stream';
  if (declared !== undefined && fits(declared) && (generic || declared !== header)) return declared;
  if (!generic && fits(header)) return header;
  if (shape === 'index') return MediaType.OCI_INDEX;
  if (shape === 'manifest') {
    const configType = (json['config'] as { mediaType?: unknown }).mediaType;
    return configType === MediaType.DOCKER_CONFIG ? MediaType.DOCKER_MANIFEST : MediaType.OCI_MANIFEST;
  }
  if (!generic) return header;
  throw bad(what, 'has no media type and is neither a manifest nor an index');
}

function checkDescriptor(d: unknown, what: string): Descriptor {
  const desc = d as Partial<Descriptor> | null;
  if (typeof desc !== 'object' || desc === null) throw bad(what, 'is not a descriptor object');
  if (typeof desc.mediaType !== 'string') throw bad(what, 'has no mediaType');
  assertDigest(desc.digest, `${what}'s digest`);
  if (typeof desc.size !== 'number' || !Number.isSafeInteger(desc.size) || desc.size < 0)
    throw bad(what, 'has no valid size');
  if (desc.urls !== undefined && (!Array.isArray(desc.urls) || desc.urls.some((u) => typeof u !== 'string')))
    throw bad(what, 'has invalid urls');
  return desc as Descriptor;
}

/** Validates an image manifest document and returns it typed. */
export function asImageManifest(json: Record<string, unknown>, what: string): ImageManifestJson {
  if (json['schemaVersion'] !== 2) throw bad(what, `has schemaVersion ${JSON.stringify(json['schemaVersion'])}, not 2`);
  const config = checkDescriptor(json['config'], `${what}'s config`);
  const layers = json['layers'];
  if (!Array.isArray(layers)) throw bad(what, 'has no layers array');
  layers.forEach((layer, i) => checkDescriptor(layer, `${what}'s layer ${i + 1}`));
  return { ...(json as object), config, layers: layers as Descriptor[] } as ImageManifestJson;
}

/** Validates an image index document and returns it typed. */
export function asImageIndex(json: Record<string, unknown>, what: string): ImageIndexJson {
  if (json['schemaVersion'] !== 2) throw bad(what, `has schemaVersion ${JSON.stringify(json['schemaVersion'])}, not 2`);
  const manifests = json['manifests'];
  if (!Array.isArray(manifests)) throw bad(what, 'has no manifests array');
  manifests.forEach((m, i) => checkDescriptor(m, `${what}'s entry ${i + 1}`));
  return json as unknown as ImageIndexJson;
}
