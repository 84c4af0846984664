import { open, type FileHandle } from 'node:fs/promises';
import { EtchError, ignoreRejection } from '@etch/format';

/** Bytes per chunk the iterator hands out: fresh buffers, since a consumer may keep them. */
const CHUNK = 64 * 1024;

function readFailed(path: string, cause: unknown): EtchError {
  return new EtchError('ETCH_IO', `Reading ${path} failed: ${(cause as Error).message}.`, {
    cause,
    details: { path },
  });
}

/**
 * A tar (or `.etch`) file read at a position that can jump. Iterating it yields its bytes in order, like a read
 * stream; {@link extractTar} and {@link readEtch} then skip a body nobody reads by moving the position instead
 * of reading it, and a consumer can copy an entry's bytes in place with {@link TarFile.readAt} into a buffer
 * of its own (the base image of a `.etch`: a GiB that would otherwise pass through the reader in small chunks).
 * One iteration at a time; close it when done.
 */
export class TarFile implements AsyncIterable<Uint8Array> {
  #position = 0;
  #closed = false;
  #bytesRead = 0;

  private constructor(
    private readonly handle: FileHandle,
    /** The path, for messages. */
    readonly path: string,
  ) {}

  /**
   * Opens `path` for reading.
   * @throws EtchError `ETCH_IO` when it cannot be opened.
   */
  static async open(path: string): Promise<TarFile> {
    const handle = await open(path, 'r').catch((cause: unknown) => {
      throw readFailed(path, cause);
    });
    return new TarFile(handle, path);
  }

  /** Bytes read from the file so far, by the iteration and by {@link readAt}: what was skipped is not counted. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** The offset the next chunk of the iteration starts at. */
  get position(): number {
    return this.#position;
  }

  /** Makes the iteration go on from `position` (an offset in the file), without reading what lies between. */
  seek(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0) throw new RangeError(`seek(${position}): expected an offset`);
    this.#position = position;
  }

  /**
   * Reads up to `length` bytes at `position` into `buffer` (from its start), without moving the iteration.
   * @returns the bytes read: fewer only at the end of the file.
   */
  async readAt(buffer: Uint8Array, position: number, length: number): Promise<number> {
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await this.handle
        .read(buffer, filled, length - filled, position + filled)
        .catch((cause: unknown) => {
          throw readFailed(this.path, cause);
        });
      if (bytesRead === 0) break;
      filled += bytesRead;
      this.#bytesRead += bytesRead;
    }
    return filled;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    while (!this.#closed) {
      const buffer = Buffer.allocUnsafe(CHUNK);
      const at = this.#position;
      const { bytesRead } = await this.handle.read(buffer, 0, CHUNK, at).catch((cause: unknown) => {
        throw readFailed(this.path, cause);
      });
      if (bytesRead === 0) return;
      this.#bytesRead += bytesRead;
      // A seek made while the read was pending wins.
      if (this.#position === at) this.#position = at + bytesRead;
      yield bytesRead === CHUNK ? buffer : buffer.subarray(0, bytesRead);
    }
  }

  /** Closes the file; an iteration then ends. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.handle.close();
  }

  /** As a read stream's `destroy`: closes the file (what {@link readEtch} calls on abort). */
  destroy(): void {
    void ignoreRejection(this.close(), 'closing a file opened only for reading cannot lose data');
  }
}
