export { copyImage, type BlobTransfer, type CopyOptions, type CopyProgress, type CopyResult } from './copy.js';
export { Image, type ImageConfig, type ImageOptions, type SavedImage } from './image.js';
export { filesLayer, type AddFilesOptions, type FilesLayer } from './files-layer.js';
export { IgnoreRules } from './ignore.js';
