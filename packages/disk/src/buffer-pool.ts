import { open } from 'node:fs/promises';
import { throwIfAborted } from '@etch/format';

/**
 * Read buffers lent out and taken back once written, so a long copy (a base image into a `.etch`) reuses a
 * few buffers instead of allocating one per chunk. Fresh buffers are memory outside V8's heap, and V8 runs
 * a full collection every few tens of MiB of them: copying 1 GiB that way spent about as much CPU in the
 * collector as in the copy itself.
 *
 * A chunk is taken back only as the exact view the pool lent (same memory, offset 0, same length), so a
 * stage that splits, joins or copies chunks on the way just makes the pool allocate anew; it never hands out
 * memory still queued somewhere. The contract is on the writer: call {@link reclaim} only once a chunk is
 * written and nothing else holds it (a stage that keeps chunks, such as a tee, must not sit in between).
 *
 * @example
 * ```ts
 * const pool = new BufferPool()
 * for await (const chunk of readFileChunks('disk.img', pool)) {
 *   await handle.write(chunk)
 *   pool.reclaim(chunk)
 * }
 * ```
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  // Weak: a chunk that was copied on the way never comes back, and must not be kept alive here.
  private readonly lent = new WeakMap<ArrayBufferLike, number>();
  /** Buffers allocated so far: stays small while chunks come back. */
  allocated = 0;

  /**
   * @param chunkSize bytes per buffer (default 256 KiB)
   * @param keep most idle buffers kept for reuse (default 32)
   */
  constructor(
    readonly chunkSize = 256 * 1024,
    private readonly keep = 32,
  ) {}

  /** A buffer of {@link chunkSize} bytes to fill; hand the filled part to {@link lend}. */
  take(): Buffer {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    this.allocated += 1;
    return Buffer.allocUnsafeSlow(this.chunkSize);
  }

  /** Marks `view`, a prefix of a buffer from {@link take}, as lent out; returns it. */
  lend(view: Buffer): Buffer {
    this.lent.set(view.buffer, view.byteLength);
    return view;
  }

  /** Takes back a written chunk when it is exactly a view this pool lent; anything else is ignored. */
  reclaim(chunk: Uint8Array): void {
    const length = this.lent.get(chunk.buffer);
    if (length === undefined || chunk.byteOffset !== 0 || chunk.byteLength !== length) return;
    this.lent.delete(chunk.buffer);
    if (this.free.length < this.keep) this.free.push(Buffer.from(chunk.buffer, 0, this.chunkSize));
  }
}

/** Reads a file to its end in chunks lent from `pool` (see {@link BufferPool}). */
export async function* readFileChunks(path: string, pool: BufferPool, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const handle = await open(path, 'r');
  try {
    for (;;) {
      throwIfAborted(signal);
      const buffer = pool.take();
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) return;
      yield pool.lend(buffer.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
}
