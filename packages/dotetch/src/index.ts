// The umbrella: the original dotetch API by name, and each package as a namespace. No logic of its own.
export {
  closeEtchStream,
  prepareEtchStream,
  startEtchStream,
  streamDockerAssets,
  streamFiles,
  createEtch,
  writeEtchFile,
} from '@etch/core';
export { getManifestsForImages, resolvePreloadImages } from '@etch/docker-store';
export type { CreateEtchOptions, CreateEtchResult, EtchProgress, FileToInject, InjectSource } from '@etch/core';
export { promisePacker, readEtch } from '@etch/tar';
export type { EntryContent, EntryHeader, EntryWriter, EtchEntry } from '@etch/tar';
export { EtchError, isEtchError, injectPath } from '@etch/format';
export type { EtchErrorCode } from '@etch/format';
export * as format from '@etch/format';
export * as disk from '@etch/disk';
export * as tar from '@etch/tar';
export * as core from '@etch/core';
export * as balena from '@etch/balena';
export { readBaseRepositories } from '@etch/docker-store';
export type { StoreImage, StoredImage, RepositoriesJson } from '@etch/docker-store';
export * as dockerStore from '@etch/docker-store';
export { applyEtch } from '@etch/apply';
export type { ApplyOptions, ApplyProgress, ApplyResult } from '@etch/apply';
export * as apply from '@etch/apply';
export * as registry from '@etch/registry';
export * as baseimage from '@etch/baseimage';
export * as image from '@etch/image';
export * as serve from '@etch/serve';
