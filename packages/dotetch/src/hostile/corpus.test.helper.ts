// Builders for the hostile corpus: a tiny two-partition disk and `.etch` files around it.
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { etchPrelude, paxEntry, rawTarEntry, tarEnd, type RawTarFields } from '@etch/test-utils';
import { plantExtentBomb, run } from '@etch/test-utils/system';

const MIB = 1024 * 1024;
/** Byte offsets of the tiny disk's partitions: 1 is FAT (with a `boot/` folder), 2 is ext4. */
export const TINY = { fat: 1 * MIB, ext: 3 * MIB, size: 8 * MIB } as const;

/**
 * An 8 MiB MBR disk: partition 1 FAT (2 MiB, holding `boot/readme.txt`), partition 2 ext4 (4 MiB, holding
 * `docker/image/overlay2/repositories.json` and `spare.bin`, whose blocks an extent bomb may borrow).
 */
export async function makeTinyDisk(dir: string): Promise<string> {
  const path = join(dir, 'tiny.img');
  await run('truncate', ['-s', String(TINY.size), path]);
  await run('sfdisk', ['--quiet', path], {
    input: `label: dos\nstart=2048, size=4096, type=c\nstart=6144, size=8192, type=83\n`,
  });
  const fat = join(dir, 'fat.part');
  await run('truncate', ['-s', String(2 * MIB), fat]);
  await run('mkfs.vfat', ['-n', 'BOOT', fat]);
  await writeFile(join(dir, 'readme.txt'), 'boot\n');
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  await run('mmd', ['-i', fat, '::/boot'], { env });
  await run('mcopy', ['-i', fat, join(dir, 'readme.txt'), '::/boot/readme.txt'], { env });
  const src = join(dir, 'ext-src');
  await mkdir(join(src, 'docker/image/overlay2'), { recursive: true });
  await writeFile(join(src, 'docker/image/overlay2/repositories.json'), '{"Repositories":{}}');
  await writeFile(join(src, 'spare.bin'), Buffer.alloc(8 * 4096, 0x61));
  const ext = join(dir, 'ext.part');
  await run('truncate', ['-s', String(4 * MIB), ext]);
  await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, ext]);
  for (const [piece, at] of [
    [fat, TINY.fat],
    [ext, TINY.ext],
  ] as const)
    await run('dd', [`if=${piece}`, `of=${path}`, 'bs=1M', `seek=${at / MIB}`, 'conv=notrunc', 'status=none']);
  return path;
}

/** A copy of the tiny disk whose `/docker` directory has an extent-tree bomb. */
export async function makeBombDisk(tiny: string, dir: string): Promise<string> {
  const path = join(dir, 'bomb.img');
  await cp(tiny, path);
  await plantExtentBomb(path, TINY.ext, '/docker/image', '/spare.bin');
  await plantExtentBomb(path, TINY.ext, '/docker', '/spare.bin');
  return path;
}

/** One inject entry, written field by field. */
export function entry(fields: RawTarFields, data?: string | Buffer): Buffer {
  return rawTarEntry(fields, data === undefined ? undefined : Buffer.from(data));
}

/** A `.etch`: VERSION, `disk` as `disk.img`, then `body`, then the end marker (unless `end` is false). */
export async function etchOf(disk: string | Buffer, body: Buffer[], end = true): Promise<Buffer> {
  const image = typeof disk === 'string' ? await readFile(disk) : disk;
  return Buffer.concat([etchPrelude(image, 'disk.img'), ...body, ...(end ? [tarEnd()] : [])]);
}

export { paxEntry };
