import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * Copies an entry's content to a local file the filesystem tools read from, hashing it on the way for
 * `--verify`. Streams with backpressure; nothing is held in memory.
 */
export async function stageFile(
  content: Readable,
  path: string,
  signal?: AbortSignal,
): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(content, tap, createWriteStream(path), signal ? { signal } : {});
  return { size, sha256: hash.digest('hex') };
}
