import { createGzip } from 'node:zlib';

/**
 * Builds `tar-split.json.gz`: newline-delimited JSON of the raw tar bytes around every file's content
 * (type 2 segments) and one record per entry with the CRC-64 of its content (type 1), gzip-compressed.
 * With it the engine rebuilds the original layer tar byte for byte (`docker save`, `docker push`, balena
 * delta updates).
 */
export class TarSplitBuilder {
  #position = 0;
  readonly #gzip = createGzip();
  readonly #chunks: Buffer[] = [];
  readonly #done: Promise<Buffer>;

  constructor() {
    this.#gzip.on('data', (chunk: Buffer) => this.#chunks.push(chunk));
    this.#done = new Promise((resolve, reject) => {
      this.#gzip.on('end', () => resolve(Buffer.concat(this.#chunks)));
      this.#gzip.on('error', reject);
    });
  }

  // Lines go to gzip in batches: one zlib write per tar entry dominated converting layers of small files.
  #pending = '';

  #line(record: Record<string, unknown>): void {
    this.#pending += `${JSON.stringify({ ...record, position: this.#position++ })}\n`;
    if (this.#pending.length >= 64 * 1024) this.#flush();
  }

  #flush(): void {
    if (this.#pending.length > 0) this.#gzip.write(this.#pending);
    this.#pending = '';
  }

  /** Raw bytes that are not file content: padding, extended headers, header blocks, the end marker. */
  segment(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#line({ type: 2, payload: bytes.toString('base64') });
  }

  /** One tar entry: its name as parsed, content size, and the CRC-64 of its content (null when empty). */
  file(name: string, size: number, crc: Buffer | null): void {
    const record: Record<string, unknown> = { type: 1, name };
    if (size > 0) record.size = size;
    record.payload = size > 0 && crc ? crc.toString('base64') : null;
    this.#line(record);
  }

  /**
   * Resolves once gzip has taken in what it was given, or undefined when it already has. Await it between
   * entries: lines come faster than gzip compresses them (it runs in the thread pool), and without this the
   * queue grew with the layer (200,000 empty files: ~130 MiB).
   */
  drained(): Promise<void> | undefined {
    // A gzip that failed never drains: its error comes out of finish().
    if (!this.#gzip.writableNeedDrain || this.#gzip.destroyed) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        this.#gzip.off('drain', done);
        this.#gzip.off('close', done);
        resolve();
      };
      this.#gzip.on('drain', done);
      this.#gzip.on('close', done);
    });
  }

  /** The gzip-compressed result. */
  finish(): Promise<Buffer> {
    this.#flush();
    this.#gzip.end();
    return this.#done;
  }
}
