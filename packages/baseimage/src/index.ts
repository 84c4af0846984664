export { openBaseImage, listCache, cleanCache, specKind, type SpecKind } from './open.js';
export type {
  BaseImageProgress,
  BaseImageSourceInfo,
  BaseMode,
  OpenBaseImageOptions,
  OpenedBaseImage,
  SourceKind,
} from './types.js';
export { ImageCache, cacheKey, defaultCacheDir, type CacheEntry, type CacheRecord } from './cache.js';
export {
  parseVersion,
  parseRange,
  parseSelector,
  satisfies,
  compareVersions,
  selectTag,
  versionTags,
  isEsr,
  type Version,
  type Range,
  type Selector,
} from './versions.js';
export { parseEciSpec, EciMediaType, EciAnnotation, type EciSpec } from './eci.js';
export { classifyName, type NameKind, type FileCompression } from './names.js';
export { xzUncompressedSize, zstdContentSize } from './compressed.js';
export {
  pushEci,
  parseEciDisk,
  ECI_DISK_TYPES,
  type EciDisk,
  type EciDiskType,
  type EciFormat,
  type EciImage,
  type EciPushProgress,
  type EciPushedBlob,
  type EciRole,
  type PushEciOptions,
  type PushEciResult,
} from './eci-push.js';
export {
  pullEci,
  type EciPullProgress,
  type EciPulledFile,
  type EciShape,
  type PullEciOptions,
  type PullEciResult,
} from './eci-pull.js';
