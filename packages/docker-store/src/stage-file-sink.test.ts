import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTempDir, rejectionOf, type TempDir } from '@etch/test-utils';
import { StageFileSink } from './stage-file-sink.js';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir('etch-stage-sink-');
});
afterEach(() => dir.remove());

describe('StageFileSink', () => {
  it('writes small and large chunks in order, whatever the mix, and checksums exactly what it wrote', async () => {
    // Small chunks that fill the buffer, one that does not fit beside them, large ones between.
    const chunks = [
      ...Array.from({ length: 40 }, (_, i) => randomBytes(1 + ((i * 37) % 900))),
      randomBytes(5000),
      ...Array.from({ length: 10 }, () => randomBytes(700)),
      randomBytes(3000),
    ];
    const file = dir.join('layer.tar');
    const checksum = { crc32: 0, bytes: 0 };
    await pipeline(Readable.from(chunks), new StageFileSink(file, checksum, 16 * 1024));
    const expected = Buffer.concat(chunks);
    const written = await readFile(file);
    expect(written.length, 'file size').toBe(expected.length);
    expect(written.equals(expected), 'file bytes vs chunks in order').toBe(true);
    expect(checksum.bytes, 'bytes counted').toBe(expected.length);
    expect(checksum.crc32, 'CRC-32 of the bytes written').toBe(crc32(expected));
  });

  it('fails the pipeline when the file cannot be made, and leaves nothing', async () => {
    const file = dir.join('missing-folder', 'layer.tar');
    const error = await rejectionOf(pipeline(Readable.from([Buffer.from('x')]), new StageFileSink(file)));
    expect((error as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(await stat(file).catch(() => undefined)).toBeUndefined();
  });
});
