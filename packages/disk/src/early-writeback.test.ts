import { readdir, readlink, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { EarlyWriteback } from './early-writeback.js';

const MIB = 1024 * 1024;

/** Descriptors of this process open on `path`. */
async function descriptorsOn(path: string): Promise<number> {
  let count = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === path) count += 1;
  }
  return count;
}

let work: TempDir;
beforeEach(async () => {
  work = await createTempDir('etch-writeback-');
});
afterEach(async () => {
  await work.remove();
});

describe('EarlyWriteback', () => {
  it('flushes once 64 MiB were written, and stop() waits for it and closes its descriptor', async () => {
    const path = work.join('image.img');
    await writeFile(path, Buffer.alloc(MIB));
    const progress = { bytesWritten: 0 };
    const writeback = new EarlyWriteback(path, progress);
    progress.bytesWritten = 65 * MIB;
    // The poll opens a descriptor of its own for the flush: seen once it starts.
    const deadline = Date.now() + 5000;
    while ((await descriptorsOn(path)) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await descriptorsOn(path), 'descriptors while flushing').toBe(1);
    await writeback.stop();
    expect(await descriptorsOn(path), 'descriptors after stop()').toBe(0);
  });

  it('opens nothing below 64 MiB, and does not fail for a file that is gone', async () => {
    const path = work.join('image.img');
    await writeFile(path, 'x');
    const progress = { bytesWritten: 10 * MIB };
    const small = new EarlyWriteback(path, progress);
    // Absence cannot be awaited: two poll periods (100 ms each) pass without a flush.
    await new Promise((r) => setTimeout(r, 250));
    expect(await descriptorsOn(path), 'descriptors below 64 MiB').toBe(0);
    await small.stop();
    const gone = new EarlyWriteback(work.join('missing.img'), { bytesWritten: 100 * MIB });
    // Long enough for a poll to try to open it.
    await new Promise((r) => setTimeout(r, 250));
    await expect(gone.stop()).resolves.toBeUndefined();
  });
});
