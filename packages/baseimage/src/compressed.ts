import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EtchError, isEtchError, ignoreRejection } from '@etch/format';
import { createDecompressor } from '@etch/tar';
// xz-decompress is a webpack-bundled CommonJS module: Node's ESM loader sees only its default export.
import type { FileCompression } from './names.js';
import type { BaseImageProgress } from './types.js';
import { asEtchError } from './verify.js';

/** How the uncompressed size of a compressed image was learnt. */
export type SizeMethod = 'xz-index' | 'zstd-frame-header' | 'counted';

/** Turns decoder errors into `ETCH_BAD_ARCHIVE`. */
export function decodeError(error: unknown, what: string, compression: FileCompression): EtchError {
  if (isEtchError(error)) return error;
  return new EtchError(
    'ETCH_BAD_ARCHIVE',
    `${what} is not valid ${compression} data: ${(error as Error)?.message ?? String(error)}.`,
    { cause: error },
  );
}

async function* xzDecoded(input: Readable, signal?: AbortSignal): AsyncGenerator<Buffer> {
  // The decoder is WebAssembly that stays resident (8 MiB) once loaded: only .xz images pay for it.
  const loaded = await import('xz-decompress');
  // A CommonJS module: Node puts it under `default`, Vitest may not.
  const xzDecompress = (loaded as { default?: typeof loaded }).default ?? loaded;
  const web = Readable.toWeb(input) as unknown as ReadableStream<Uint8Array>;
  yield* Readable.fromWeb(new xzDecompress.XzReadableStream(web), signal ? { signal } : {});
}

/** Decompresses a whole compressed stream (gzip members, xz streams and zstd frames may be concatenated). */
export function decompress(input: Readable, compression: FileCompression, signal?: AbortSignal): Readable {
  if (compression === 'xz')
    return Readable.from(xzDecoded(input, signal), { objectMode: false, highWaterMark: 1024 * 1024 });
  const decoder: Transform = createDecompressor(compression);
  ignoreRejection(
    pipeline(input, decoder, signal ? { signal } : {}),
    'pipeline destroys the decoder with the first error, so its reader sees it',
  );
  return decoder;
}

async function readAt(handle: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await handle.read(buffer, 0, length, position);
  if (bytesRead !== length)
    throw new EtchError('ETCH_BAD_ARCHIVE', `Unexpected end of file at ${position + bytesRead}.`);
  return buffer;
}

function readVarint(buffer: Buffer, state: { at: number }): number {
  let value = 0;
  let shift = 1;
  for (let i = 0; i < 9; i += 1) {
    const byte = buffer[state.at];
    if (byte === undefined) throw new Error('truncated index');
    state.at += 1;
    value += (byte & 0x7f) * shift;
    if ((byte & 0x80) === 0) return value;
    shift *= 128;
  }
  throw new Error('varint too long');
}

/**
 * The uncompressed size of an `.xz` file from its indexes (every stream's footer points to its index, which
 * lists each block's sizes), without decompressing. Concatenated streams and stream padding are summed.
 */
export async function xzUncompressedSize(path: string): Promise<number> {
  const handle = await open(path, 'r');
  try {
    let end = (await handle.stat()).size;
    let total = 0;
    while (end > 0) {
      // Stream padding: zero bytes in multiples of four.
      while (end >= 4 && (await readAt(handle, end - 4, 4)).readUInt32LE(0) === 0) end -= 4;
      if (end < 24) throw new Error('too short for an xz stream');
      const footer = await readAt(handle, end - 12, 12);
      if (footer[10] !== 0x59 || footer[11] !== 0x5a) throw new Error('no xz stream footer (is the file complete?)');
      const indexSize = (footer.readUInt32LE(4) + 1) * 4;
      const indexStart = end - 12 - indexSize;
      if (indexStart < 12) throw new Error('index larger than the file');
      const index = await readAt(handle, indexStart, indexSize);
      if (index[0] !== 0) throw new Error('bad index indicator');
      const state = { at: 1 };
      const records = readVarint(index, state);
      let blocks = 0;
      for (let i = 0; i < records; i += 1) {
        const unpadded = readVarint(index, state);
        total += readVarint(index, state);
        blocks += Math.ceil(unpadded / 4) * 4;
      }
      const streamStart = indexStart - blocks - 12;
      if (streamStart < 0) throw new Error('blocks larger than the file');
      const header = await readAt(handle, streamStart, 6);
      if (!header.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])))
        throw new Error('no xz stream header where the index says');
      end = streamStart;
    }
    return total;
  } finally {
    await handle.close();
  }
}

/**
 * The uncompressed size of a `.zst` file from its frame headers (`Frame_Content_Size`), walking every frame's
 * blocks to find the next one. Undefined when a frame does not declare its size (zstd reading a pipe).
 */
export async function zstdContentSize(path: string): Promise<number | undefined> {
  const handle = await open(path, 'r');
  try {
    const size = (await handle.stat()).size;
    let at = 0;
    let total = 0;
    while (at < size) {
      const magic = (await readAt(handle, at, 4)).readUInt32LE(0);
      if ((magic & 0xfffffff0) === 0x184d2a50) {
        at += 8 + (await readAt(handle, at + 4, 4)).readUInt32LE(0);
        continue;
      }
      if (magic !== 0xfd2fb528) throw new Error(`no zstd frame at offset ${at}`);
      const descriptor = (await readAt(handle, at + 4, 1))[0] as number;
      const fcsFlag = descriptor >> 6;
      const singleSegment = (descriptor >> 5) & 1;
      const checksum = (descriptor >> 2) & 1;
      const dictBytes = [0, 1, 2, 4][descriptor & 3] as number;
      const fcsBytes = fcsFlag === 0 ? singleSegment : ([0, 2, 4, 8][fcsFlag] as number);
      if (fcsBytes === 0) return undefined;
      const fcsAt = at + 5 + (singleSegment ? 0 : 1) + dictBytes;
      const fcs = await readAt(handle, fcsAt, fcsBytes);
      total +=
        fcsBytes === 1
          ? (fcs[0] as number)
          : fcsBytes === 2
            ? fcs.readUInt16LE(0) + 256
            : fcsBytes === 4
              ? fcs.readUInt32LE(0)
              : Number(fcs.readBigUInt64LE(0));
      at = fcsAt + fcsBytes;
      for (;;) {
        const block = await readAt(handle, at, 3);
        const value = block.readUIntLE(0, 3);
        const last = value & 1;
        const type = (value >> 1) & 3;
        const blockSize = value >> 3;
        if (type === 3) throw new Error('reserved zstd block type');
        at += 3 + (type === 1 ? 1 : blockSize);
        if (last) break;
      }
      if (checksum) at += 4;
    }
    return total;
  } finally {
    await handle.close();
  }
}

/** Counts the uncompressed bytes of a compressed file by decompressing it once (nothing is kept). */
export async function countUncompressed(
  path: string,
  compression: FileCompression,
  what: string,
  options: { signal?: AbortSignal; onProgress?: (e: BaseImageProgress) => void } = {},
): Promise<number> {
  let bytes = 0;
  const counter = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      options.onProgress?.({ phase: 'scan', bytes, total: undefined });
      callback();
    },
  });
  try {
    await pipeline(
      decompress(createReadStream(path), compression, options.signal),
      counter,
      options.signal ? { signal: options.signal } : {},
    );
  } catch (error) {
    throw asEtchError(error, options.signal, (e) => decodeError(e, what, compression));
  }
  return bytes;
}

/**
 * The uncompressed size of a local compressed image, honestly: the xz index; the zstd frame headers when every
 * frame declares its size; otherwise (gzip, whose ISIZE is the size modulo 2^32 of the last member only) a full
 * decompression pass that counts.
 */
export async function uncompressedSize(
  path: string,
  compression: FileCompression,
  what: string,
  options: { signal?: AbortSignal; onProgress?: (e: BaseImageProgress) => void } = {},
): Promise<{ size: number; method: SizeMethod }> {
  try {
    if (compression === 'xz') return { size: await xzUncompressedSize(path), method: 'xz-index' };
    if (compression === 'zstd') {
      const size = await zstdContentSize(path);
      if (size !== undefined) return { size, method: 'zstd-frame-header' };
    }
  } catch (error) {
    throw decodeError(error, what, compression);
  }
  return { size: await countUncompressed(path, compression, what, options), method: 'counted' };
}
