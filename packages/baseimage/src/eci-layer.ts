import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { EtchError, ignoreRejection } from '@etch/format';

const BLOCK = 512;
/** The largest size the 11 octal digits of a ustar header hold; beyond it the GNU base-256 form is used. */
const MAX_OCTAL_SIZE = 0o77777777777;

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

/**
 * The ustar header of one regular file: mode 0644, owner 0:0, no user or group names, the given mtime. Sizes
 * beyond 8 GiB use the GNU base-256 size field, which Go's archive/tar (lf-edge's reader) understands.
 */
export function fileTarHeader(name: string, size: number, mtime: number): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > 100 || nameBytes.length === 0 || name.includes('/'))
    throw new EtchError('ETCH_USAGE', `The ECI file name ${JSON.stringify(name)} must be 1–100 bytes with no "/".`, {
      details: { entryName: name },
    });
  const header = Buffer.alloc(BLOCK);
  nameBytes.copy(header, 0);
  header.write(octal(0o644, 8), 100, 'ascii');
  header.write(octal(0, 8), 108, 'ascii');
  header.write(octal(0, 8), 116, 'ascii');
  if (size <= MAX_OCTAL_SIZE) header.write(octal(size, 12), 124, 'ascii');
  else {
    header[124] = 0x80;
    let rest = BigInt(size);
    for (let i = 135; i > 124; i -= 1) {
      header[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  header.write(octal(Math.max(0, Math.floor(mtime)), 12), 136, 'ascii');
  header.write('0', 156, 'ascii');
  header.write('ustar\0', 257, 'ascii');
  header.write('00', 263, 'ascii');
  header.write(octal(0, 8), 329, 'ascii');
  header.write(octal(0, 8), 337, 'ascii');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return header;
}

/** A file's bytes, refusing a file that is not `size` bytes long any more (changed since it was measured). */
export async function* fileBytes(path: string, size: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  let read = 0;
  for await (const chunk of createReadStream(path, {
    highWaterMark: 1024 * 1024,
    ...(signal ? { signal } : {}),
  }) as AsyncIterable<Buffer>) {
    read += chunk.length;
    if (read > size) break;
    yield chunk;
  }
  if (read !== size)
    throw new EtchError('ETCH_SIZE_MISMATCH', `${path} changed while it was pushed: it is no longer ${size} bytes.`, {
      details: { path },
    });
}

/** A one-file tar of `path` under `name`: header, the bytes, padding and the two zero blocks of the end. */
export async function* tarOfFile(
  path: string,
  name: string,
  size: number,
  mtime: number,
  signal?: AbortSignal,
): AsyncGenerator<Buffer> {
  yield fileTarHeader(name, size, mtime);
  yield* fileBytes(path, size, signal);
  yield Buffer.alloc(((BLOCK - (size % BLOCK)) % BLOCK) + 2 * BLOCK);
}

/**
 * Gzips a stream with backpressure. Node's gzip header carries no time or name, so the same input gives the same
 * bytes every time on one zlib: the digest measured before an upload is the digest of the bytes uploaded.
 */
export async function* gzipped(source: AsyncIterable<Buffer>, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const gzip = createGzip();
  const feeding = pipeline(Readable.from(source, { objectMode: false }), gzip, signal ? { signal } : {});
  let done = false;
  try {
    for await (const chunk of gzip as AsyncIterable<Buffer>) yield chunk;
    await feeding;
    done = true;
  } finally {
    if (!done) {
      gzip.destroy();
      await ignoreRejection(feeding, 'the gzip was stopped on purpose; the error that stopped it is thrown');
    }
  }
}

/** What a pass over a legacy layer measured: the gzip blob and the tar inside it (its `diff_id`). */
export interface MeasuredLayer {
  digest: string;
  size: number;
  diffId: string;
}

/** Reads a tar stream through gzip once, hashing the tar (the diff_id) and the gzip (the blob) on the way. */
export async function measureTgz(
  tar: AsyncIterable<Buffer>,
  signal?: AbortSignal,
  onBytes?: (tarBytes: number) => void,
): Promise<MeasuredLayer> {
  const tarHash = createHash('sha256');
  const gzHash = createHash('sha256');
  let tarBytes = 0;
  let size = 0;
  async function* counted(): AsyncGenerator<Buffer> {
    for await (const chunk of tar) {
      tarHash.update(chunk);
      tarBytes += chunk.length;
      onBytes?.(tarBytes);
      yield chunk;
    }
  }
  for await (const chunk of gzipped(counted(), signal)) {
    gzHash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${gzHash.digest('hex')}`, size, diffId: `sha256:${tarHash.digest('hex')}` };
}

/** Hashes a stream (sha256) and counts it. */
export async function measure(
  bytes: AsyncIterable<Buffer>,
  onBytes?: (bytes: number) => void,
): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of bytes) {
    hash.update(chunk);
    size += chunk.length;
    onBytes?.(size);
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}
