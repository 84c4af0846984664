import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import { EtchError, isZipImageEntry } from '@etch/format';
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

/** The disk image in a zip: the largest entry with a raw image extension. */
async function findImageEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry> {
  return new Promise((resolve, reject) => {
    let best: yauzl.Entry | undefined;
    zip.on('entry', (entry: yauzl.Entry) => {
      if (isZipImageEntry(entry.fileName) && (best === undefined || entry.uncompressedSize > best.uncompressedSize))
        best = entry;
      zip.readEntry();
    });
    zip.on('end', () =>
      best
        ? resolve(best)
        : reject(
            new EtchError(
              'ETCH_BAD_ARCHIVE',
              'The zipped base image holds no disk image (no entry with a raw image extension such as .img).',
            ),
          ),
    );
    zip.on('error', reject);
    zip.readEntry();
  });
}

async function extractZip(
  spool: string,
  target: string,
  onBytes: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<{ hasher: ChunkHasher; name: string }> {
  let zip: yauzl.ZipFile | undefined;
  try {
    zip = await openZip(spool);
    const entry = await findImageEntry(zip);
    if ((entry.generalPurposeBitFlag & 1) !== 0)
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `${entry.fileName} in the zipped base image is encrypted; flashers cannot read it.`,
      );
    const opened = zip;
    const stream = await new Promise<Readable>((resolve, reject) =>
      opened.openReadStream(entry, (err, s) => (err ? reject(err) : resolve(s))),
    );
    let crc = 0;
    const check = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        crc = crc32(chunk, crc);
        done(null, chunk);
      },
      flush(done) {
        // yauzl checks sizes but not CRC-32; a flipped bit in a stored entry would otherwise go unnoticed.
        done(
          crc >>> 0 === entry.crc32 >>> 0
            ? null
            : new EtchError(
                'ETCH_BAD_ARCHIVE',
                `${entry.fileName} in the zipped base image fails its CRC-32 check; the zip is corrupt.`,
              ),
        );
      },
    });
    const hasher = new ChunkHasher(onBytes);
    await pipeline(stream, check, hasher, createWriteStream(target, { flags: 'r+' }), signal ? { signal } : {});
    return { hasher, name: basename(entry.fileName) };
  } catch (cause) {
    if (cause instanceof EtchError) throw cause;
    throw new EtchError('ETCH_BAD_ARCHIVE', `The zipped base image cannot be read: ${(cause as Error).message}`, {
      cause,
    });
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
