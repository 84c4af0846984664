export {
  closeEtchStream,
  prepareEtchStream,
  startEtchStream,
  streamDockerAssets,
  streamFiles,
  type FileToInject,
} from './lifecycle.js';
export {
  createEtch,
  type CreateEtchOptions,
  type CreateEtchResult,
  type InjectSource,
  type PartitionSummary,
  type PreloadImages,
} from './create.js';
export { writeEtchFile, temporaryPathFor, type WriteEtchFileOptions } from './write-file.js';
export { baseImageFromFile, type BaseImage } from './base-image-file.js';
export { walkDirectory, type WalkOptions } from './directory-source.js';
export type { EtchProgress, ProgressListener } from './progress.js';
export {
  LayerPrefetcher,
  getManifestsForImages,
  resolvePreloadImages,
  type LegacyAuth,
  type PrefetchProgress,
  type PreloadImage,
  type ResolvePreloadOptions,
} from './resolve-images.js';
export {
  appsJsonFor,
  appsJsonFormatFor,
  compareSupervisorVersions,
  formatAppsJson,
  imagesOfTargetState,
  mergeAppsJson,
  parseSupervisorVersion,
  parseTargetState,
  validateAppsJson,
  type AppsJson,
  type AppsJsonFormat,
  type AppsJsonOptions,
  type AppsJsonV1,
  type AppsJsonV1Entry,
  type AppsJsonV2,
  type AppsJsonV2App,
  type AppsJsonV2Service,
  type AppsJsonV3,
  type FleetTargetState,
  type LegacyTargetApp,
  type LegacyTargetState,
  type StringMap,
  type SupervisorVersion,
  type TargetApp,
  type TargetRelease,
  type TargetService,
  type TargetState,
  type ValidatedAppsJson,
} from './apps-json.js';
