import { EtchError } from '@etch/format';

/**
 * Pull-based reader over an async iterable of chunks: the tar parser asks for exactly what it needs, so
 * nothing is read ahead beyond one chunk and backpressure reaches the producer.
 */
export class ByteSource {
  readonly #iterator: AsyncIterator<Uint8Array>;
  /** The chunk in hand; its bytes from `#at` on are not handed out yet. */
  #pending: Buffer | undefined;
  // An offset into the chunk rather than a new view of its rest on each read: a layer of many small files
  // reads several fields per entry, and two views per read were a large share of the garbage of parsing one.
  #at = 0;
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

  /** Bytes of the chunk in hand not handed out yet. */
  get #left(): number {
    return this.#pending === undefined ? 0 : this.#pending.length - this.#at;
  }

  async #fill(): Promise<boolean> {
    while (this.#left === 0) {
      if (this.#done) return false;
      const next = await this.#iterator.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      const chunk = next.value;
      this.#pending = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      this.#at = 0;
    }
    return true;
  }

  /** Hands out the next `length` bytes of the chunk in hand, which holds at least that many. */
  #take(length: number): Buffer {
    const pending = this.#pending as Buffer;
    const chunk = this.#at === 0 && length === pending.length ? pending : pending.subarray(this.#at, this.#at + length);
    this.#advance(length);
    this.recording?.push(chunk);
    return chunk;
  }

  /** Moves past `length` bytes of the chunk in hand, which holds at least that many. */
  #advance(length: number): void {
    this.#at += length;
    if (this.#at === (this.#pending as Buffer).length) this.#pending = undefined;
    this.position += length;
  }

  /** Up to `max` bytes (at least one), or null at the end of input. */
  async readSome(max: number): Promise<Buffer | null> {
    // An empty or fractional request would hand back empty chunks forever: a caller's loop would never end.
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`readSome(${max}): expected a positive integer`);
    if (!(await this.#fill())) return null;
    return this.#take(Math.min(max, this.#left));
  }

  /**
   * Exactly `length` bytes; null when the input ends cleanly before the first byte.
   * @throws EtchError `ETCH_BAD_ARCHIVE` when it ends part-way.
   */
  async readExact(length: number): Promise<Buffer | null> {
    if (!Number.isSafeInteger(length) || length < 0)
      throw new RangeError(`readExact(${length}): expected an integer >= 0`);
    if (length === 0) return Buffer.alloc(0);
    if (!(await this.#fill())) return null;
    if (this.#left >= length) return this.#take(length);
    const parts: Buffer[] = [];
    let have = 0;
    while (have < length) {
      const chunk = await this.readSome(length - have);
      if (chunk === null) throw truncated(this.position);
      parts.push(chunk);
      have += chunk.length;
    }
    return Buffer.concat(parts, length);
  }

  /** Discards `length` bytes. */
  async skip(length: number): Promise<void> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`skip(${length}): expected an integer >= 0`);
    let left = length;
    if (this.seek !== undefined && this.recording === undefined && left > this.#left && !this.#done) {
      this.#pending = undefined;
      this.position += left;
      this.seek(this.position);
      return;
    }
    while (left > 0) {
      if (!(await this.#fill())) throw truncated(this.position);
      const n = Math.min(left, this.#left);
      if (this.recording === undefined) this.#advance(n);
      else this.#take(n);
      left -= n;
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
