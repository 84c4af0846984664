export type { BaseImageProgress, BaseImageSourceInfo, BaseMode, OpenBaseImageOptions, OpenedBaseImage, SourceKind } from './types.js';
