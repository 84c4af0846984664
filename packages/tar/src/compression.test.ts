import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { zstdDecompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { collect, patternStream } from '@etch/test-utils';
import { createCompressor, createDecompressor, detectCompression } from './compression.js';
import { decompressAuto } from './sniff.js';

/** Bytes that compress well but not trivially: a repeating pattern with some text in it. */
const sample = Buffer.from('inject/6/docker/overlay2/layer.tar '.repeat(5_000));

async function compress(kind: 'gzip' | 'zstd', level?: number): Promise<Buffer> {
  const compressor = createCompressor(kind, level);
  const out = collect(compressor);
  await pipeline(Readable.from([sample]), compressor);
  return out;
}

describe('compression by node:zlib', () => {
  it.each(['gzip', 'zstd'] as const)('round-trips %s and recognises it by magic bytes', async (kind) => {
    const compressed = await compress(kind);
    expect(detectCompression(compressed), 'detected compression').toBe(kind);
    expect(compressed.length, 'compressed size').toBeLessThan(sample.length / 10);
    const decompressor = createDecompressor(kind);
    const out = collect(decompressor);
    await pipeline(Readable.from([compressed]), decompressor);
    expect((await out).equals(sample), 'decompressed bytes equal the input').toBe(true);
  });

  it('honours the zstd level and writes frames the zstd format reads', async () => {
    const fast = await compress('zstd', 1);
    const strong = await compress('zstd', 19);
    expect(strong.equals(fast), 'level 19 output differs from level 1').toBe(false);
    expect(strong.length, 'level 19 size against level 1').toBeLessThanOrEqual(fast.length);
    expect(zstdDecompressSync(strong).equals(sample), 'level 19 frame decompresses to the input').toBe(true);
  });

  it('decompresses a zstd stream larger than its chunks through decompressAuto', async () => {
    const compressor = createCompressor('zstd');
    const compressed = collect(compressor);
    await pipeline(patternStream(2 * 1024 * 1024), compressor);
    const { compression, stream } = await decompressAuto(Readable.from([await compressed]));
    expect(compression, 'sniffed compression').toBe('zstd');
    expect((await collect(stream)).equals(await collect(patternStream(2 * 1024 * 1024))), 'round trip').toBe(true);
  });
});
