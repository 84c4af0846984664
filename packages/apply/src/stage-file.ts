import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { writeAll } from '@etch/disk';

/**
 * Content up to this size is held until it ends and written with one blocking call. Each awaited open,
 * write and close is a trip through libuv's thread pool, and on a busy machine those trips, not the bytes,
 * were most of the time staging took: 12,000 files of 15 KB in 4.4 s awaited, 1.8 s written at once.
 */
const WRITE_WHOLE_UP_TO = 1024 * 1024;

/**
 * Copies an entry's content to a local file the filesystem tools read from, hashing it on the way for
 * `--verify` unless `hash` is false (the hash is then empty). One chunk at a time (backpressure); at most
 * {@link WRITE_WHOLE_UP_TO} bytes held.
 */
export async function stageFile(
  entry: { stream?: Readable; bytes?: () => Promise<Buffer> },
  path: string,
  signal?: AbortSignal,
  hash = true,
): Promise<{ size: number; sha256: string }> {
  if (entry.bytes) {
    // A small file of the .etch, read whole without a stream.
    const data = await entry.bytes();
    writeFileSync(path, data);
    return { size: data.length, sha256: hash ? createHash('sha256').update(data).digest('hex') : '' };
  }
  const content = entry.stream as Readable;
  // A plain loop over one file handle, not a stream pipeline: a pipeline's streams and listeners came to
  // ~20 KB of garbage an entry, which a batch of thousands of small files promoted into a heap that grew
  // with the number of entries (issue 19, point 8).
  const hasher = hash ? createHash('sha256') : undefined;
  let size = 0;
  const held: Buffer[] = [];
  let file: FileHandle | undefined;
  try {
    for await (const chunk of content as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      hasher?.update(chunk);
      size += chunk.length;
      if (file === undefined) {
        held.push(chunk);
        if (size <= WRITE_WHOLE_UP_TO) continue;
        file = await open(path, 'w');
        for (const piece of held.splice(0)) await writeAll(file, piece);
      } else await writeAll(file, chunk);
    }
    if (file === undefined) writeFileSync(path, held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held));
  } finally {
    await file?.close();
  }
  return { size, sha256: hasher?.digest('hex') ?? '' };
}
