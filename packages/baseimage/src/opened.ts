import type { EtchError } from '@etch/format';
import type { BaseImageSourceInfo } from './types.js';

/** A source opened far enough to know its name and size; the bytes are not checked yet. */
export interface OpenedSource {
  name: string;
  size: number;
  /** Exactly `size` bytes, unless the source is corrupt: {@link sizeChecked} wraps it. */
  bytes: AsyncIterable<Buffer>;
  info: Omit<BaseImageSourceInfo, 'spec' | 'mode' | 'fromCache'> & Partial<Pick<BaseImageSourceInfo, 'fromCache'>>;
  /** Releases what the source holds (zip, temp file, HTTP client); runs once, whether or not `bytes` was read. */
  close?: () => void | Promise<void>;
  /** How errors from `bytes` that are not EtchErrors are reported. */
  wrapError?: (error: unknown) => EtchError;
}
