import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { writeAll } from '@etch/disk';

/**
 * The file a layer is staged into, written from a tar pack. The pack emits many small chunks (512-byte
 * headers, PAX blocks, small files): they are copied into one buffer, written when it is full, and the same
 * buffer is filled again; chunks of a sixteenth of it or more are written as they are. Each write to a file
 * stream is a trip through the thread pool with its own bookkeeping (a layer of thousands of small files made
 * ~15,000 of them), and a fresh buffer per joined write is garbage V8 frees late.
 *
 * When `checksum` is given, every byte written is added to its CRC-32 and count (the cache of converted layers
 * checks its files against it), so the file is not read again for it.
 */
export class StageFileSink extends Writable {
  #handle: FileHandle | undefined;
  readonly #buffer: Buffer;
  #used = 0;

  constructor(
    private readonly path: string,
    private readonly checksum?: { crc32: number; bytes: number },
    size = 1024 * 1024,
  ) {
    super({ highWaterMark: 256 * 1024 });
    this.#buffer = Buffer.allocUnsafeSlow(size);
  }

  override _construct(callback: (error?: Error | null) => void): void {
    open(this.path, 'w').then((handle) => {
      this.#handle = handle;
      callback();
    }, callback);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length < this.#buffer.length / 16 && this.#used + chunk.length <= this.#buffer.length) {
      chunk.copy(this.#buffer, this.#used);
      this.#used += chunk.length;
      callback();
      return;
    }
    this.#take(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#flush().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle === undefined) callback(error);
    else
      handle.close().then(
        () => callback(error),
        (closeError: Error) => callback(error ?? closeError),
      );
  }

  /** A chunk that does not fit beside what waits, or a large one: what waits goes first. */
  async #take(chunk: Buffer): Promise<void> {
    await this.#flush();
    if (chunk.length >= this.#buffer.length / 16) {
      await this.#out(chunk);
      return;
    }
    chunk.copy(this.#buffer, 0);
    this.#used = chunk.length;
  }

  async #flush(): Promise<void> {
    if (this.#used === 0) return;
    const used = this.#used;
    this.#used = 0;
    await this.#out(this.#buffer.subarray(0, used));
  }

  async #out(bytes: Buffer): Promise<void> {
    if (this.checksum) {
      this.checksum.crc32 = crc32(bytes, this.checksum.crc32);
      this.checksum.bytes += bytes.length;
    }
    await writeAll(this.#handle as FileHandle, bytes);
  }
}
