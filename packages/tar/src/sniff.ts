import { ignoreRejection } from '@etch/format';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecompressor, detectCompression, MAGIC_LENGTH, type Compression } from './compression.js';

/** Result of {@link decompressAuto}. */
export interface Sniffed {
  compression: Compression;
  /** The decompressed bytes. */
  stream: Readable;
}

/**
 * Looks at the first bytes of `input` and returns its decompressed content, whatever the magic says.
 */
export async function decompressAuto(input: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<Sniffed> {
  const iterator = input[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < MAGIC_LENGTH) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    const chunk = Buffer.from(next.value);
    head.push(chunk);
    length += chunk.length;
  }
  const compression = detectCompression(Buffer.concat(head));
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      yield* head;
      if (ended) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      }
    } finally {
      // Closing early (a consumer stopped reading) must close the input too.
      if (!ended) await iterator.return?.();
    }
  }
  const raw = Readable.from(replay(), { objectMode: false });
  if (compression === 'none') return { compression, stream: raw };
  const decompressor = createDecompressor(compression);
  // pipeline destroys the decompressor with the first error, so the consumer sees it; nothing to add here.
  ignoreRejection(pipeline(raw, decompressor, signal ? { signal } : {}), 'the decompressor carries the error');
  return { compression, stream: decompressor };
}
