import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, patternStream, collect, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { readBaseRepositories } from './base-repositories.js';

let work: TempDir;
const REPOSITORIES = JSON.stringify({
  Repositories: { balena_supervisor: { 'balena_supervisor:v16.1.0': 'sha256:' + 'a'.repeat(64) } },
});

/** A tree to put in filesystems: a store file, a big directory (hashed by mkfs), a multi-block file, a symlinked dir. */
async function sourceTree(dir: string): Promise<Buffer> {
  await mkdir(join(dir, 'docker/image/overlay2'), { recursive: true });
  await writeFile(join(dir, 'docker/image/overlay2/repositories.json'), REPOSITORIES);
  await mkdir(join(dir, 'many'));
  for (let i = 0; i < 400; i++) await writeFile(join(dir, 'many', `entry-with-a-longish-name-${i}`), String(i));
  const big = await collect(patternStream(3 * 1024 * 1024 + 123, 64 * 1024, 7));
  await writeFile(join(dir, 'big.bin'), big);
  await symlink('docker', join(dir, 'link'));
  return big;
}

beforeAll(async () => {
  work = await createTempDir('etch-ext4-');
});
afterAll(() => work.remove());

describe('readBaseRepositories', () => {
  it('reads repositories.json from logical partition 6 of a balenaOS-like disk without mounting it', async () => {
    const src = work.join('data-src');
    await sourceTree(src);
    const data = work.join('data.img');
    await run('truncate', ['-s', '16M', data]);
    await run('mkfs.ext4', ['-q', '-F', '-d', src, data]);
    const disk = work.join('disk.img');
    await run('truncate', ['-s', '40M', disk]);
    await run('sfdisk', ['--quiet', disk], {
      input:
        'label: dos\nstart=2048, size=4096, type=c\nstart=6144, size=4096, type=83\nstart=10240, size=4096, type=83\nstart=14336, type=5\nstart=16384, size=2048, type=83\nstart=20480, size=32768, type=83\n',
    });
    await run('dd', [`if=${data}`, `of=${disk}`, 'bs=512', 'seek=20480', 'conv=notrunc', 'status=none']);
    const found = await readBaseRepositories(disk, { partition: 6 });
    expect(found).toEqual(JSON.parse(REPOSITORIES));
    // Partition 5 holds no filesystem: a clear error, not an empty store.
    expect(
      isEtchError(await readBaseRepositories(disk, { partition: 5 }).catch((e: unknown) => e), 'ETCH_BAD_DISK_IMAGE'),
    ).toBe(true);
    expect(
      isEtchError(await readBaseRepositories(disk, { partition: 9 }).catch((e: unknown) => e), 'ETCH_BAD_DISK_IMAGE'),
    ).toBe(true);
  });

  it('reads the sample balenaOS image shipped with the repository (no engine store there yet)', async () => {
    const sample = join(import.meta.dirname, '../../../examples/sample/balena-sample.img');
    await readFile(sample);
    expect(await readBaseRepositories(sample, { partition: 6 })).toBeUndefined();
  });
});
