import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { writeAll } from '@etch/disk';

/**
 * Copies an entry's content to a local file the filesystem tools read from, hashing it on the way for
 * `--verify`. One chunk at a time (backpressure), nothing held in memory.
 */
export async function stageFile(
  content: Readable,
  path: string,
  signal?: AbortSignal,
): Promise<{ size: number; sha256: string }> {
  // A plain loop over one file handle, not a stream pipeline: a pipeline's streams and listeners came to
  // ~20 KB of garbage an entry, which a batch of thousands of small files promoted into a heap that grew
  // with the number of entries (issue 19, point 8).
  const hash = createHash('sha256');
  let size = 0;
  const file = await open(path, 'w');
  try {
    for await (const chunk of content as AsyncIterable<Buffer>) {
      signal?.throwIfAborted();
      hash.update(chunk);
      size += chunk.length;
      await writeAll(file, chunk);
    }
  } finally {
    await file.close();
  }
  return { size, sha256: hash.digest('hex') };
}
