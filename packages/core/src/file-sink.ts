import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { EtchError } from '@etch/format';
import type { BufferPool } from '@etch/disk';

/**
 * A file as a Writable that hands each chunk back to a {@link BufferPool} once the kernel has it, so
 * the base image's read buffers are reused instead of piling up for the garbage collector. It is the last
 * stage of `writeEtchFile`'s pipeline: nothing after it can still hold a chunk.
 */
export class FileSink extends Writable {
  /** Bytes written so far. */
  bytesWritten = 0;

  /** Writes through `handle`, which stays open: its owner (an `AtomicFile`) syncs and closes it. */
  constructor(
    private readonly handle: FileHandle,
    private readonly pool: BufferPool | undefined,
  ) {
    // Room for a few chunks (the CLI reads the base image in 1 MiB ones), so reading overlaps writing.
    super({ highWaterMark: 4 * 1024 * 1024 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeAll([chunk]).then(() => callback(), callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.writeAll(chunks.map((c) => c.chunk)).then(() => callback(), callback);
  }

  private async writeAll(chunks: Buffer[]): Promise<void> {
    let pending = [...chunks];
    while (pending.length > 0) {
      const { bytesWritten } = await this.handle.writev(pending);
      if (bytesWritten === 0) throw new EtchError('ETCH_IO', 'The output file accepted no more bytes.');
      this.bytesWritten += bytesWritten;
      // A short write (a full disk on the way to ENOSPC) leaves the rest for the next round.
      let skipped = bytesWritten;
      while (pending.length > 0 && skipped >= (pending[0] as Buffer).length)
        skipped -= (pending.shift() as Buffer).length;
      if (pending.length > 0 && skipped > 0) pending = [(pending[0] as Buffer).subarray(skipped), ...pending.slice(1)];
    }
    if (this.pool) for (const chunk of chunks) this.pool.reclaim(chunk);
  }
}
