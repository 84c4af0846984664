import { writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { BufferPool, readFileChunks } from './buffer-pool.js';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir();
});
afterEach(() => dir.remove());

describe('BufferPool', () => {
  it('reuses a buffer once the exact view it lent comes back', () => {
    const pool = new BufferPool(1024);
    const view = pool.lend(pool.take().subarray(0, 100));
    pool.reclaim(view);
    const again = pool.take();
    expect(again.buffer).toBe(view.buffer);
    expect(again.length).toBe(1024);
    expect(pool.allocated).toBe(1);
  });

  it('never reuses memory that comes back split, copied or twice', () => {
    const pool = new BufferPool(1024);
    const view = pool.lend(pool.take().subarray(0, 100));
    // A stage that split the chunk: the first half is written while the second may still be queued.
    pool.reclaim(view.subarray(0, 50));
    pool.reclaim(view.subarray(50));
    pool.reclaim(Buffer.from(view));
    expect(pool.take().buffer).not.toBe(view.buffer);
    pool.reclaim(view);
    pool.reclaim(view);
    const first = pool.take();
    expect(first.buffer).toBe(view.buffer);
    expect(pool.take().buffer).not.toBe(view.buffer);
  });

  it('keeps at most `keep` idle buffers', () => {
    const pool = new BufferPool(16, 2);
    const views = [1, 2, 3].map(() => pool.lend(pool.take()));
    for (const view of views) pool.reclaim(view);
    pool.take();
    pool.take();
    expect(pool.allocated).toBe(3);
    pool.take();
    expect(pool.allocated).toBe(4);
  });
});

describe('readFileChunks', () => {
  it('reads a whole file in lent chunks, reusing them when they come back', async () => {
    const content = Buffer.alloc(10_000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7) % 251;
    await writeFile(dir.join('f'), content);
    const pool = new BufferPool(1000);
    const parts: Buffer[] = [];
    for await (const chunk of readFileChunks(dir.join('f'), pool)) {
      parts.push(Buffer.from(chunk));
      pool.reclaim(chunk);
    }
    expect(Buffer.concat(parts).equals(content)).toBe(true);
    expect(pool.allocated).toBe(1);
  });
});
