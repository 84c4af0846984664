import { open } from 'node:fs/promises';
import { EtchError } from '@etch/format';
import { Ext4Reader } from './ext4-reader.js';
import { findPartition, readPartitionTable } from './partition-table.js';
import { readAtHandle } from './read-at.js';

/**
 * Reads one file from an ext2/3/4 partition of a raw disk image without mounting it (the base OS's own
 * `apps.json`, say). Resolves to `undefined` when the file does not exist.
 * @throws EtchError `ETCH_IO` when the image cannot be read, `ETCH_BAD_DISK_IMAGE` when the partition is
 * missing or not ext2/3/4.
 */
export async function readPartitionFile(
  imagePath: string,
  partition: number,
  path: string,
): Promise<Buffer | undefined> {
  let handle;
  try {
    handle = await open(imagePath, 'r');
  } catch (cause) {
    throw new EtchError('ETCH_IO', `Cannot open the base image ${imagePath}: ${(cause as Error).message}`, {
      cause,
      details: { path: imagePath },
    });
  }
  try {
    const read = readAtHandle(handle);
    const { offset } = findPartition(await readPartitionTable(read), partition);
    const fs = await Ext4Reader.open(read, offset);
    return await fs.readFile(path);
  } finally {
    await handle.close();
  }
}
