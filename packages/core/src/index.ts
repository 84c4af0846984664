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
