import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { EtchError } from '@etch/format';
import type { ReadAt } from './partition-table.js';

/** A {@link ReadAt} over an open file or block device: short reads only at its end. */
export function readAtHandle(handle: FileHandle): ReadAt {
  return async (offset, length) => {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  };
}

/**
 * Opens `path` for random-access reads; close it when done. Only a regular file or a block device can be
 * read at offsets: anything else (a FIFO, which would block the open until a writer came, a socket, a
 * terminal) is refused with `ETCH_IO` naming it.
 */
export async function openReadAt(path: string): Promise<{ read: ReadAt; close: () => Promise<void> }> {
  // Non-blocking, so that opening a FIFO returns at once instead of waiting (deaf to Ctrl-C) for a writer.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const info = await handle.stat().catch(async (error: unknown) => {
    await handle.close();
    throw error;
  });
  if (!info.isFile() && !info.isBlockDevice()) {
    await handle.close();
    const kind = info.isFIFO()
      ? 'a FIFO'
      : info.isSocket()
        ? 'a socket'
        : info.isDirectory()
          ? 'a directory'
          : 'not a regular file';
    throw new EtchError('ETCH_IO', `${path} is ${kind}, not a file or block device that can be read at any offset.`, {
      details: { path },
    });
  }
  return { read: readAtHandle(handle), close: () => handle.close() };
}
