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
  it('flushes once 64 MiB were written, and stop() closes the descriptor it flushed through', async () => {
    const path = work.join('image.img');
    await writeFile(path, Buffer.alloc(MIB));
    const progress = { bytesWritten: 0 };
    const writeback = new EarlyWriteback(path, progress);
    progress.bytesWritten = 65 * MIB;
    await writeback.check();
    expect(await descriptorsOn(path), 'descriptors after a flush').toBe(1);
    await writeback.stop();
    expect(await descriptorsOn(path), 'descriptors after stop()').toBe(0);
  });

  it('opens nothing below 64 MiB, and does not fail for a file that is gone', async () => {
    const path = work.join('image.img');
    await writeFile(path, 'x');
    const small = new EarlyWriteback(path, { bytesWritten: 10 * MIB });
    await small.check();
    expect(await descriptorsOn(path), 'descriptors below 64 MiB').toBe(0);
    await small.stop();
    const gone = new EarlyWriteback(work.join('missing.img'), { bytesWritten: 100 * MIB });
    await expect(gone.check(), 'a flush of a file that is gone').resolves.toBeUndefined();
    await expect(gone.stop()).resolves.toBeUndefined();
  });
});
