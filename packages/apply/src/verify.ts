import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { EtchError } from '@etch/format';
import { Ext4Reader, type PartitionInfo, type PartitionTable } from '@etch/disk';
import { VERIFY_CHUNK, hashRegions, type WrittenBase } from './base-image.js';
import { openReader, type Filesystem } from './filesystem.js';
import type { InjectedFile } from './injector.js';

/** A partition that received entries, as verification needs it. */
export interface WrittenPartition {
  partition: PartitionInfo;
  filesystem: Filesystem;
  files: InjectedFile[];
}

function overlaps(start: number, end: number, from: number, to: number): boolean {
  return start < to && from < end;
}

/**
 * Reads back what was written: every region of the base image outside the partitions that received entries
 * must hash as the `.etch` delivered it, and every injected regular file must have its content. When a
 * partition grew, it and the sectors of the partition table changed on purpose and are left out of the comparison.
 * @throws EtchError `ETCH_DIGEST_MISMATCH` naming the first difference.
 */
export async function verifyWritten(
  path: string,
  base: WrittenBase,
  written: WrittenPartition[],
  table: PartitionTable,
  grown: readonly PartitionInfo[],
): Promise<void> {
  const now = await hashRegions(path, base.size);
  // Partitions that received entries, and those resized (their filesystem metadata was rewritten), differ on purpose.
  const skip: [number, number][] = [...written.map((w) => w.partition), ...grown].map((p) => [
    p.offset,
    p.offset + p.size,
  ]);
  if (grown.length > 0) {
    skip.push([0, 34 * 512]);
    for (const p of table.partitions)
      if (p.recordOffset !== undefined) skip.push([p.recordOffset, p.recordOffset + 512]);
    skip.push([base.size - 33 * 512, base.size]);
  }
  base.chunkHashes.forEach((hash, index) => {
    const start = index * VERIFY_CHUNK;
    const end = Math.min(base.size, start + VERIFY_CHUNK);
    if (skip.some(([from, to]) => overlaps(start, end, from, to))) return;
    if (!now[index]?.equals(hash)) {
      throw new EtchError(
        'ETCH_DIGEST_MISMATCH',
        `Verification failed: bytes ${start}–${end} of the disk differ from the base image. The medium may be faulty; write it again.`,
      );
    }
  });
  const disk = await openReader(path);
  try {
    for (const { partition, filesystem, files } of written) {
      const fs = filesystem === 'ext' ? await Ext4Reader.open(disk.read, partition.offset) : undefined;
      for (const file of files) {
        const hash = createHash('sha256');
        let size = 0;
        if (fs) {
          for await (const chunk of fs.readFileStream(file.path)) {
            hash.update(chunk);
            size += chunk.length;
          }
        } else {
          // mcopy to stdout reads the file back byte for byte, streamed into the hash.
          size = await readBackFat(`${path}@@${partition.offset}`, file.path, hash);
        }
        if (size !== file.size || hash.digest('hex') !== file.sha256) {
          throw new EtchError(
            'ETCH_DIGEST_MISMATCH',
            `Verification failed: ${file.path} in partition ${partition.number} does not read back as written.`,
          );
        }
      }
    }
  } finally {
    await disk.close();
  }
}

/** Streams `::file` of a FAT image slice through `hash` with `mcopy … -`; resolves to its size. */
function readBackFat(drive: string, file: string, hash: Hash): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('mcopy', ['-n', '-i', drive, `::${file}`, '-'], {
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let size = 0;
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', (cause) =>
      reject(new EtchError('ETCH_IO', `Reading ${file} back with mcopy failed: ${cause.message}`, { cause })),
    );
    child.on('close', (code) =>
      code === 0
        ? resolve(size)
        : reject(
            new EtchError(
              'ETCH_DIGEST_MISMATCH',
              `Verification failed: ${file} cannot be read back (${stderr.trim() || `mcopy exit ${code}`}).`,
            ),
          ),
    );
  });
}
