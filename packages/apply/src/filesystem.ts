import { EtchError } from '@etch/format';
import { openReadAt, type PartitionInfo, type ReadAt } from '@etch/disk';

/** The filesystems a flasher writes into. */
export type Filesystem = 'ext' | 'fat';

/** A random-access reader over a file or block device; close it when done. */
export const openReader = openReadAt;

/** Tells ext2/3/4 from FAT by their superblock and boot sector signatures. */
export async function detectFilesystem(read: ReadAt, partition: PartitionInfo): Promise<Filesystem> {
  const head = Buffer.from(await read(partition.offset, 2048));
  if (head.length >= 1082 && head.readUInt16LE(1024 + 56) === 0xef53) return 'ext';
  const fatLabel = (at: number, text: string) => head.toString('latin1', at, at + text.length) === text;
  if (head.length >= 512 && head.readUInt16LE(510) === 0xaa55 && (fatLabel(54, 'FAT') || fatLabel(82, 'FAT32')))
    return 'fat';
  throw new EtchError(
    'ETCH_BAD_DISK_IMAGE',
    `Partition ${partition.number} holds no filesystem this flasher can write into (ext2/3/4 or FAT).`,
  );
}
