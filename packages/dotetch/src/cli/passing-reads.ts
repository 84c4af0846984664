import type { ReadAt } from '@etch/disk';

interface PendingRead {
  offset: number;
  buffer: Buffer;
  filled: number;
  resolve: (bytes: Uint8Array) => void;
  reject: (error: Error) => void;
}

/** The first bytes are kept: a reader asks for its next sector there after the chunk holding it passed. */
const HEAD_BYTES = 1024 * 1024;

/**
 * Random-access reads served from a stream as it passes by, for readers that read forward (a partition
 * table: the MBR and GPT at the start, kept; the extended boot records further on, in chain order). A read
 * of bytes already gone rejects; reads past the end return what there was.
 */
export class PassingReads {
  private position = 0;
  private pending: PendingRead[] = [];
  private readonly head = Buffer.alloc(HEAD_BYTES);

  readonly read: ReadAt = (offset, length) =>
    new Promise((resolve, reject) => {
      const read: PendingRead = { offset, buffer: Buffer.alloc(length), filled: 0, resolve, reject };
      if (offset < this.position) {
        if (offset + Math.min(length, this.position - offset) > HEAD_BYTES)
          return reject(new Error(`byte ${offset} has already streamed by (at ${this.position})`));
        read.filled = this.head.copy(read.buffer, 0, offset, Math.min(this.position, offset + length));
        if (read.filled === length) return resolve(read.buffer);
      }
      this.pending.push(read);
    });

  /** The next bytes of the stream. */
  push(chunk: Buffer): void {
    const start = this.position;
    const end = start + chunk.length;
    this.position = end;
    if (start < HEAD_BYTES) chunk.copy(this.head, start, 0, Math.min(chunk.length, HEAD_BYTES - start));
    if (this.pending.length === 0) return;
    this.pending = this.pending.filter((read) => {
      const from = Math.max(read.offset + read.filled, start);
      const to = Math.min(read.offset + read.buffer.length, end);
      if (to > from) {
        chunk.copy(read.buffer, from - read.offset, from - start, to - start);
        read.filled = to - read.offset;
      }
      if (read.filled < read.buffer.length) return true;
      read.resolve(read.buffer);
      return false;
    });
  }

  /** The stream ended: reads still waiting get the bytes they have (short reads, as at the end of a file). */
  end(): void {
    for (const read of this.pending) read.resolve(read.buffer.subarray(0, Math.max(0, read.filled)));
    this.pending = [];
  }
}
