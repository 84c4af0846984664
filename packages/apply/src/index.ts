export { applyEtch, type ApplyOptions, type ApplyProgress, type ApplyResult } from './apply.js';
export { growPartitionTo } from './grow.js';
export { detectFilesystem, type Filesystem } from './filesystem.js';
export { Ext4Injector } from './ext4-injector.js';
export { FatInjector } from './fat-injector.js';
export type { InjectedFile, PartitionInjector } from './injector.js';
