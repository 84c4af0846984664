import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { EtchError, assertBaseImageName } from '@etch/format';

/** A base image ready to stream: the size must be known before the first byte (the tar header holds it). */
export interface BaseImage {
  name: string;
  size: number;
  stream: Readable;
}

/**
 * Opens a local raw image or zip as a {@link BaseImage}; the archive name is the file's base name.
 * @throws EtchError `ETCH_IO` when the file cannot be read, `ETCH_BAD_ENTRY` when its name is not an image name.
 */
export async function baseImageFromFile(path: string, name: string = basename(path)): Promise<BaseImage> {
  assertBaseImageName(name);
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a regular file');
    size = info.size;
  } catch (cause) {
    throw new EtchError('ETCH_IO', `Cannot read the base image ${path}: ${(cause as Error).message}.`, {
      cause,
      details: { path },
    });
  }
  return { name, size, stream: createReadStream(path, { highWaterMark: 256 * 1024 }) };
}
