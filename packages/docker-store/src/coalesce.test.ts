import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Coalescer } from './coalesce.js';

/** The chunks a Coalescer of `size` makes of `input`. */
async function through(input: Buffer[], size: number): Promise<Buffer[]> {
  // 'data' events, as a pipe to a file stream sees them (an async iterator would join what is buffered).
  const out: Buffer[] = [];
  const stream = Readable.from(input).pipe(new Coalescer(size));
  stream.on('data', (chunk: Buffer) => out.push(chunk));
  await finished(stream);
  return out;
}

describe('Coalescer', () => {
  it('joins small chunks into writes of about its size and keeps every byte in order', async () => {
    const input = Array.from({ length: 300 }, (_, i) => randomBytes(1 + (i % 7) * 100));
    const out = await through(input, 16 * 1024);
    expect(Buffer.concat(out).equals(Buffer.concat(input)), 'bytes out vs in').toBe(true);
    expect(out.length, 'chunks out').toBeLessThanOrEqual(Math.ceil(Buffer.concat(input).length / (16 * 1024)) + 1);
    for (const chunk of out.slice(0, -1)) expect(chunk.length, 'a joined chunk').toBeGreaterThan(16 * 1024 - 700);
  });

  it('passes a large chunk on as the same buffer, after what was pending', async () => {
    const small = randomBytes(100);
    const large = randomBytes(8 * 1024); // half the size: at least a sixteenth
    const out = await through([small, large, small], 16 * 1024);
    expect(out.map((c) => c.length)).toEqual([100, 8 * 1024, 100]);
    expect(out[1], 'the large chunk').toBe(large);
  });
});
