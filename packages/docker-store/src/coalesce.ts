import { Transform, type TransformCallback } from 'node:stream';

/**
 * Joins the small chunks a tar pack emits (512-byte headers, PAX blocks, small files) into writes of about
 * `size` bytes; chunks of a sixteenth of that or more (64 KiB by default) pass as they are. Each write to a
 * file stream is a trip through the thread pool with its own bookkeeping: a layer of thousands of small files
 * staged chunk by chunk cost ~15,000 writes and most of a second of the main thread for the engine-built bench
 * images. Small chunks are copied as they come rather than kept: held until a write is full, hundreds of
 * thousands of tiny buffers outlived V8's young generation and piled up (200,000 empty files: 265 MiB).
 */
export class Coalescer extends Transform {
  #buffer: Buffer | undefined;
  #used = 0;

  constructor(private readonly size = 1024 * 1024) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length >= this.size / 16) {
      // A large body chunk goes on as it is: copying it would cost more than the write it saves.
      this.#emit();
      this.push(chunk);
    } else {
      if (this.#buffer !== undefined && this.#used + chunk.length > this.size) this.#emit();
      this.#buffer ??= Buffer.allocUnsafeSlow(this.size);
      chunk.copy(this.#buffer, this.#used);
      this.#used += chunk.length;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.#emit();
    callback();
  }

  #emit(): void {
    if (this.#buffer === undefined || this.#used === 0) return;
    this.push(this.#buffer.subarray(0, this.#used));
    this.#buffer = undefined;
    this.#used = 0;
  }
}
