import { createHash } from 'node:crypto';
import { Readable, type Stream } from 'node:stream';
import { pack as tarPack, type Header } from 'tar-stream';

/** A raw entry for {@link craftTar}: anything tar-stream will write, including what our packer refuses. */
export interface CraftedEntry extends Partial<Header> {
  name: string;
  content?: string | Buffer;
}

/**
 * Builds a tar in memory with tar-stream directly, bypassing every check of @etch/tar: for tests that feed
 * hostile or malformed archives to readers. Small archives only.
 */
export async function craftTar(
  entries: readonly CraftedEntry[],
  options: { finalize?: boolean } = {},
): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const { content, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const h = { mtime: new Date(0), ...header } as Header;
      if (content === undefined) pack.entry(h, (err) => (err ? reject(err) : resolve()));
      else pack.entry(h, content, (err) => (err ? reject(err) : resolve()));
    });
  }
  if (options.finalize === false) {
    await new Promise((resolve) => setImmediate(resolve));
    return Buffer.concat(chunks);
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** Reads a whole (small) stream into memory. */
export async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(parts);
}

/**
 * A readable of `size` deterministic bytes, produced lazily in `chunkSize` pieces: large inputs without
 * large fixtures. The bytes depend on `seed` and the offset, so two streams with one seed are equal.
 */
export function patternStream(size: number, chunkSize = 64 * 1024, seed = 1): Readable {
  const block = Buffer.alloc(65_521); // prime length, so chunk boundaries never line up with the pattern
  let state = (seed * 2_654_435_761) >>> 0 || 1;
  for (let i = 0; i < block.length; i++) {
    state = (state * 1_103_515_245 + 12_345) >>> 0;
    block[i] = state >>> 24;
  }
  let produced = 0;
  return new Readable({
    read() {
      if (produced >= size) {
        this.push(null);
        return;
      }
      const length = Math.min(chunkSize, size - produced);
      const chunk = Buffer.allocUnsafe(length);
      for (let filled = 0; filled < length;) {
        const from = (produced + filled) % block.length;
        filled += block.copy(chunk, filled, from, Math.min(block.length, from + length - filled));
      }
      produced += length;
      this.push(chunk);
    },
  });
}

/** The error `promise` rejects with; throws when it resolves instead. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

/** The sha256 (hex) of everything `stream` yields, and how many bytes that was, read as it streams. */
export async function sha256Of(stream: AsyncIterable<unknown>): Promise<{ sha: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha: hash.digest('hex'), bytes };
}

/**
 * Resolves once `stream` has emitted `close` (at once if it already has), whether it ended, failed or was
 * destroyed: the moment a stream built on generators has run their cleanup. Await this instead of sleeping.
 */
export function closed(stream: Stream & { closed?: boolean }): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
