/** Writing to a block device: refused while it is mounted, unless forced. */
import { mkdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { ensureTools, run } from '@etch/test-utils/system';
import { openTarget } from './target.js';

let work: TempDir;
let loop: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  ensureTools([
    { command: 'losetup', aptPackage: 'mount' },
    { command: 'mkfs.ext4', aptPackage: 'e2fsprogs' },
  ]);
  if (process.getuid?.() !== 0) throw new Error('These tests attach loop devices: run them as root.');
  work = await createTempDir('etch-target-');
  await run('truncate', ['-s', '16M', work.join('fs.img')]);
  await run('mkfs.ext4', ['-q', work.join('fs.img')]);
  loop = (await run('losetup', ['--find', '--show', work.join('fs.img')])).stdout.trim();
  cleanups.push(() => run('losetup', ['-d', loop], { allowFailure: true }));
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await work?.remove();
});

async function refusal(path: string): Promise<unknown> {
  return openTarget(path).then(
    async (target) => {
      await target.abort();
      return undefined;
    },
    (e: unknown) => e,
  );
}

describe('block device targets', () => {
  it('accepts an idle device, refuses it while mounted (naming the mount), and --force overrides', async () => {
    expect(await refusal(loop)).toBeUndefined();
    const mnt = work.join('mnt');
    await mkdir(mnt);
    await run('mount', [loop, mnt]);
    cleanups.push(() => run('umount', [mnt], { allowFailure: true }));
    const error = await refusal(loop);
    expect(isEtchError(error, 'ETCH_USAGE'), String(error)).toBe(true);
    expect(String(error)).toContain(`${loop} mounted or swap`);
    const forced = await openTarget(loop, { force: true });
    await forced.abort();
    await run('umount', [mnt]);
    expect(await refusal(loop)).toBeUndefined();
  });
});
