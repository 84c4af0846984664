import { randomBytes } from 'node:crypto';
import { open, rm, stat, truncate, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EtchError } from '@etch/format';
import { findPartition, type PartitionInfo, type PartitionTable } from '@etch/disk';
import { runTool } from './exec.js';
import { isZero } from './zeros.js';

const SECTOR = 512;
const MIB = 1024 * 1024;
// GPT keeps a backup table in the last 33 sectors of the disk.
const GPT_BACKUP = 33 * SECTOR;
// MBR entries hold 32-bit sector numbers.
const MBR_MAX_SECTORS = 2 ** 32 - 1;

function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}

/** True when nothing but free space (and the extended container) follows `partition` on the disk. */
function isLast(table: PartitionTable, partition: PartitionInfo): boolean {
  return table.partitions.every((p) => p === partition || p.kind === 'extended' || p.offset < partition.offset);
}

const SFDISK = ['--no-reread', '--no-tell-kernel', '-q'];

/**
 * Grows partition `number` of an image file so it ends at `end` bytes (rounded up to a MiB): extends the file,
 * moves the GPT backup header, grows the extended partition around a logical one, then the partition, then
 * the ext2/3/4 filesystem in it. Only the last partition can grow; the image never shrinks.
 * @returns the partition with its new size.
 */
export async function growPartitionTo(
  image: string,
  table: PartitionTable,
  number: number,
  end: number,
  options: {
    signal?: AbortSignal;
    device?: boolean;
    deviceSize?: number;
    /**
     * Where the image file is known to hold only zeros (extended by truncation, nothing written since), when
     * that is before its current end: zero chunks past it are not written back, so the image stays sparse.
     */
    knownZeroFrom?: number;
  } = {},
): Promise<PartitionInfo> {
  const partition = findPartition(table, number);
  if (!isLast(table, partition)) {
    throw new EtchError(
      'ETCH_BAD_DISK_IMAGE',
      `Partition ${number} needs to grow but is not the last partition on the disk; the flasher cannot move the ones after it.`,
    );
  }
  const newEnd = roundUp(end, MIB);
  if (newEnd <= partition.offset + partition.size) return partition;
  const run = (args: string[], input?: string) =>
    runTool('sfdisk', [...SFDISK, ...args, image], {
      ...(input !== undefined ? { input } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  const diskEnd = newEnd + (table.scheme === 'gpt' ? GPT_BACKUP : 0);
  // Refused before anything changes: sfdisk would refuse it after the image was extended.
  if (table.scheme === 'mbr' && newEnd / SECTOR > MBR_MAX_SECTORS)
    throw new EtchError(
      'ETCH_BAD_DISK_IMAGE',
      `Partition ${number} would end at ${newEnd} bytes, past the 2 TiB an MBR partition table can address.`,
    );
  if (options.device) {
    if (diskEnd > (options.deviceSize ?? 0)) {
      throw new EtchError(
        'ETCH_BAD_DISK_IMAGE',
        `Partition ${number} must grow to ${newEnd} bytes, beyond the end of the device (${options.deviceSize} bytes). Use a larger device.`,
      );
    }
  }
  const resizeTable = async () => {
    if (table.scheme === 'gpt') await run(['--relocate', 'gpt-bak-std']);
    if (partition.kind === 'logical') {
      const extended = table.partitions.find((p) => p.kind === 'extended') as PartitionInfo;
      if (extended.offset + extended.size < newEnd)
        await run(
          ['-N', String(extended.number)],
          `${extended.offset / SECTOR},${(newEnd - extended.offset) / SECTOR}\n`,
        );
    }
    await run(['-N', String(number)], `${partition.offset / SECTOR},${(newEnd - partition.offset) / SECTOR}\n`);
  };
  const size = newEnd - partition.offset;
  if (options.device) {
    await resizeTable();
    await runTool(
      'resize2fs',
      ['-f', `${image}?offset=${partition.offset}`, `${Math.floor(size / 1024)}K`],
      options.signal ? { signal: options.signal } : {},
    );
    return { ...partition, size };
  }
  // The filesystem is resized on a copy before the image or its table changes: when resize2fs refuses (a
  // growth beyond what the filesystem's layout allows), the image is left as it was, not extended with a
  // partition larger than its filesystem.
  const copy = await resizedCopy(image, partition, size, options.signal);
  try {
    const fileSizeBefore = (await stat(image)).size;
    if (fileSizeBefore < diskEnd) await truncate(image, diskEnd);
    await resizeTable();
    const zeroFrom = Math.min(fileSizeBefore, options.knownZeroFrom ?? fileSizeBefore);
    await copyBack(copy, image, partition.offset, zeroFrom, options.signal);
  } finally {
    await rm(copy, { force: true });
  }
  return { ...partition, size };
}

const COPY_CHUNK = 1024 * 1024;

/**
 * resize2fs, given a regular file, truncates it to the filesystem's new size and ignores `?offset=` when it
 * does: on a disk image it would cut off the end of the grown partition. So the partition is copied to a file
 * of its own and resized there ({@link copyBack} puts it back); the copy's zero chunks stay holes.
 * @returns the copy's path (removed when this fails).
 */
async function resizedCopy(
  image: string,
  partition: PartitionInfo,
  size: number,
  signal?: AbortSignal,
): Promise<string> {
  const copy = join(dirname(image), `.${basename(image)}.resize-${randomBytes(4).toString('hex')}`);
  try {
    const disk = await open(image, 'r');
    try {
      const out = await open(copy, 'wx');
      try {
        await out.truncate(partition.size);
        // One buffer for the copy: a fresh chunk per read left up to ~70 MiB of spent chunks for the garbage
        // collector on every growth, and growths get larger with the number of entries (issue 19, point 8).
        await copyRange(disk, partition.offset, partition.size, out, 0, 0, Buffer.allocUnsafe(COPY_CHUNK), signal);
      } finally {
        await out.close();
      }
    } finally {
      await disk.close();
    }
    const result = await runTool('resize2fs', ['-f', copy, `${Math.floor(size / 1024)}K`], {
      allowFailure: true,
      ...(signal ? { signal } : {}),
    });
    if (result.code !== 0) {
      // Its own error lines start with "resize2fs: "; the advice after them ("run e2fsck -fy" on the copy)
      // is about a file removed below and would mislead: the partition in the image was never touched.
      const lines = `${result.stderr}\n${result.stdout}`.split('\n');
      const errors = lines.filter((line) => line.startsWith('resize2fs: '));
      const reason = (errors.length > 0 ? errors : lines.filter((line) => line.trim() !== '' && !/e2fsck/.test(line)))
        .map((line) => line.replace('resize2fs: ', '').replaceAll(copy, "the partition's copy"))
        .join('; ');
      throw new EtchError(
        'ETCH_IO',
        `resize2fs could not grow partition ${partition.number} to ${size} bytes (exit ${result.code}): ${reason}`,
      );
    }
    return copy;
  } catch (error) {
    await rm(copy, { force: true });
    throw error;
  }
}

/**
 * Writes the resized copy back at `offset` of the image, leaving out all-zero chunks where the image was just
 * extended (already zero), which keeps a large `--size` cheap on a sparse image.
 */
async function copyBack(
  copy: string,
  image: string,
  offset: number,
  knownZeroFrom: number,
  signal?: AbortSignal,
): Promise<void> {
  const disk = await open(image, 'r+');
  try {
    const resized = await open(copy, 'r');
    try {
      const length = (await resized.stat()).size;
      await copyRange(resized, 0, length, disk, offset, knownZeroFrom, Buffer.allocUnsafe(COPY_CHUNK), signal);
    } finally {
      await resized.close();
    }
    await disk.sync();
  } finally {
    await disk.close();
  }
}

/**
 * Copies `length` bytes from `from` at `start` to `to` at `position` through `buffer`, leaving out all-zero
 * chunks that land at or after `zeroFrom` in `to`.
 */
async function copyRange(
  from: FileHandle,
  start: number,
  length: number,
  to: FileHandle,
  position: number,
  zeroFrom: number,
  buffer: Buffer,
  signal?: AbortSignal,
): Promise<void> {
  // What `to` holds where a zero chunk would go, read only then.
  let held: Buffer | undefined;
  for (let done = 0; done < length;) {
    signal?.throwIfAborted();
    const { bytesRead } = await from.read(buffer, 0, Math.min(buffer.length, length - done), start + done);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    const at = position + done;
    const there =
      isZero(chunk) &&
      (at >= zeroFrom || (await holdsZeros(to, at, bytesRead, (held ??= Buffer.allocUnsafe(COPY_CHUNK)))));
    if (!there) await to.write(chunk, 0, bytesRead, at);
    done += bytesRead;
  }
}

/**
 * Whether `to` holds only zeros over `length` bytes at `position`. Before `zeroFrom` a zero chunk is written
 * only where the image is not zero already: the base image's free space was left as holes, and writing
 * the zeros back would allocate them.
 */
async function holdsZeros(to: FileHandle, position: number, length: number, buffer: Buffer): Promise<boolean> {
  const { bytesRead } = await to.read(buffer, 0, Math.min(length, buffer.length), position);
  return bytesRead === length && isZero(buffer.subarray(0, bytesRead));
}
