export { copyImage, type CopyOptions, type CopyProgress, type CopyResult } from './copy.js';
