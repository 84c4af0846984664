export {
  dockerStoreEntries,
  type DockerStoreOptions,
  type LayerProgress,
  type StoreImage,
  type StoreLayer,
  type StoredImage,
} from './store.js';
export { convertLayer, type ConvertedLayer, type StoreEntry } from './layer-converter.js';
export {
  mergeRepositories,
  parseRepositories,
  referencesOf,
  serializeRepositories,
  type ImageName,
  type RepositoriesJson,
} from './repositories.js';
export { cacheIdFor, chainIds, linkIdFor } from './ids.js';
export { Crc64 } from './crc64.js';
export { TarSplitBuilder } from './tar-split.js';
export { readBaseRepositories, readRepositoriesAt, type ReadBaseRepositoriesOptions } from './base-repositories.js';
export { measureStore, type MeasureStoreOptions, type StoreMeasure } from './measure.js';
export { stageLayers, LayerStage, type StageOptions, type StagedLayer } from './layer-stager.js';
export {
  ConvertedLayerCache,
  type CachedConversion,
  type ConvertedLayerCacheOptions,
  type ConvertedLayerKey,
  type ConvertedLayerUsage,
} from './converted-cache.js';
export { StagePool, type StagePoolOptions, type StageLease } from './stage-pool.js';
export {
  LayerPrefetcher,
  getManifestsForImages,
  resolvePreloadImages,
  type LegacyAuth,
  type PrefetchProgress,
  type PreloadImage,
  type ResolvePreloadOptions,
} from './resolve-images.js';
