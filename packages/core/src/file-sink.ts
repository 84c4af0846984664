import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { EtchError } from '@etch/format';
import { writevAll, type BufferPool } from '@etch/disk';

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
    try {
      this.bytesWritten += await writevAll(this.handle, chunks);
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== undefined) throw cause;
      throw new EtchError('ETCH_IO', 'The output file accepted no more bytes.', { cause });
    }
    if (this.pool) for (const chunk of chunks) this.pool.reclaim(chunk);
  }
}
