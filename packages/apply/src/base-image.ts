import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { EtchError, ignoreRejection, throwIfAborted, toEtchError } from '@etch/format';
import { EarlyWriteback, findZipImage, readZipImage, writevAll } from '@etch/disk';
import type { EtchBaseImageEntry } from '@etch/tar';
import { isZero } from './zeros.js';

/** Size of the regions whose hashes `--verify` compares after the partitions are written. */
export const VERIFY_CHUNK = 1024 * 1024;

/** What was written as the base image. */
export interface WrittenBase {
  name: string;
  /** Bytes of the raw disk image (after unzipping). */
  size: number;
  /** sha256 of each VERIFY_CHUNK-sized region, in order. */
  chunkHashes: Buffer[];
}

/** The sha256 of each VERIFY_CHUNK-sized region of what it is given, in order. */
class RegionHasher {
  readonly hashes: Buffer[] = [];
  private hash = createHash('sha256');
  private filled = 0;
  update(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(VERIFY_CHUNK - this.filled, chunk.length - at);
      this.hash.update(chunk.subarray(at, at + take));
      this.filled += take;
      at += take;
      if (this.filled === VERIFY_CHUNK) {
        this.hashes.push(this.hash.digest());
        this.hash = createHash('sha256');
        this.filled = 0;
      }
    }
  }
  finish(): Buffer[] {
    if (this.filled > 0) this.hashes.push(this.hash.digest());
    this.filled = 0;
    return this.hashes;
  }
}

/** A pass-through that counts what flows through it and, with `hash`, hashes its fixed-size regions. */
class ChunkHasher extends Transform {
  private readonly regions = new RegionHasher();
  bytes = 0;
  constructor(
    private readonly onBytes: (bytes: number) => void,
    // Only --verify reads the hashes; hashing a GiB costs more CPU than writing it.
    private readonly hashing = true,
  ) {
    super();
  }
  get hashes(): Buffer[] {
    return this.regions.hashes;
  }
  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    done: (error?: Error | null, data?: Buffer) => void,
  ): void {
    if (this.hashing) this.regions.update(chunk);
    this.bytes += chunk.length;
    this.onBytes(this.bytes);
    done(null, chunk);
  }
  override _flush(done: () => void): void {
    if (this.hashing) this.regions.finish();
    done();
  }
}

/**
 * Writes `chunks` one after the other from `position`, in one `writev` per run of chunks; with `skipZeros`, an
 * all-zero chunk is not written but left as a hole. Resolves to the position after the last chunk.
 */
async function writeSkippingZeros(
  handle: FileHandle,
  chunks: readonly Buffer[],
  position: number,
  skipZeros: boolean,
): Promise<number> {
  let run: Buffer[] = [];
  let runAt = position;
  for (const chunk of chunks) {
    if (skipZeros && isZero(chunk)) {
      if (run.length > 0) await writevAll(handle, run, runAt);
      run = [];
      position += chunk.length;
      runAt = position;
      continue;
    }
    run.push(chunk);
    position += chunk.length;
  }
  if (run.length > 0) await writevAll(handle, run, runAt);
  return position;
}

/** A new image file whose last chunks were left as holes: extended to the image's length. */
async function extendTo(handle: FileHandle, size: number): Promise<void> {
  if ((await handle.stat()).size < size) await handle.truncate(size);
}

/**
 * Writes a disk image from byte 0 through one handle, chunks that queue up in one `writev`. With
 * `skipZeros` (a new, empty image file, whose holes read as zeros) all-zero chunks are not written but
 * left as holes: the free space of the image's filesystems costs neither time nor disk, and the file is
 * extended to the image's length at the end.
 */
class ImageWriter extends Writable {
  private position = 0;
  constructor(
    private readonly handle: FileHandle,
    private readonly skipZeros: boolean,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 });
  }
  override _writev(chunks: { chunk: Buffer }[], done: (error?: Error | null) => void): void {
    this.writeAll(chunks.map(({ chunk }) => chunk)).then(() => done(), done);
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.writeAll([chunk]).then(() => done(), done);
  }
  override _final(done: (error?: Error | null) => void): void {
    (this.skipZeros ? extendTo(this.handle, this.position) : Promise.resolve()).then(() => done(), done);
  }
  private async writeAll(chunks: Buffer[]): Promise<void> {
    this.position = await writeSkippingZeros(this.handle, chunks, this.position, this.skipZeros);
  }
}

/** Pipes `source` through `hasher` onto `target` from byte 0 (r+: a device keeps its size, nothing is truncated). */
async function writeImage(
  source: Readable | AsyncIterable<Buffer>,
  hasher: ChunkHasher,
  target: string,
  skipZeros: boolean,
  signal?: AbortSignal,
): Promise<void> {
  const handle = await open(target, 'r+');
  try {
    await pipeline(source, hasher, new ImageWriter(handle, skipZeros), signal ? { signal } : {});
  } finally {
    await handle.close();
  }
}

/**
 * Positional reads of a base image copied in place: RING buffers of IN_PLACE_CHUNK, the next one filling while
 * one is written. Measured on 1 GiB (2 cores): 512 KiB x 2 copies in 0.3-0.4 s, and a third buffer (two reads
 * ahead) is no faster; 64 KiB chunks take 1 s, and 4 MiB buffers 0.6-0.9 s, since what the kernel copied in no
 * longer sits in the CPU's cache when it copies it out.
 */
const IN_PLACE_CHUNK = 512 * 1024;
const RING = 2;
/** The granularity at which all-zero runs are left as holes (as the streamed path's chunks). */
const HOLE_BLOCK = 64 * 1024;

/**
 * Copies a raw base image from an uncompressed `.etch` file onto the target with positional reads into a few
 * reused buffers: no chunk per 64 KiB through the reader, no garbage.
 */
async function copyInPlace(
  entry: EtchBaseImageEntry,
  readAt: NonNullable<EtchBaseImageEntry['readAt']>,
  target: string,
  how: { hash: boolean; skipZeros: boolean },
  onBytes: (bytes: number) => void,
  signal: AbortSignal | undefined,
): Promise<Buffer[]> {
  const regions = new RegionHasher();
  const ring = Array.from({ length: RING }, () => Buffer.allocUnsafe(IN_PLACE_CHUNK));
  const reads: { chunk: Buffer; done: Promise<void> }[] = [];
  let requested = 0;
  const handle = await open(target, 'r+');
  try {
    for (let index = 0, position = 0; position < entry.size; index += 1) {
      throwIfAborted(signal);
      // Keep RING - 1 reads ahead of the write; the buffer written last round is free again.
      while (reads.length < RING && requested < entry.size) {
        const length = Math.min(IN_PLACE_CHUNK, entry.size - requested);
        const chunk = (ring[(index + reads.length) % RING] as Buffer).subarray(0, length);
        const done = readAt(chunk, requested, length);
        // Reads finish in any order: one failing while an earlier one is awaited is reported when its turn comes.
        void ignoreRejection(done, 'awaited in order below, which throws its error');
        reads.push({ chunk, done });
        requested += length;
      }
      const { chunk, done } = reads.shift() as (typeof reads)[number];
      await done;
      if (how.hash) regions.update(chunk);
      const blocks: Buffer[] = [];
      for (let at = 0; at < chunk.length; at += HOLE_BLOCK) blocks.push(chunk.subarray(at, at + HOLE_BLOCK));
      await writeSkippingZeros(handle, blocks, position, how.skipZeros);
      position += chunk.length;
      onBytes(position);
    }
    if (how.skipZeros) await extendTo(handle, entry.size);
  } finally {
    // A read still in flight fills a buffer nobody looks at again; the target closes once it ended.
    await Promise.all(reads.map(({ done }) => ignoreRejection(done, 'the copy already failed; that error is thrown')));
    await handle.close();
  }
  return how.hash ? regions.finish() : [];
}

function openZip(path: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(path, { lazyEntries: true, autoClose: false, strictFileNames: true }, (err, zip) =>
      err ? reject(err) : resolve(zip),
    ),
  );
}

/**
 * Extracts the disk image of a spooled zip onto the target, as `@etch/disk` chooses and CRC-checks it. A zip
 * that cannot give its image makes the `.etch` invalid: every such failure is `ETCH_BAD_ARCHIVE`.
 */
async function extractZip(
  spool: string,
  target: string,
  onBytes: (bytes: number) => void,
  how: { hash: boolean; skipZeros: boolean },
  signal?: AbortSignal,
): Promise<{ hasher: ChunkHasher; name: string }> {
  const what = 'The zipped base image';
  let zip: yauzl.ZipFile | undefined;
  try {
    zip = await openZip(spool);
    const { entry, name } = await findZipImage(zip, what);
    const hasher = new ChunkHasher(onBytes, how.hash);
    await writeImage(readZipImage(zip, entry, what), hasher, target, how.skipZeros, signal);
    return { hasher, name };
  } catch (cause) {
    const error = toEtchError(cause, {
      code: 'ETCH_BAD_ARCHIVE',
      message: (m) => `${what} cannot be read: ${m}`,
      signal,
    });
    if (error.code === 'ETCH_BAD_ARCHIVE' || error.code === 'ETCH_ABORTED') throw error;
    // Not found, encrypted, unsupported method, corrupt: the .etch carries a base image no flasher can use.
    throw new EtchError('ETCH_BAD_ARCHIVE', error.message, { cause: error, details: error.details });
  } finally {
    zip?.close();
  }
}

/**
 * Writes the base image entry onto the target from byte 0. A zipped image is spooled to `staging` first
 * (a zip's directory is at its end, and the `.etch` is a stream), then its disk image entry is extracted
 * with its CRC-32 checked.
 */
export async function writeBaseImage(
  entry: EtchBaseImageEntry,
  target: string,
  staging: string,
  options: {
    signal?: AbortSignal;
    onBytes?: (bytes: number, phase: 'write' | 'spool') => void;
    /** Hash the image's regions for `--verify` (default true); off, `chunkHashes` is empty. */
    hash?: boolean;
    /** The target is a new, empty file: leave all-zero chunks as holes instead of writing them (default false). */
    skipZeros?: boolean;
  } = {},
): Promise<WrittenBase> {
  const how = { hash: options.hash ?? true, skipZeros: options.skipZeros ?? false };
  // The image goes to disk while it is written: mounting it, or the final sync, then has little left to flush.
  const written = { bytesWritten: 0 };
  const writeback = new EarlyWriteback(target, written);
  const onBytes = (bytes: number) => {
    written.bytesWritten = bytes;
    options.onBytes?.(bytes, 'write');
  };
  try {
    return await writeBaseImageOnly(entry, target, staging, how, onBytes, options);
  } finally {
    await writeback.stop();
  }
}

async function writeBaseImageOnly(
  entry: EtchBaseImageEntry,
  target: string,
  staging: string,
  how: { hash: boolean; skipZeros: boolean },
  onBytes: (bytes: number) => void,
  options: { signal?: AbortSignal; onBytes?: (bytes: number, phase: 'write' | 'spool') => void },
): Promise<WrittenBase> {
  const { signal } = options;
  if (entry.container === 'raw' && entry.readAt !== undefined) {
    const chunkHashes = await copyInPlace(entry, entry.readAt, target, how, onBytes, signal);
    return { name: entry.name, size: entry.size, chunkHashes };
  }
  if (entry.container === 'raw') {
    const hasher = new ChunkHasher(onBytes, how.hash);
    await writeImage(entry.stream, hasher, target, how.skipZeros, signal);
    return { name: entry.name, size: hasher.bytes, chunkHashes: hasher.hashes };
  }
  const spool = join(staging, 'base.zip');
  try {
    let spooled = 0;
    await pipeline(
      entry.stream,
      new Transform({
        transform(chunk: Buffer, _encoding, done) {
          spooled += chunk.length;
          options.onBytes?.(spooled, 'spool');
          done(null, chunk);
        },
      }),
      createWriteStream(spool),
      signal ? { signal } : {},
    );
    const { hasher, name } = await extractZip(spool, target, onBytes, how, signal);
    return { name, size: hasher.bytes, chunkHashes: hasher.hashes };
  } finally {
    await rm(spool, { force: true });
  }
}

/** Hashes the regions of the written disk again, for `--verify`. */
export async function hashRegions(path: string, size: number): Promise<Buffer[]> {
  const hasher = new ChunkHasher(() => {});
  await pipeline(
    createReadStream(path, { start: 0, end: size - 1 }),
    hasher,
    new Writable({ write: (_c, _e, done) => done() }),
  );
  return hasher.hashes;
}
