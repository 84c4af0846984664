import { ignoreRejection } from '@etch/format';
import { open, type FileHandle } from 'node:fs/promises';

const EVERY_BYTES = 64 * 1024 * 1024;
const POLL_MS = 100;

/**
 * Flushes a file (or device) being written to disk as it grows (fdatasync every 64 MiB, one at a time, in the
 * background), so a final sync, or anything that flushes it first, has almost nothing left to do. On a machine
 * with plenty of RAM the kernel would otherwise keep a whole `.etch` dirty until that sync, and the disk would
 * idle while the file is produced (measured: 1 GiB, final sync 0.4 s → 0.03 s, total not slower). Attaching
 * a loop device to an image file flushes it first: 0.49 s for a 1 GiB base image just written, 0.05 s after
 * this.
 * @example
 * ```ts
 * const progress = { bytesWritten: 0 };
 * const writeback = new EarlyWriteback('disk.img', progress);
 * try {
 *   for (const chunk of chunks) progress.bytesWritten += await write(chunk);
 * } finally {
 *   await writeback.stop();
 * }
 * ```
 */
export class EarlyWriteback {
  private readonly timer: NodeJS.Timeout;
  private handle: Promise<FileHandle | undefined> | undefined;
  private flushedAt = 0;
  private flushing: Promise<void> | undefined;

  /**
   * @param path the file to flush, opened again here (read-only) so the writer's descriptor stays its own.
   * @param output how far the writer is, read every 100 ms.
   */
  constructor(
    private readonly path: string,
    private readonly output: { readonly bytesWritten: number },
  ) {
    this.timer = setInterval(() => void this.check(), POLL_MS);
    this.timer.unref();
  }

  /**
   * What the timer does every 100 ms, now: starts a flush when 64 MiB more were written since the last one.
   * Resolves once the flush in progress, if any, has ended (never rejects: flushing is best effort).
   */
  check(): Promise<void> {
    const written = this.output.bytesWritten;
    if (this.flushing !== undefined || written - this.flushedAt < EVERY_BYTES)
      return this.flushing ?? Promise.resolve();
    this.flushedAt = written;
    // A read-only descriptor of our own: fdatasync works on any, and the stream keeps its fd to itself.
    this.handle ??= open(this.path, 'r').catch(() => undefined);
    this.flushing = ignoreRejection(
      this.handle.then((handle) => handle?.datasync()),
      'best effort: the final sync reports any real failure',
    ).finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** Stops flushing and releases the descriptor (waiting for a flush in progress). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flushing;
    const handle = await this.handle;
    await ignoreRejection(handle?.close(), 'a read-only handle used only to flush; the data is synced elsewhere');
  }
}
