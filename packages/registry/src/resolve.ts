import { EtchError } from '@etch/format';
import {
  asImageIndex,
  asImageManifest,
  type Descriptor,
  type ImageIndexJson,
  type ImageManifestJson,
} from './manifest.js';
import { isForeignLayerType, isImageConfigType, isImageLayerType, isIndexType, isManifestType } from './media-types.js';
import { formatPlatform, normalizePlatform, platformRank, type Platform } from './platform.js';

/** A manifest or index document as fetched: the exact bytes, their digest and media type. */
export interface FetchedManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  json: Record<string, unknown>;
}

/** An image resolved for one platform: what a puller needs to fetch and verify it. */
export interface ResolvedImage {
  /** Where it came from, for messages (`127.0.0.1:5000/etch/a:1`, `oci:/path:tag`). */
  source: string;
  /** Digest of the platform's image manifest. */
  digest: string;
  /** Digest of the index or manifest list the tag pointed to, when it was one. */
  indexDigest?: string;
  /** Media type of the image manifest. */
  mediaType: string;
  /** The platform chosen (from the index entry, or the config for a single-platform image). */
  platform: Platform;
  manifest: ImageManifestJson;
  /** The manifest exactly as served (its sha256 is `digest`). */
  manifestBytes: Buffer;
  config: Descriptor;
  /** The config exactly as served and verified against `config.digest` (its sha256 is the image ID). */
  configBytes: Buffer;
  layers: Descriptor[];
}

const ATTESTATION = 'attestation-manifest';

function isAttestation(d: Descriptor): boolean {
  return (
    d.annotations?.['vnd.docker.reference.type'] === ATTESTATION ||
    (d.platform?.os === 'unknown' && d.platform?.architecture === 'unknown')
  );
}

/** What an index offers, for the error when nothing fits: `linux/amd64, linux/arm/v7`. */
export function offeredPlatforms(index: ImageIndexJson): string[] {
  return index.manifests
    .filter((d) => d.platform && !isAttestation(d))
    .map((d) => formatPlatform(normalizePlatform(d.platform as Platform)));
}

/**
 * Picks the entry of an index that serves `wanted`: the exact platform, else the closest older compatible
 * variant (an arm/v7 device takes v6, never the reverse). Attestations and unknown media types are never
 * chosen; entries without a platform fit anything, as in moby. Ties keep index order.
 */
export function selectFromIndex(index: ImageIndexJson, wanted: Platform, what: string): Descriptor {
  let best: { d: Descriptor; rank: number } | undefined;
  for (const d of index.manifests) {
    if (isAttestation(d) || !(isManifestType(d.mediaType) || isIndexType(d.mediaType))) continue;
    const rank = d.platform ? platformRank(wanted, d.platform) : 0;
    if (rank !== undefined && (best === undefined || rank < best.rank)) best = { d, rank };
  }
  if (best) return best.d;
  const offered = offeredPlatforms(index);
  throw new EtchError(
    'ETCH_PLATFORM_NOT_FOUND',
    `${what} has no image for ${formatPlatform(wanted)}; it offers ${offered.length ? offered.join(', ') : 'no platform-specific images'}. Pass --platform with one of those, or use an image built for the device.`,
    { details: { platform: formatPlatform(wanted), available: offered } },
  );
}

export interface ResolveDeps {
  /** Fetches a manifest or index by digest (verified against it). */
  byDigest(descriptor: Descriptor): Promise<FetchedManifest>;
  /** Fetches the config blob, verified against the descriptor. */
  config(descriptor: Descriptor): Promise<Buffer>;
  /** Foreign layers (`urls`) are refused unless this is true. */
  allowForeignLayers?: boolean;
}

function configPlatform(config: Buffer): Platform | undefined {
  try {
    const json = JSON.parse(config.toString('utf8')) as { os?: unknown; architecture?: unknown; variant?: unknown };
    if (typeof json.os !== 'string' || typeof json.architecture !== 'string') return undefined;
    return normalizePlatform({
      os: json.os,
      architecture: json.architecture,
      ...(typeof json.variant === 'string' ? { variant: json.variant } : {}),
    });
  } catch {
    throw new EtchError('ETCH_BAD_MANIFEST', 'The image config is not JSON.');
  }
}

/**
 * From the document a reference points to down to one image for `wanted`: through an index (nested ones
 * too) by platform, then the manifest and its config. A single-platform image whose config names another
 * platform is refused too: a device would not run it.
 */
export async function resolveImage(
  top: FetchedManifest,
  wanted: Platform,
  what: string,
  deps: ResolveDeps,
): Promise<ResolvedImage> {
  let current = top;
  let indexDigest: string | undefined;
  let chosen: Platform | undefined;
  for (let depth = 0; isIndexType(current.mediaType); depth += 1) {
    if (depth > 4) throw new EtchError('ETCH_BAD_MANIFEST', `${what} nests indexes more than 4 deep.`);
    const index = asImageIndex(current.json, what);
    indexDigest ??= current.digest;
    const entry = selectFromIndex(index, wanted, what);
    if (entry.platform) chosen = normalizePlatform(entry.platform);
    current = await deps.byDigest(entry);
  }
  if (!isManifestType(current.mediaType)) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_MANIFEST',
      `${what} is a ${current.mediaType || 'document of unknown type'}, not a container image manifest.`,
      { details: { mediaType: current.mediaType } },
    );
  }
  const manifest = asImageManifest(current.json, what);
  if (!isImageConfigType(manifest.config.mediaType)) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_MANIFEST',
      `${what} is not a container image: its config is ${manifest.config.mediaType}${manifest.artifactType ? ` (artifact ${manifest.artifactType})` : ''}.`,
      { details: { mediaType: manifest.config.mediaType } },
    );
  }
  for (const [i, layer] of manifest.layers.entries()) {
    if (!isImageLayerType(layer.mediaType)) {
      throw new EtchError(
        'ETCH_UNSUPPORTED_MANIFEST',
        `Layer ${i + 1} of ${what} has media type ${layer.mediaType}, which is not an image layer.`,
        { details: { mediaType: layer.mediaType } },
      );
    }
    if (isForeignLayerType(layer.mediaType) && layer.urls?.length && !deps.allowForeignLayers) {
      throw new EtchError(
        'ETCH_UNSUPPORTED_MANIFEST',
        `Layer ${i + 1} of ${what} is a foreign (non-distributable) layer served from ${layer.urls.map((u) => new URL(u).host).join(', ')}; allow foreign layers to fetch it from there.`,
        { details: { mediaType: layer.mediaType, digest: layer.digest } },
      );
    }
  }
  const configBytes = await deps.config(manifest.config);
  const fromConfig = configPlatform(configBytes);
  if (chosen === undefined && fromConfig !== undefined) {
    if (platformRank(wanted, fromConfig) === undefined) {
      throw new EtchError(
        'ETCH_PLATFORM_NOT_FOUND',
        `${what} is a single-platform image for ${formatPlatform(fromConfig)}, not ${formatPlatform(wanted)}. Pass --platform ${formatPlatform(fromConfig)} if that is the device's platform.`,
        {
          details: { platform: formatPlatform(wanted), available: [formatPlatform(fromConfig)] },
        },
      );
    }
    chosen = fromConfig;
  }
  return {
    source: what,
    digest: current.digest,
    ...(indexDigest !== undefined ? { indexDigest } : {}),
    mediaType: current.mediaType,
    platform: chosen ?? wanted,
    manifest,
    manifestBytes: current.bytes,
    config: manifest.config,
    configBytes,
    layers: manifest.layers,
  };
}
