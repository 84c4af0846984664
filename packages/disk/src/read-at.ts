import { open, type FileHandle } from 'node:fs/promises';
import type { ReadAt } from './partition-table.js';

/** A {@link ReadAt} over an open file or block device: short reads only at its end. */
export function readAtHandle(handle: FileHandle): ReadAt {
  return async (offset, length) => {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  };
}

/** Opens `path` for random-access reads; close it when done. */
export async function openReadAt(path: string): Promise<{ read: ReadAt; close: () => Promise<void> }> {
  const handle = await open(path, 'r');
  return { read: readAtHandle(handle), close: () => handle.close() };
}
