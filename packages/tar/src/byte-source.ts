import { EtchError } from '@etch/format';

/**
 * Pull-based reader over an async iterable of chunks: the tar parser asks for exactly what it needs, so
 * nothing is read ahead beyond one chunk and backpressure reaches the producer.
 */
export class ByteSource {
  readonly #iterator: AsyncIterator<Uint8Array>;
  #pending: Buffer | undefined;
  #done = false;
  /** Bytes handed out so far. */
  position = 0;
  /** When set, every byte handed out is also appended here (for callers that keep raw header bytes). */
  recording: Buffer[] | undefined;

  /**
   * @param seek When given, moves `iterable` so that its next chunk starts at this offset of the input (a file):
   * what {@link skip} passes over beyond the chunk in hand is then not read at all.
   */
  constructor(
    iterable: AsyncIterable<Uint8Array>,
    private readonly seek?: (position: number) => void,
  ) {
    this.#iterator = iterable[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#pending === undefined || this.#pending.length === 0) {
      if (this.#done) return false;
      const next = await this.#iterator.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      const chunk = next.value;
      this.#pending = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
    return true;
  }

  /** Up to `max` bytes (at least one), or null at the end of input. */
  async readSome(max: number): Promise<Buffer | null> {
    // An empty or fractional request would hand back empty chunks forever: a caller's loop would never end.
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`readSome(${max}): expected a positive integer`);
    if (!(await this.#fill())) return null;
    const pending = this.#pending as Buffer;
    const chunk = pending.length <= max ? pending : pending.subarray(0, max);
    this.#pending = pending.length <= max ? undefined : pending.subarray(max);
    this.position += chunk.length;
    this.recording?.push(chunk);
    return chunk;
  }

  /**
   * Exactly `length` bytes; null when the input ends cleanly before the first byte.
   * @throws EtchError `ETCH_BAD_ARCHIVE` when it ends part-way.
   */
  async readExact(length: number): Promise<Buffer | null> {
    if (!Number.isSafeInteger(length) || length < 0)
      throw new RangeError(`readExact(${length}): expected an integer >= 0`);
    const parts: Buffer[] = [];
    let have = 0;
    while (have < length) {
      const chunk = await this.readSome(length - have);
      if (chunk === null) {
        if (have === 0) return null;
        throw truncated(this.position);
      }
      parts.push(chunk);
      have += chunk.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, length);
  }

  /** Discards `length` bytes. */
  async skip(length: number): Promise<void> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`skip(${length}): expected an integer >= 0`);
    let left = length;
    const pending = this.#pending?.length ?? 0;
    if (this.seek !== undefined && this.recording === undefined && left > pending && !this.#done) {
      this.#pending = undefined;
      this.position += left;
      this.seek(this.position);
      return;
    }
    while (left > 0) {
      const chunk = await this.readSome(left);
      if (chunk === null) throw truncated(this.position);
      left -= chunk.length;
    }
  }

  /** Stops the underlying iterator (closing its stream). */
  async close(): Promise<void> {
    this.#done = true;
    this.#pending = undefined;
    await this.#iterator.return?.();
  }
}

export function truncated(position: number): EtchError {
  return new EtchError(
    'ETCH_BAD_ARCHIVE',
    `The archive ends before byte ${position}, which its entries reach; it is truncated.`,
    {
      details: { offset: position },
    },
  );
}
