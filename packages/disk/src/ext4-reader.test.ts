import { appendFile, chmod, chown, link, mkdir, open, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import type { ReadAt } from './partition-table.js';
import { createTempDir, patternStream, collect, type TempDir } from '@etch/test-utils';
import { plantExtentBomb, run } from '@etch/test-utils/system';
import { Ext4Reader } from './ext4-reader.js';

let work: TempDir;
const REPOSITORIES = JSON.stringify({
  Repositories: { balena_supervisor: { 'balena_supervisor:v16.1.0': 'sha256:' + 'a'.repeat(64) } },
});

async function reader(path: string, offset = 0) {
  const handle = await open(path, 'r');
  const read: ReadAt = async (at, length) => {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, at);
    return buffer.subarray(0, bytesRead);
  };
  try {
    return { fs: await Ext4Reader.open(read, offset), close: () => handle.close() };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** A tree to put in filesystems: a store file, a big directory (hashed by mkfs), a multi-block file, a symlinked dir. */
async function sourceTree(dir: string): Promise<Buffer> {
  await mkdir(join(dir, 'docker/image/overlay2'), { recursive: true });
  await writeFile(join(dir, 'docker/image/overlay2/repositories.json'), REPOSITORIES);
  await mkdir(join(dir, 'many'));
  for (let i = 0; i < 400; i++) await writeFile(join(dir, 'many', `entry-with-a-longish-name-${i}`), String(i));
  const big = await collect(patternStream(3 * 1024 * 1024 + 123, 64 * 1024, 7));
  await writeFile(join(dir, 'big.bin'), big);
  await symlink('docker', join(dir, 'link'));
  await symlink('x'.repeat(200), join(dir, 'far'));
  await writeFile(join(dir, 'owned'), 'owned\n');
  await chown(join(dir, 'owned'), 1234, 5678);
  await chmod(join(dir, 'owned'), 0o4750);
  await utimes(join(dir, 'owned'), 1_000_000_000, 1_000_000_000);
  await link(join(dir, 'owned'), join(dir, 'owned-too'));
  await writeFile(join(dir, 'sparse.bin'), 'head');
  await truncate(join(dir, 'sparse.bin'), 5 * 1024 * 1024 - 4);
  await appendFile(join(dir, 'sparse.bin'), 'tail');
  return big;
}

beforeAll(async () => {
  work = await createTempDir('etch-ext4-');
});
afterAll(() => work.remove());

describe('Ext4Reader', () => {
  it.each([
    ['ext4, 4 KiB blocks', ['mkfs.ext4', '-b', '4096']],
    ['ext4, 1 KiB blocks', ['mkfs.ext4', '-b', '1024']],
    ['ext2 (block maps, no extents)', ['mkfs.ext2', '-b', '1024']],
    ['ext4 with 64-bit descriptors and checksums', ['mkfs.ext4', '-O', '64bit,metadata_csum', '-b', '4096']],
  ])('reads files by path from %s made by mkfs -d', async (_label, mkfs) => {
    const src = work.join(`src-${mkfs.join('')}`);
    const big = await sourceTree(src);
    const image = work.join(`fs-${mkfs.join('')}.img`);
    await run('truncate', ['-s', '32M', image]);
    const [command, ...args] = mkfs as [string, ...string[]];
    await run(command, ['-q', '-F', ...args, '-d', src, image]);
    const { fs, close } = await reader(image);
    try {
      expect((await fs.readFile('/docker/image/overlay2/repositories.json'))?.toString()).toBe(REPOSITORIES);
      expect((await fs.readFile('many/entry-with-a-longish-name-399'))?.toString()).toBe('399');
      expect((await fs.readFile('/big.bin', 8 * 1024 * 1024))?.equals(big)).toBe(true);
      expect(await fs.readFile('/docker/nothing/here')).toBeUndefined();
      await expect(fs.readFile('/link/image/overlay2/repositories.json')).rejects.toThrow(/symlink/);
      await expect(fs.readFile('/big.bin', 1024)).rejects.toThrow(/more than/);
      expect((await collect(fs.readFileStream('/big.bin', 100_000))).equals(big)).toBe(true);
      expect(await fs.stat('/owned')).toMatchObject({
        type: 'file',
        mode: 0o4750,
        uid: 1234,
        gid: 5678,
        mtime: 1_000_000_000,
        links: 2,
      });
      expect((await fs.stat('/owned-too'))?.inode).toBe((await fs.stat('/owned'))?.inode);
      expect(await fs.stat('/link')).toMatchObject({ type: 'symlink' });
      const info = await fs.info();
      expect(info.blocks * info.blockSize).toBe(32 * 1024 * 1024);
      expect(info.freeBlocks).toBeGreaterThan(0);
      expect(info.freeBlocks).toBeLessThan(info.blocks);
      expect(info.freeInodes).toBeLessThan(info.inodes);
      expect(await fs.readlink('/link')).toBe('docker');
      expect(await fs.readlink('/far')).toBe('x'.repeat(200));
      const sparse = await collect(fs.readFileStream('/sparse.bin'));
      expect(sparse.length).toBe(5 * 1024 * 1024);
      expect(sparse.subarray(0, 4).toString()).toBe('head');
      expect(sparse.subarray(5 * 1024 * 1024 - 4).toString()).toBe('tail');
      expect(sparse.subarray(4, 5 * 1024 * 1024 - 4).every((b) => b === 0)).toBe(true);
    } finally {
      await close();
    }
  });

  it('refuses a partition without an ext filesystem', async () => {
    const image = work.join('zero.img');
    await writeFile(image, Buffer.alloc(8192));
    const error = await reader(image).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE')).toBe(true);
  });

  it('refuses a crafted extent tree (fan-out and revisits) quickly, in bounded memory', async () => {
    const src = work.join('src-bomb');
    await mkdir(join(src, 'docker/image/overlay2'), { recursive: true });
    await writeFile(join(src, 'docker/image/overlay2/repositories.json'), REPOSITORIES);
    await writeFile(join(src, 'spare.bin'), Buffer.alloc(8 * 4096, 0x61));
    const image = work.join('bomb.img');
    await run('truncate', ['-s', '8M', image]);
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, image]);
    await plantExtentBomb(image, 0, '/docker/image/overlay2/repositories.json', '/spare.bin');
    await plantExtentBomb(image, 0, '/docker/image', '/spare.bin');
    const { fs, close } = await reader(image);
    const started = Date.now();
    const heap = process.memoryUsage().heapUsed;
    try {
      for (const path of ['/docker/image/overlay2/repositories.json', '/docker/image/x']) {
        const error = await fs.readFile(path).catch((e: unknown) => e);
        expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE'), `${path}: ${String(error)}`).toBe(true);
        expect(String(error)).toMatch(/extent tree/);
      }
    } finally {
      await close();
    }
    expect(Date.now() - started, 'milliseconds to refuse').toBeLessThan(2000);
    expect(process.memoryUsage().heapUsed - heap, 'heap growth').toBeLessThan(64 * 1024 * 1024);
  });
});
