import { Transform, type TransformCallback } from 'node:stream';

/**
 * Joins the small chunks a tar pack emits (512-byte headers, PAX blocks, small files) into writes of about
 * `size` bytes; chunks of a sixteenth of that or more (64 KiB by default) pass as they are. Each write to a
 * file stream is a trip through the thread pool with its own bookkeeping: a layer of thousands of small files
 * staged chunk by chunk cost ~15,000 writes and most of a second of the main thread for the engine-built bench
 * images.
 */
export class Coalescer extends Transform {
  #pending: Buffer[] = [];
  #bytes = 0;

  constructor(private readonly size = 1024 * 1024) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length >= this.size / 16) {
      // A large body chunk goes on as it is: copying it would cost more than the write it saves.
      this.#emit();
      this.push(chunk);
    } else {
      this.#pending.push(chunk);
      this.#bytes += chunk.length;
      if (this.#bytes >= this.size) this.#emit();
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.#emit();
    callback();
  }

  /** Sends what waits as one buffer of its exact size (a header before a large body is one block, not a MiB). */
  #emit(): void {
    if (this.#bytes === 0) return;
    const only = this.#pending.length === 1 ? this.#pending[0] : undefined;
    this.push(only ?? Buffer.concat(this.#pending, this.#bytes));
    this.#pending = [];
    this.#bytes = 0;
  }
}
