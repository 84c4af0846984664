import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { EtchError } from '@etch/format';
import { findZipImage, readFileChunks, readZipImage, type BufferPool } from '@etch/disk';
import { decodeError, decompress, uncompressedSize } from './compressed.js';
import { requireKind } from './names.js';
import type { OpenedSource } from './opened.js';
import type { BaseImageProgress, BaseMode } from './types.js';
import { openZipFile } from './zip.js';

/** Options of {@link openLocalImage}. */
export interface LocalOptions {
  mode: BaseMode;
  signal?: AbortSignal;
  onProgress?: (event: BaseImageProgress) => void;
  /** The name to classify (and to use) instead of the file's base name: a downloaded URL's name. */
  name?: string;
  /** Read a raw image in buffers lent from this pool (see {@link OpenBaseImageOptions.bufferPool}). */
  bufferPool?: BufferPool;
}

async function fileSize(path: string): Promise<number> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a regular file');
    return info.size;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new EtchError(
      code === 'ENOENT' ? 'ETCH_NOT_FOUND' : 'ETCH_IO',
      `Cannot read the base image ${path}: ${(cause as Error).message}.`,
      { cause, details: { path } },
    );
  }
}

function readError(path: string): (error: unknown) => EtchError {
  return (cause) =>
    new EtchError('ETCH_IO', `Reading ${path} failed: ${(cause as Error)?.message ?? String(cause)}.`, {
      cause,
      details: { path },
    });
}

/**
 * Opens a local base image by its name: a raw image as is; a zip extracted (its largest image entry, CRC
 * checked) or passed through; a `.gz`/`.xz`/`.zst` raw image decompressed, its size learnt first.
 */
export async function openLocalImage(path: string, options: LocalOptions): Promise<OpenedSource> {
  const given = options.name ?? basename(path);
  const kind = requireKind(given, 'The base image');
  const what = `The base image ${given}`;
  const size = await fileSize(path);
  if (kind.kind === 'raw') {
    const bytes = options.bufferPool
      ? readFileChunks(path, options.bufferPool, options.signal)
      : createReadStream(path, { highWaterMark: 256 * 1024 });
    return { name: kind.name, size, bytes, info: { kind: 'file' }, wrapError: readError(path) };
  }
  if (kind.kind === 'zip') {
    const zip = await openZipFile(path, what);
    let found;
    try {
      found = await findZipImage(zip, what);
    } catch (error) {
      zip.close();
      throw error;
    }
    if (options.mode === 'passthrough') {
      zip.close();
      return {
        name: kind.name,
        size,
        bytes: createReadStream(path, { highWaterMark: 256 * 1024 }),
        info: { kind: 'zip', entryName: found.entry.fileName },
        wrapError: readError(path),
      };
    }
    return {
      name: found.name,
      size: found.entry.uncompressedSize,
      bytes: readZipImage(zip, found.entry, what),
      info: { kind: 'zip', entryName: found.entry.fileName },
      close: () => zip.close(),
    };
  }
  const { size: uncompressed } = await uncompressedSize(path, kind.compression, what, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const input = createReadStream(path, { highWaterMark: 256 * 1024 });
  return {
    name: kind.name,
    size: uncompressed,
    bytes: decompress(input, kind.compression, options.signal),
    info: { kind: 'compressed', compression: kind.compression },
    close: () => void input.destroy(),
    wrapError: (error) => decodeError(error, what, kind.compression),
  };
}
