export {
  RegistryClient,
  type BlobOptions,
  type CallOptions,
  type RegistryClientOptions,
  type RequestInit,
  type ResolveOptions,
} from './registry-client.js';
export { openImageSource, RegistryImageSource } from './open-source.js';
export { OciLayoutSource } from './oci-layout.js';
export {
  OciLayoutTarget,
  RegistryImageTarget,
  openImageTarget,
  type BlobOrigin,
  type BlobWrite,
  type ImageTarget,
  type TargetWriteOptions,
} from './target.js';
export { DockerArchiveSource } from './docker-archive.js';
export { DockerArchiveTarget } from './docker-archive-target.js';
export type { ImageSource, RepositoryName } from './source.js';
export {
  resolveImage,
  selectFromIndex,
  offeredPlatforms,
  type FetchedManifest,
  type ResolvedImage,
} from './resolve.js';
export type { BlobProgress } from './blob-stream.js';
export { BlobCache } from './blob-cache.js';
export { decompressLayer } from './decompress.js';
export {
  DOCKER_HUB,
  familiarString,
  makeReference,
  normalizeRegistry,
  parseReference,
  toReference,
  withTarget,
  type ImageReference,
} from './reference.js';
export {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  platformRank,
  samePlatform,
  toPlatform,
  type Platform,
} from './platform.js';
export {
  MediaType,
  IMAGE_ACCEPT,
  isForeignLayerType,
  isImageConfigType,
  isImageLayerType,
  isIndexType,
  isManifestType,
  isSchema1Type,
} from './media-types.js';
export {
  asImageIndex,
  asImageManifest,
  detectManifestMediaType,
  parseJsonDocument,
  type Descriptor,
  type ImageIndexJson,
  type ImageManifestJson,
} from './manifest.js';
export { assertDigest, digestBytes, isVerifiableDigest, sha256 } from './digest.js';
export {
  chainCredentials,
  credentialKey,
  dockerConfigCredentials,
  dockerConfigPath,
  runCredentialHelper,
  staticCredentials,
  type CredentialSource,
  type Credentials,
  type FoundCredentials,
} from './credentials.js';
export { pullScope, pushScope } from './auth.js';
export {
  blobExists,
  mountBlob,
  startUpload,
  uploadBlob,
  type BlobContent,
  type UploadOptions,
  type UploadProgress,
  type UploadedBlob,
} from './blob-upload.js';
export { deleteFromRegistry, putManifest, type PutManifestOptions } from './manifest-push.js';
export { writeError } from './registry-errors.js';
