import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  EtchError,
  abortError,
  isEtchError,
  silentLogger,
  throwIfAborted,
  type EtchRequirements,
  type Logger,
  type PartitionRequirement,
} from '@etch/format';
import { findPartition, readPartitionTable, type PartitionInfo, type PartitionTable } from '@etch/disk';
import { readEtch } from '@etch/tar';
import { writeBaseImage, type WrittenBase } from './base-image.js';
import { Ext4Injector } from './ext4-injector.js';
import { MountedExt4Injector } from './mounted-ext4-injector.js';
import { FatInjector } from './fat-injector.js';
import { detectFilesystem, openReader, type Filesystem } from './filesystem.js';
import { growPartitionTo } from './grow.js';
import type { PartitionInjector } from './injector.js';
import { openTarget } from './target.js';
import { verifyWritten, type WrittenPartition } from './verify.js';

/** Options for {@link applyEtch}. */
export interface ApplyOptions {
  /** An image file (created or replaced, atomically) or a block device. */
  output: string;
  /** Make the disk at least this many bytes: an image file is extended and its last partition grown to fill it. */
  size?: number;
  /** Read everything back after writing. */
  verify?: boolean;
  /** Write to a block device even when it is mounted or holds the system. */
  force?: boolean;
  /** Where content is staged before it is written into a filesystem (default: the OS temp dir). */
  tempDir?: string;
  /**
   * Write ext partitions through a loop mount and bsdtar instead of debugfs: faster, root only, and the kernel
   * then reads the base image's filesystem (trust the base image). Needs the `.etch`'s requirements.json (1.1)
   * to make room first; a partition without announced sizes is written with debugfs.
   */
  mount?: boolean;
  signal?: AbortSignal;
  onProgress?: (event: ApplyProgress) => void;
  logger?: Logger;
}

/** Progress of {@link applyEtch}. */
export type ApplyProgress =
  | { phase: 'base-image'; name: string; bytes: number; total: number }
  | { phase: 'inject'; partition: number; entries: number; bytes: number }
  | { phase: 'grow'; partition: number; size: number }
  | { phase: 'verify' }
  /** Everything is written; flushing it to the disk before the image is renamed into place or the device closed. */
  | { phase: 'sync' };

/** What {@link applyEtch} did. */
export interface ApplyResult {
  output: string;
  baseImage: { name: string; size: number };
  /** Final size of the disk image (or device). */
  diskSize: number;
  partitions: Record<number, { filesystem: Filesystem; entries: number; bytes: number; size: number; grown: boolean }>;
  verified: boolean;
  durationMs: number;
}

interface PartitionState {
  injector: PartitionInjector;
  filesystem: Filesystem;
  entries: number;
  bytes: number;
  grown: boolean;
}

// An announcement beyond these is not believed (a hostile file could ask for petabytes): growth then
// happens batch by batch, from what the entries really need.
const MAX_ANNOUNCED_BYTES = 64 * 1024 ** 3;
const MAX_ANNOUNCED_ENTRIES = 50_000_000;

/**
 * Grows a partition once for what `requirements.json` announces (format 1.1). It is advice: when the
 * partition cannot grow that much (not the last one, a device too small) or the numbers are implausible,
 * the flasher says so and carries on; the entries themselves decide whether they fit.
 */
async function reserveAnnounced(
  injector: Ext4Injector,
  partition: number,
  announced: PartitionRequirement,
  logger: Logger,
): Promise<void> {
  if (announced.bytes > MAX_ANNOUNCED_BYTES || announced.entries > MAX_ANNOUNCED_ENTRIES) {
    logger.warn('requirements.json announces implausible sizes; growing as entries need instead', {
      partition,
      ...announced,
    });
    return;
  }
  logger.info('reserving what requirements.json announces', { partition, ...announced });
  try {
    // Inodes come with whole block groups: a plausible count of entries on a filesystem with few inodes per
    // group can still mean a growth of terabytes, which is no more believed than such a size.
    await injector.reserve(announced.bytes, announced.entries, MAX_ANNOUNCED_BYTES);
  } catch (error) {
    // Whatever stops the growth (no room, resize2fs refusing a size), the entries still decide: carry on.
    if (!isEtchError(error) || isEtchError(error, 'ETCH_ABORTED')) throw error;
    logger.warn('cannot grow as much as requirements.json announces; growing as entries need instead', {
      partition,
      reason: (error as Error).message,
    });
  }
}

/** A disk cannot be smaller than the image written onto it: `size` is refused rather than ignored. */
function assertSizeFits(size: number | undefined, name: string, baseSize: number): void {
  if (size !== undefined && size < baseSize)
    throw new EtchError(
      'ETCH_USAGE',
      `The size asked for (${size} bytes) is smaller than the base image ${name} (${baseSize} bytes); a disk cannot be smaller than its image.`,
    );
}

/**
 * Writes a `.etch` (plain, gzip or zstd) onto a disk image file or block device: the base image (unzipped if
 * zipped), then every `inject/<n>/…` entry into partition n — ext2/3/4 with full fidelity through e2fsprogs,
 * FAT through mtools — growing the last partition and its filesystem when the entries do not fit.
 * An image file appears under its name only when everything succeeded.
 */
export async function applyEtch(input: AsyncIterable<Uint8Array>, options: ApplyOptions): Promise<ApplyResult> {
  const started = Date.now();
  const { signal } = options;
  const logger = options.logger ?? silentLogger;
  throwIfAborted(signal);
  const target = await openTarget(options.output, options.force ? { force: true } : {});
  const staging = await mkdtemp(join(options.tempDir ?? tmpdir(), 'etch-apply-'));
  const partitions = new Map<number, PartitionState>();
  let base: WrittenBase | undefined;
  let table: PartitionTable | undefined;
  // Partitions grown so far, by --size before their first entry or to make room for entries.
  const grownPartitions = new Set<number>();
  let requirements: EtchRequirements | undefined;
  try {
    const readTable = async () => {
      const disk = await openReader(target.path);
      try {
        return await readPartitionTable(disk.read);
      } finally {
        await disk.close();
      }
    };
    const grow = async (number: number, end: number, knownZeroFrom?: number): Promise<PartitionInfo> => {
      const grown = await growPartitionTo(target.path, table as PartitionTable, number, end, {
        ...(signal ? { signal } : {}),
        ...(knownZeroFrom !== undefined ? { knownZeroFrom } : {}),
        device: target.kind === 'device',
        deviceSize: target.kind === 'device' ? await target.size() : 0,
      });
      table = await readTable();
      grownPartitions.add(number);
      const state = partitions.get(number);
      if (state) state.grown = true;
      options.onProgress?.({ phase: 'grow', partition: number, size: grown.size });
      return findPartition(table, number);
    };
    const injectorFor = async (number: number): Promise<PartitionState> => {
      const existing = partitions.get(number);
      if (existing) return existing;
      const partition = findPartition(table as PartitionTable, number);
      const disk = await openReader(target.path);
      const filesystem = await detectFilesystem(disk.read, partition).finally(() => disk.close());
      const dir = join(staging, `p${number}`);
      const announced = requirements?.partitions[String(number)];
      const mount = filesystem === 'ext' && options.mount === true;
      if (mount && announced === undefined)
        logger.warn(
          '--mount needs the sizes requirements.json announces to make room first; writing this partition with debugfs',
          { partition: number },
        );
      let injector: PartitionInjector;
      if (filesystem === 'ext') {
        const ext4 = new Ext4Injector(target.path, partition, dir, {
          ...(signal ? { signal } : {}),
          logger,
          keepFiles: Boolean(options.verify),
          grow: async (bytes) => {
            const current = findPartition(table as PartitionTable, number);
            return grow(number, current.offset + current.size + bytes);
          },
        });
        // Room first, while nothing is mounted: through a mount, nothing grows afterwards.
        if (announced) await reserveAnnounced(ext4, number, announced, logger);
        injector =
          mount && announced
            ? await MountedExt4Injector.mount(target.path, findPartition(table as PartitionTable, number), dir, {
                ...(signal ? { signal } : {}),
                logger,
                keepFiles: Boolean(options.verify),
              })
            : ext4;
      } else {
        injector = new FatInjector(target.path, partition, dir, signal ? { signal } : {});
      }
      const state: PartitionState = { injector, filesystem, entries: 0, bytes: 0, grown: grownPartitions.has(number) };
      partitions.set(number, state);
      logger.info(injector instanceof MountedExt4Injector ? 'injecting through a mount' : 'injecting', {
        partition: number,
        filesystem,
      });
      return state;
    };

    for await (const entry of readEtch(input, signal ? { signal } : {})) {
      if (entry.kind === 'base-image') {
        const total = entry.size;
        if (entry.container === 'raw') assertSizeFits(options.size, entry.name, total);
        base = await writeBaseImage(entry, target.path, staging, {
          ...(signal ? { signal } : {}),
          hash: Boolean(options.verify),
          // The target made the image file new and empty: its holes are zeros already.
          skipZeros: target.kind === 'file',
          onBytes: (bytes) => options.onProgress?.({ phase: 'base-image', name: entry.name, bytes, total }),
        });
        table = await readTable();
        assertSizeFits(options.size, base.name, base.size);
        if (options.size !== undefined && options.size > base.size) {
          await target.extendTo(options.size);
          const last = table.partitions.filter((p) => p.kind !== 'extended').sort((a, b) => b.offset - a.offset)[0];
          if (last === undefined)
            throw new EtchError(
              'ETCH_BAD_DISK_IMAGE',
              'The base image has no partition to grow into the requested size.',
            );
          const disk = await openReader(target.path);
          const filesystem = await detectFilesystem(disk.read, last).finally(() => disk.close());
          if (filesystem !== 'ext')
            throw new EtchError(
              'ETCH_USAGE',
              `--size grows the last partition (${last.number}), but it holds FAT, which this flasher does not resize.`,
            );
          const end =
            Math.floor((options.size - (table.scheme === 'gpt' ? 33 * 512 : 0)) / (1024 * 1024)) * 1024 * 1024;
          // Nothing was written past the base image yet: the extension is zeros, and stays a hole.
          await grow(last.number, end, base.size);
        }
      } else if (entry.kind === 'inject') {
        const state = await injectorFor(entry.partition);
        await state.injector.add(entry);
        state.entries += 1;
        state.bytes += entry.type === 'file' ? entry.size : 0;
        options.onProgress?.({
          phase: 'inject',
          partition: entry.partition,
          entries: state.entries,
          bytes: state.bytes,
        });
      } else if (entry.kind === 'requirements') {
        requirements = entry.requirements;
      } else if (entry.kind === 'unknown') {
        logger.warn('skipping an entry of a newer format minor', { name: entry.name });
        entry.stream.resume();
      }
    }
    if (base === undefined || table === undefined)
      throw new EtchError('ETCH_BAD_ORDER', 'The .etch has no base image.');

    const written: WrittenPartition[] = [];
    for (const [, state] of [...partitions.entries()].sort(([a], [b]) => a - b)) {
      const { files, partition } = await state.injector.finish();
      written.push({ partition, filesystem: state.filesystem, files });
    }
    table = await readTable();
    if (options.verify) {
      options.onProgress?.({ phase: 'verify' });
      await verifyWritten(
        target.path,
        base,
        written.map((w) => ({ ...w, partition: findPartition(table as PartitionTable, w.partition.number) })),
        table,
        [...grownPartitions].map((n) => findPartition(table as PartitionTable, n)),
      );
    }
    const diskSize = await target.size();
    options.onProgress?.({ phase: 'sync' });
    await target.commit();
    const summary: ApplyResult['partitions'] = {};
    for (const w of written) {
      const state = partitions.get(w.partition.number) as PartitionState;
      summary[w.partition.number] = {
        filesystem: state.filesystem,
        entries: state.entries,
        bytes: state.bytes,
        size: findPartition(table, w.partition.number).size,
        grown: state.grown,
      };
    }
    return {
      output: options.output,
      baseImage: { name: base.name, size: base.size },
      diskSize,
      partitions: summary,
      verified: Boolean(options.verify),
      durationMs: Date.now() - started,
    };
  } catch (err) {
    // A tool may still be writing into the image or reading staged files: let it end before both go.
    // Each one, whatever the others did: a mount left behind or a partial image would outlive the apply.
    for (const state of partitions.values()) {
      await state.injector.settle?.().catch((error: unknown) => {
        logger.warn('cleaning up a partition after the failure failed', { reason: (error as Error).message });
      });
    }
    await target.abort();
    if (signal?.aborted) throw abortError(signal);
    if (isEtchError(err)) throw err;
    throw new EtchError('ETCH_IO', `Applying the .etch failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
