import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { EtchError, toEtchError } from '@etch/format';
import { findZipImage, readZipImage } from '@etch/disk';
import type { EtchBaseImageEntry } from '@etch/tar';

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

/** A pass-through that hashes fixed-size regions of what flows through it. */
class ChunkHasher extends Transform {
  readonly hashes: Buffer[] = [];
  bytes = 0;
  private hash = createHash('sha256');
  private filled = 0;
  constructor(private readonly onBytes: (bytes: number) => void) {
    super();
  }
  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    done: (error?: Error | null, data?: Buffer) => void,
  ): void {
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
    this.bytes += chunk.length;
    this.onBytes(this.bytes);
    done(null, chunk);
  }
  override _flush(done: () => void): void {
    if (this.filled > 0) this.hashes.push(this.hash.digest());
    done();
  }
}

async function writeRaw(
  stream: Readable,
  target: string,
  onBytes: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<ChunkHasher> {
  const hasher = new ChunkHasher(onBytes);
  // r+ keeps a block device's size and never truncates; the image file was created empty by the target.
  await pipeline(stream, hasher, createWriteStream(target, { flags: 'r+' }), signal ? { signal } : {});
  return hasher;
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
  signal?: AbortSignal,
): Promise<{ hasher: ChunkHasher; name: string }> {
  const what = 'The zipped base image';
  let zip: yauzl.ZipFile | undefined;
  try {
    zip = await openZip(spool);
    const { entry, name } = await findZipImage(zip, what);
    const hasher = new ChunkHasher(onBytes);
    await pipeline(
      readZipImage(zip, entry, what),
      hasher,
      createWriteStream(target, { flags: 'r+' }),
      signal ? { signal } : {},
    );
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
  options: { signal?: AbortSignal; onBytes?: (bytes: number, phase: 'write' | 'spool') => void } = {},
): Promise<WrittenBase> {
  const { signal } = options;
  if (entry.container === 'raw') {
    const hasher = await writeRaw(entry.stream, target, (n) => options.onBytes?.(n, 'write'), signal);
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
    const { hasher, name } = await extractZip(spool, target, (n) => options.onBytes?.(n, 'write'), signal);
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
