/** Media types of manifests, configs and layers this client knows. */
export const MediaType = {
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_MANIFEST_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_SCHEMA1: 'application/vnd.docker.distribution.manifest.v1+json',
  DOCKER_SCHEMA1_SIGNED: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  DOCKER_LAYER: 'application/vnd.docker.image.rootfs.diff.tar',
  DOCKER_LAYER_GZIP: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DOCKER_FOREIGN_LAYER: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  OCI_LAYER: 'application/vnd.oci.image.layer.v1.tar',
  OCI_LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OCI_LAYER_ZSTD: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OCI_NONDISTRIBUTABLE_LAYER: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
} as const;

/**
 * The Accept list for resolving images: the two manifest types and, always, the two index types (without them
 * registries answer MANIFEST_UNKNOWN or down-convert). Schema 1 is not asked for.
 */
export const IMAGE_ACCEPT: readonly string[] = [
  MediaType.OCI_INDEX,
  MediaType.DOCKER_MANIFEST_LIST,
  MediaType.OCI_MANIFEST,
  MediaType.DOCKER_MANIFEST,
];

const INDEX_TYPES = new Set<string>([MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST]);
const MANIFEST_TYPES = new Set<string>([MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST]);
const SCHEMA1_TYPES = new Set<string>([MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED]);
const CONFIG_TYPES = new Set<string>([MediaType.DOCKER_CONFIG, MediaType.OCI_CONFIG]);

/** An image index or docker manifest list. */
export function isIndexType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

/** An image manifest (docker schema 2 or OCI). */
export function isManifestType(mediaType: string): boolean {
  return MANIFEST_TYPES.has(mediaType);
}

/** Docker schema 1, which this client refuses. */
export function isSchema1Type(mediaType: string): boolean {
  return SCHEMA1_TYPES.has(mediaType);
}

/** A container image config (what a runnable image's manifest points to). */
export function isImageConfigType(mediaType: string): boolean {
  return CONFIG_TYPES.has(mediaType);
}

/** A layer whose bytes live outside the registry (`urls`): docker foreign layers, OCI non-distributable layers. */
export function isForeignLayerType(mediaType: string): boolean {
  return mediaType === MediaType.DOCKER_FOREIGN_LAYER || mediaType.startsWith(MediaType.OCI_NONDISTRIBUTABLE_LAYER);
}

/**
 * A layer type an engine can apply (moby's `checkSupportedMediaType`): the docker and OCI families, plus the
 * generic types some tools write. Artifacts with other layer types are not images.
 */
export function isImageLayerType(mediaType: string): boolean {
  if (mediaType.startsWith('application/vnd.docker.ai.')) return false;
  return (
    mediaType.startsWith('application/vnd.oci.image.') ||
    mediaType.startsWith('application/vnd.docker.') ||
    mediaType === 'application/octet-stream' ||
    mediaType === 'application/json' ||
    mediaType === 'text/html' ||
    mediaType === ''
  );
}

/** The type without parameters, lower-cased (`application/json; charset=utf-8` → `application/json`). */
export function bareMediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}
