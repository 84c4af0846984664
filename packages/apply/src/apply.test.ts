import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pack as tarPack } from 'tar-stream';
import { isEtchError } from '@etch/format';
import { Ext4Reader, findPartition, readPartitionTable } from '@etch/disk';
import { TarFile, promisePacker, whenPackerIdle, type EntryContent, type EntryHeader } from '@etch/tar';
import {
  collect,
  createTempDir,
  etchPrelude,
  patternStream,
  paxEntry,
  rawTarEntry,
  tarEnd,
  type TempDir,
} from '@etch/test-utils';
import { makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { applyEtch } from './apply.js';
import { openReader } from './filesystem.js';

let work: TempDir;
const CAPABILITY = Buffer.from('0100000200040000000000000000000000000000', 'hex');
/** A POSIX ACL as Linux passes it in xattrs: version 2, then user::rw-, group::r--, other::r--. */
const ACL = Buffer.from('02000000' + '01000600ffffffff' + '04000400ffffffff' + '20000400ffffffff', 'hex');
const BIG = 24 * 1024 * 1024;
const MTIME = new Date(1_600_000_000_000);

/** Writes a .etch by hand: VERSION, the base image file, then entries (name relative to the archive root). */
async function writeEtch(
  path: string,
  base: string,
  baseName: string,
  entries: { header: EntryHeader; content?: EntryContent }[],
): Promise<void> {
  const pack = tarPack();
  const done = pipeline(pack as unknown as Readable, createWriteStream(path));
  const write = promisePacker(pack);
  await write({ name: 'VERSION', mtime: new Date(0) }, '1.0');
  await write({ name: baseName, size: (await stat(base)).size }, createReadStream(base));
  for (const { header, content } of entries) await write({ mtime: MTIME, ...header }, content);
  await whenPackerIdle(pack);
  pack.finalize();
  await done;
}

async function fsOf(image: string, partition: number) {
  const disk = await openReader(image);
  const table = await readPartitionTable(disk.read);
  const part = findPartition(table, partition);
  return { fs: await Ext4Reader.open(disk.read, part.offset), part, close: disk.close };
}

const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

beforeAll(async () => {
  work = await createTempDir('etch-apply-');
});
afterAll(() => work.remove());

describe('applyEtch onto a balenaOS-like image', () => {
  let image: string;
  let base: string;
  let offsets: Record<number, number>;

  beforeAll(async () => {
    // The OS ships content in its data partition: kept unless an entry replaces it.
    const data = work.join('os-data');
    await mkdir(`${data}/docker/image/overlay2`, { recursive: true });
    await writeFile(`${data}/docker/image/overlay2/repositories.json`, '{"Repositories":{}}');
    await writeFile(`${data}/docker/keep.txt`, 'from the OS\n');
    await mkdir(`${data}/merge`);
    await writeFile(`${data}/merge/old.txt`, 'old\n');
    base = work.join('balena.img');
    offsets = await makeBalenaLikeImage(base, { dataMiB: 8, dataContent: data });
    const etch = work.join('preload.etch');
    await writeEtch(etch, base, 'balena.img', [
      { header: { name: 'inject/1/config.json' }, content: '{"deviceType":"genericx86-64"}\n' },
      {
        header: { name: 'inject/1/splash/balena-logo.png' },
        content: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]),
      },
      { header: { name: 'inject/6/merge/', type: 'directory', mode: 0o750, uid: 7, gid: 8 } },
      { header: { name: 'inject/6/merge/new.txt' }, content: 'new\n' },
      {
        header: { name: 'inject/6/docker/image/overlay2/repositories.json', mode: 0o600 },
        content: '{"Repositories":{"x":{}}}',
      },
      { header: { name: 'inject/6/app/suid', mode: 0o4755, uid: 1000, gid: 1000 }, content: '#!/bin/sh\n' },
      { header: { name: 'inject/6/app/hard', type: 'link', linkname: 'inject/6/app/suid' } },
      { header: { name: 'inject/6/app/rel', type: 'symlink', linkname: '../docker/keep.txt' } },
      { header: { name: 'inject/6/app/abs', type: 'symlink', linkname: '/etc/passwd' } },
      { header: { name: 'inject/6/app/whiteout', type: 'character-device', devmajor: 0, devminor: 0, mode: 0 } },
      { header: { name: 'inject/6/app/opaque/', type: 'directory', xattrs: { 'trusted.overlay.opaque': 'y' } } },
      {
        header: { name: 'inject/6/app/cap', mode: 0o755, xattrs: { 'security.capability': CAPABILITY } },
        content: 'cap\n',
      },
      { header: { name: 'inject/6/app/naïve 名前 "quoted".txt' }, content: 'unicode\n' },
      // debugfs reads "<2>" as inode 2, the root: written by name, the root keeps its mode.
      { header: { name: 'inject/6/app/<2>', mode: 0o600, uid: 5 }, content: 'angle\n' },
      { header: { name: `inject/6/app/${'d'.repeat(150)}/${'f'.repeat(200)}` }, content: 'long\n' },
      // More than the 8 MiB data partition holds: the partition and its filesystem must grow.
      { header: { name: 'inject/6/big.bin', size: BIG }, content: patternStream(BIG) },
    ]);
    image = work.join('out.img');
    const result = await applyEtch(createReadStream(etch), { output: image, verify: true });
    expect(result.verified).toBe(true);
    expect(result.partitions[6]?.grown).toBe(true);
  });

  it('writes the base image and keeps the partitions the .etch does not touch byte for byte', async () => {
    for (const partition of [2, 3, 5]) {
      const start = offsets[partition] as number;
      const length = 2 * 1024 * 1024;
      const a = await run('sh', [
        '-c',
        `dd if=${base} bs=1M skip=${start / 1048576} count=${length / 1048576} status=none | sha256sum`,
      ]);
      const b = await run('sh', [
        '-c',
        `dd if=${image} bs=1M skip=${start / 1048576} count=${length / 1048576} status=none | sha256sum`,
      ]);
      expect(b.stdout).toBe(a.stdout);
    }
  });

  it('grows the data partition and its filesystem, and e2fsck finds the result clean', async () => {
    const { fs, part, close } = await fsOf(image, 6);
    const info = await fs.info();
    await close();
    expect(part.size).toBeGreaterThan(BIG);
    expect(info.blocks * info.blockSize).toBe(part.size);
    const fsck = await run('e2fsck', ['-fn', `${image}?offset=${part.offset}`], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    const table = await run('sfdisk', ['--json', image]);
    expect(JSON.parse(table.stdout).partitiontable.partitions).toHaveLength(6);
  });

  it('writes every entry type with its metadata into ext4, merging with what the OS had', async () => {
    const { fs, part, close } = await fsOf(image, 6);
    try {
      expect((await fs.readFile('/docker/keep.txt'))?.toString()).toBe('from the OS\n');
      expect((await fs.readFile('/merge/old.txt'))?.toString()).toBe('old\n');
      expect((await fs.readFile('/merge/new.txt'))?.toString()).toBe('new\n');
      expect(await fs.stat('/merge')).toMatchObject({
        type: 'directory',
        mode: 0o750,
        uid: 7,
        gid: 8,
        mtime: MTIME.getTime() / 1000,
      });
      expect((await fs.readFile('/docker/image/overlay2/repositories.json'))?.toString()).toBe(
        '{"Repositories":{"x":{}}}',
      );
      expect(await fs.stat('/app/suid')).toMatchObject({
        type: 'file',
        mode: 0o4755,
        uid: 1000,
        gid: 1000,
        links: 2,
        mtime: MTIME.getTime() / 1000,
      });
      expect((await fs.stat('/app/hard'))?.inode).toBe((await fs.stat('/app/suid'))?.inode);
      expect(await fs.readlink('/app/rel')).toBe('../docker/keep.txt');
      expect(await fs.readlink('/app/abs')).toBe('/etc/passwd');
      expect(await fs.stat('/app/whiteout')).toMatchObject({ type: 'character-device', mode: 0 });
      expect((await fs.readFile('/app/naïve 名前 "quoted".txt'))?.toString()).toBe('unicode\n');
      expect((await fs.readFile('/app/<2>'))?.toString()).toBe('angle\n');
      expect(await fs.stat('/app/<2>')).toMatchObject({ type: 'file', mode: 0o600, uid: 5 });
      expect(await fs.stat('/')).toMatchObject({ type: 'directory', uid: 0 });
      expect((await fs.readFile(`/app/${'d'.repeat(150)}/${'f'.repeat(200)}`))?.toString()).toBe('long\n');
      expect((await collect(fs.readFileStream('/big.bin'))).equals(await collect(patternStream(BIG)))).toBe(true);
      const device = `${image}?offset=${part.offset}`;
      const opaque = await run('debugfs', ['-R', 'ea_get -V /app/opaque trusted.overlay.opaque', device]);
      expect(opaque.stdout.trim()).toBe('y');
      const cap = await run('debugfs', ['-R', 'ea_get -x /app/cap security.capability', device]);
      expect(cap.stdout.replace(/\s/g, '')).toBe(`security.capability(20)=${CAPABILITY.toString('hex')}`);
      const whiteout = await run('debugfs', ['-R', 'stat /app/whiteout', device]);
      expect(whiteout.stdout).toMatch(/Device major\/minor number: 00:00/);
    } finally {
      await close();
    }
  });

  it('writes files into the FAT boot partition, which fsck.vfat finds clean', async () => {
    const boot = `${image}@@${offsets[1]}`;
    const config = await run('mcopy', ['-n', '-i', boot, '::/config.json', '-'], { env: mtoolsEnv });
    expect(config.stdout).toBe('{"deviceType":"genericx86-64"}\n');
    const logo = await run('mcopy', ['-n', '-i', boot, '::/splash/balena-logo.png', '-'], { env: mtoolsEnv });
    expect(logo.stdoutBuffer.equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]))).toBe(true);
    const piece = work.join('boot.vfat');
    await run('dd', [
      `if=${image}`,
      `of=${piece}`,
      'bs=1M',
      `skip=${(offsets[1] as number) / 1048576}`,
      'count=8',
      'status=none',
    ]);
    const fsck = await run('fsck.vfat', ['-n', piece], { allowFailure: true });
    expect(fsck.code, fsck.stdout).toBe(0);
  });
});

describe('applyEtch refusals', () => {
  let base: string;
  let offsets: Record<number, number>;
  beforeAll(async () => {
    base = work.join('small.img');
    offsets = await makeBalenaLikeImage(base, { dataMiB: 4 });
  });

  it('refuses a symlink for the FAT boot partition, and leaves no image behind', async () => {
    const etch = work.join('fat-link.etch');
    await writeEtch(etch, base, 'small.img', [{ header: { name: 'inject/1/link', type: 'symlink', linkname: 'x' } }]);
    const dir = work.join('out-fat');
    await mkdir(dir);
    const error = await applyEtch(createReadStream(etch), { output: `${dir}/out.img` }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    expect(String(error)).toMatch(/FAT/);
    expect(await readdir(dir)).toEqual([]);
  });

  it.each(['c:d.txt', 'splash/x:config.json', 'a?b', 'tab\there'])(
    'refuses the FAT name %j, which mtools would write somewhere else',
    async (name) => {
      const etch = work.join('fat-name.etch');
      await writeEtch(etch, base, 'small.img', [{ header: { name: `inject/1/${name}` }, content: 'x' }]);
      const error = await applyEtch(createReadStream(etch), { output: work.join('fat-name.img') }).catch(
        (e: unknown) => e,
      );
      expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    },
  );

  it('refuses names ext4 cannot hold before debugfs sees them, so no script line can be split into a command', async () => {
    // A debugfs script line over 8 KiB would be cut and its tail run as a command (dump / write on the host).
    const smuggled = `${'a'.repeat(8183)}${'dump /evil /tmp/etch-apply-smuggled'.padEnd(8191 - 8183, ' ')}zzz/x`;
    for (const name of [`inject/6/${'n'.repeat(256)}`, `inject/6/${smuggled}`]) {
      const etch = work.join('long-name.etch');
      // `etch create` refuses such names now; a hostile writer does not, so the tar is made by hand.
      await writeFile(
        etch,
        Buffer.concat([
          etchPrelude(await readFile(base), 'small.img'),
          rawTarEntry({ name: 'inject/6/evil' }, Buffer.from('payload')),
          paxEntry({ path: name }),
          rawTarEntry({ name: 'inject/6/placeholder' }, Buffer.from('x')),
          tarEnd(),
        ]),
      );
      const error = await applyEtch(createReadStream(etch), { output: work.join('long-name.img') }).catch(
        (e: unknown) => e,
      );
      expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    }
    expect(await stat('/tmp/etch-apply-smuggled').catch(() => undefined)).toBeUndefined();
  });

  it('refuses the extended partition and partitions that do not exist', async () => {
    for (const partition of [4, 9]) {
      const etch = work.join(`p${partition}.etch`);
      await writeEtch(etch, base, 'small.img', [{ header: { name: `inject/${partition}/f` }, content: 'x' }]);
      const error = await applyEtch(createReadStream(etch), { output: work.join(`p${partition}.img`) }).catch(
        (e: unknown) => e,
      );
      expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE'), String(error)).toBe(true);
    }
  });

  it('unzips a zipped base image and refuses one whose CRC does not match', async () => {
    const zipped = work.join('zipped');
    await mkdir(zipped);
    await run('cp', [base, `${zipped}/disk.img`]);
    await writeFile(`${zipped}/README.txt`, 'not the image\n');
    await run('zip', ['-q', '-0', `${zipped}/os.zip`, 'disk.img', 'README.txt'], { cwd: zipped });
    const etch = work.join('zipped.etch');
    await writeEtch(etch, `${zipped}/os.zip`, 'os.zip', [{ header: { name: 'inject/6/hello.txt' }, content: 'hi\n' }]);
    const out = work.join('unzipped.img');
    const result = await applyEtch(createReadStream(etch), { output: out, verify: true });
    expect(result.baseImage).toEqual({ name: 'disk.img', size: (await stat(base)).size });
    const { fs, close } = await fsOf(out, 6);
    expect((await fs.readFile('/hello.txt'))?.toString()).toBe('hi\n');
    await close();

    // Flip one byte inside the stored image: sizes still match, only the CRC-32 can tell.
    const handle = await (await import('node:fs/promises')).open(`${zipped}/os.zip`, 'r+');
    await handle.write(Buffer.from([0x42]), 0, 1, 200_000);
    await handle.close();
    const corrupt = work.join('corrupt.etch');
    await writeEtch(corrupt, `${zipped}/os.zip`, 'os.zip', []);
    const error = await applyEtch(createReadStream(corrupt), { output: work.join('corrupt.img') }).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), String(error)).toBe(true);
    expect(String(error)).toMatch(/CRC-32/);
  });

  it('grows once, before injecting, by what a 1.1 requirements.json announces', async () => {
    const etch = work.join('announced.etch');
    const pack = tarPack();
    const done = pipeline(pack as unknown as Readable, createWriteStream(etch));
    const write = promisePacker(pack);
    await write({ name: 'VERSION', mtime: new Date(0) }, '1.1');
    await write({ name: 'small.img', size: (await stat(base)).size }, createReadStream(base));
    // 40 MiB announced; the entries themselves are tiny, so only the announcement can explain the growth.
    await write(
      { name: 'requirements.json', mtime: new Date(0) },
      JSON.stringify({ partitions: { '6': { bytes: 40 * 1024 * 1024, entries: 5000 } } }),
    );
    await write({ name: 'inject/6/hello.txt', mtime: MTIME }, 'hi\n');
    await whenPackerIdle(pack);
    pack.finalize();
    await done;
    const events: string[] = [];
    const out = work.join('announced.img');
    await applyEtch(createReadStream(etch), { output: out, onProgress: (e) => events.push(e.phase) });
    expect(events.filter((e) => e === 'grow')).toHaveLength(1);
    expect(events.indexOf('grow')).toBeLessThan(events.indexOf('inject'));
    const { fs, part, close } = await fsOf(out, 6);
    const info = await fs.info();
    expect((await fs.readFile('/hello.txt'))?.toString()).toBe('hi\n');
    await close();
    expect(info.freeBlocks * info.blockSize).toBeGreaterThan(40 * 1024 * 1024);
    expect(info.freeInodes).toBeGreaterThanOrEqual(5000);
    await run('e2fsck', ['-fn', `${out}?offset=${part.offset}`]);
  });

  it('grows the last partition of a GPT disk, moving the backup table to the new end', async () => {
    const gpt = work.join('gpt.img');
    await makeBalenaLikeImage(gpt, { dataMiB: 4, scheme: 'gpt' });
    const etch = work.join('gpt.etch');
    await writeEtch(etch, gpt, 'gpt.img', [
      { header: { name: 'inject/6/big.bin', size: 12 * 1024 * 1024 }, content: patternStream(12 * 1024 * 1024) },
    ]);
    const out = work.join('gpt-out.img');
    const result = await applyEtch(createReadStream(etch), { output: out, verify: true });
    expect(result.partitions[6]).toMatchObject({ grown: true });
    // sfdisk checks both GPT headers, their CRCs, and that the backup sits at the end of the disk.
    const check = await run('sfdisk', ['--verify', out], { allowFailure: true });
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout + check.stderr).not.toMatch(/backup|corrupt|mismatch/i);
    // The primary header names the backup's LBA: it must be the disk's last sector, and hold a GPT header.
    const disk = await (await import('node:fs/promises')).readFile(out);
    const lastLba = disk.length / 512 - 1;
    expect(Number(disk.readBigUInt64LE(512 + 32))).toBe(lastLba);
    expect(disk.subarray(lastLba * 512, lastLba * 512 + 8).toString('latin1')).toBe('EFI PART');
    const { fs, part, close } = await fsOf(out, 6);
    expect((await fs.stat('/big.bin'))?.size).toBe(12 * 1024 * 1024);
    await close();
    expect(part.offset + part.size).toBeLessThanOrEqual((await stat(out)).size - 33 * 512);
    await run('e2fsck', ['-fn', `${out}?offset=${part.offset}`]);
  });

  it('recounts the quota of an ext4 that keeps one, so e2fsck finds the usage of each owner consistent', async () => {
    const quota = work.join('quota.img');
    const offsets = await makeBalenaLikeImage(quota, { dataMiB: 8 });
    await run('tune2fs', ['-O', 'quota', `${quota}?offset=${offsets[6]}`]);
    const etch = work.join('quota.etch');
    await writeEtch(etch, quota, 'quota.img', [
      { header: { name: 'inject/6/app', type: 'directory', uid: 1000, gid: 1000, mode: 0o755 } },
      {
        header: { name: 'inject/6/app/data.bin', size: 300_000, uid: 1000, gid: 1000 },
        content: patternStream(300_000),
      },
      { header: { name: 'inject/6/root.txt' }, content: 'owned by root\n' },
    ]);
    const out = work.join('quota-out.img');
    await applyEtch(createReadStream(etch), { output: out, verify: true });
    // debugfs alone leaves "Usage inconsistent for ID …" and e2fsck exits 4.
    const fsck = await run('e2fsck', ['-fn', `${out}?offset=${offsets[6]}`], { allowFailure: true });
    expect(fsck.code, `e2fsck of the quota filesystem:\n${fsck.stdout}${fsck.stderr}`).toBe(0);
    const { fs, close } = await fsOf(out, 6);
    expect((await fs.stat('/app/data.bin'))?.uid, 'owner of /app/data.bin').toBe(1000);
    await close();
  });

  it('treats requirements.json as advice: an implausible or impossible announcement does not fail the apply', async () => {
    for (const [partition, bytes, entries] of [
      ['6', 2 ** 50, 10],
      ['5', 40 * 1024 * 1024, 10],
      // A plausible count, but on this 4 MiB ext4 the inodes alone mean a growth of ~122 GiB (minutes of resize2fs).
      ['6', 1024, 1_000_000],
    ] as const) {
      const etch = work.join('advice.etch');
      const pack = tarPack();
      const done = pipeline(pack as unknown as Readable, createWriteStream(etch));
      const write = promisePacker(pack);
      await write({ name: 'VERSION', mtime: new Date(0) }, '1.1');
      await write({ name: 'small.img', size: (await stat(base)).size }, createReadStream(base));
      await write(
        { name: 'requirements.json', mtime: new Date(0) },
        JSON.stringify({ partitions: { [partition]: { bytes, entries } } }),
      );
      await write({ name: `inject/${partition}/hello.txt`, mtime: MTIME }, 'hi\n');
      await whenPackerIdle(pack);
      pack.finalize();
      await done;
      const warnings: string[] = [];
      const out = work.join('advice.img');
      const logger = { debug() {}, info() {}, warn: (message: string) => warnings.push(message) };
      await applyEtch(createReadStream(etch), { output: out, logger });
      expect(warnings.join('\n')).toMatch(/requirements\.json/);
      // Partition 5 is not the last one and the huge numbers are not believed: the image keeps its size.
      expect((await stat(out)).size).toBe((await stat(base)).size);
    }
  });

  it('goes on writing when resize2fs refuses the growth requirements.json announces, and leaves the disk as it was', async () => {
    // A million entries on an 8 MiB ext4 means growing it to ~61 GiB, past what its resize inode can map:
    // resize2fs stops ("Illegal doubly indirect block"), while debugfs still writes the entries it has room for.
    const base8 = work.join('data8.img');
    await makeBalenaLikeImage(base8, { dataMiB: 8 });
    const etch = work.join('refused-growth.etch');
    const pack = tarPack();
    const done = pipeline(pack as unknown as Readable, createWriteStream(etch));
    const write = promisePacker(pack);
    await write({ name: 'VERSION', mtime: new Date(0) }, '1.1');
    await write({ name: 'small.img', size: (await stat(base8)).size }, createReadStream(base8));
    await write(
      { name: 'requirements.json', mtime: new Date(0) },
      JSON.stringify({ partitions: { '6': { bytes: 1024, entries: 1_000_000 } } }),
    );
    await write({ name: 'inject/6/hello.txt', mtime: MTIME }, 'hi\n');
    await whenPackerIdle(pack);
    pack.finalize();
    await done;
    const warnings: string[] = [];
    const logger = {
      debug() {},
      info() {},
      warn: (message: string, fields?: object) => warnings.push(`${message} ${JSON.stringify(fields)}`),
    };
    const out = work.join('refused-growth.img');
    const result = await applyEtch(createReadStream(etch), { output: out, logger, verify: true });
    expect(warnings.join('\n'), 'the warning names requirements.json and what refused').toMatch(
      /requirements\.json.*resize2fs could not grow partition 6/s,
    );
    // resize2fs's own advice is about its temporary copy, already removed: it must not reach the user.
    expect(warnings.join('\n'), 'the warning passes on advice about a removed file').not.toMatch(/e2fsck/);
    expect(result.verified).toBe(true);
    // Neither extended nor repartitioned: the table still ends the partition where the filesystem ends.
    expect((await stat(out)).size, 'image size').toBe((await stat(base8)).size);
    const before = await fsOf(base8, 6);
    await before.close();
    const { fs, part, close } = await fsOf(out, 6);
    expect(part.size, 'partition 6 size in the table').toBe(before.part.size);
    expect((await fs.readFile('/hello.txt'))?.toString()).toBe('hi\n');
    await close();
    await run('e2fsck', ['-fn', `${out}?offset=${part.offset}`]);
  });

  it('refuses a size smaller than the base image, raw before writing it and zipped once unzipped', async () => {
    const size = (await stat(base)).size;
    const raw = work.join('small-size.etch');
    await writeEtch(raw, base, 'small.img', []);
    const zipped = work.join('small-size-zip');
    await mkdir(zipped);
    await run('cp', [base, `${zipped}/disk.img`]);
    await run('zip', ['-q', '-0', `${zipped}/os.zip`, 'disk.img'], { cwd: zipped });
    const zip = work.join('small-size-zip.etch');
    await writeEtch(zip, `${zipped}/os.zip`, 'os.zip', []);
    for (const etch of [raw, zip]) {
      const out = work.join('too-small.img');
      const phases: string[] = [];
      const error = await applyEtch(createReadStream(etch), {
        output: out,
        size: size - 1024 * 1024,
        onProgress: (event) => phases.push(event.phase),
      }).catch((e: unknown) => e);
      expect(isEtchError(error, 'ETCH_USAGE'), `${etch}: ${String(error)}`).toBe(true);
      expect(String(error)).toMatch(/smaller than the base image/);
      if (etch === raw) expect(phases, 'nothing should be written for a raw base image').toEqual([]);
      expect(await stat(out).catch(() => undefined)).toBeUndefined();
    }
  });

  it('reports the final flush to disk as the last phase', async () => {
    const etch = work.join('sync.etch');
    await writeEtch(etch, base, 'small.img', [{ header: { name: 'inject/6/a.txt' }, content: 'a\n' }]);
    const phases: string[] = [];
    await applyEtch(createReadStream(etch), {
      output: work.join('sync.img'),
      onProgress: (event) => phases.push(event.phase),
    });
    expect(phases.at(-1)).toBe('sync');
    expect(phases.filter((p) => p === 'sync')).toHaveLength(1);
  });

  it('extends the image to --size and grows the last partition to fill it', async () => {
    const etch = work.join('sized.etch');
    await writeEtch(etch, base, 'small.img', []);
    const out = work.join('sized.img');
    const result = await applyEtch(createReadStream(etch), { output: out, size: 64 * 1024 * 1024, verify: true });
    expect((await stat(out)).size).toBe(64 * 1024 * 1024);
    expect(result.diskSize).toBe(64 * 1024 * 1024);
    const { fs, part, close } = await fsOf(out, 6);
    const info = await fs.info();
    await close();
    expect(part.offset + part.size).toBe(64 * 1024 * 1024);
    expect(info.blocks * info.blockSize).toBe(part.size);
    // resize2fs alone would have truncated the image file to the filesystem's size: fsck proves it did not.
    await run('e2fsck', ['-fn', `${out}?offset=${part.offset}`]);
  });

  it('gives a directory of 2,000 entries the hashed index the kernel would, and e2fsck finds it clean', async () => {
    const etch = work.join('large-dir.etch');
    const names = Array.from({ length: 2000 }, (_, i) => `entry-with-a-longish-name-${i}.txt`);
    await writeEtch(etch, base, 'small.img', [
      { header: { name: 'inject/6/large/', type: 'directory' } },
      ...names.map((name) => ({ header: { name: `inject/6/large/${name}` }, content: `${name}\n` })),
      { header: { name: 'inject/6/small/one.txt' }, content: 'one\n' },
    ]);
    const out = work.join('large-dir.img');
    await applyEtch(createReadStream(etch), { output: out });
    const { fs, part, close } = await fsOf(out, 6);
    try {
      expect((await fs.readFile('/large/entry-with-a-longish-name-1999.txt'))?.toString()).toBe(
        'entry-with-a-longish-name-1999.txt\n',
      );
    } finally {
      await close();
    }
    const device = `${out}?offset=${part.offset}`;
    const large = await run('debugfs', ['-R', 'htree /large', device], { allowFailure: true });
    expect(large.stdout + large.stderr, '/large has no hashed index').toMatch(/Root node dump/);
    expect(large.stdout).toContain('entry-with-a-longish-name-1999.txt');
    // A directory of one block keeps its plain list, as the kernel leaves it.
    const small = await run('debugfs', ['-R', 'htree /small', device], { allowFailure: true });
    expect(small.stdout + small.stderr).toMatch(/Not a hash-indexed directory/);
    const fsck = await run('e2fsck', ['-fn', device], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
  });

  it('keeps an image file sparse: the free space of the base image and of --size takes no disk', async () => {
    const etch = work.join('sparse.etch');
    await writeEtch(etch, base, 'small.img', [{ header: { name: 'inject/6/a.txt' }, content: 'a\n' }]);
    const out = work.join('sparse.img');
    const size = 512 * 1024 * 1024;
    await applyEtch(createReadStream(etch), { output: out, size, verify: true });
    const written = await stat(out);
    const baseSize = (await stat(base)).size;
    expect(written.size).toBe(size);
    // The base image (26 MiB) is mostly free space its filesystems never touched; mkfs, the growth and the
    // entry write about 5 MiB of metadata. Writing every byte of it would allocate at least the whole base,
    // and the growth writing its zeros back about 9 MiB.
    const allocated = written.blocks * 512;
    expect(allocated, `${allocated} bytes allocated for a ${baseSize}-byte base grown to ${size}`).toBeLessThan(
      baseSize / 4,
    );
  });

  it('copies the base image in place from a .etch file: byte for byte, sparse, verified, then its entries', async () => {
    const baseSize = (await stat(base)).size;
    const applyInPlace = async (etch: string, output: string) => {
      const file = await TarFile.open(etch);
      const bytes: number[] = [];
      try {
        const result = await applyEtch(file, {
          output,
          verify: true,
          onProgress: (e) => (e.phase === 'base-image' ? bytes.push(e.bytes) : undefined),
        });
        expect(result.verified, `${output} verified`).toBe(true);
      } finally {
        await file.close();
      }
      expect(file.bytesRead, `bytes read of ${etch}`).toBeLessThan((await stat(etch)).size + 1024 * 1024);
      expect(bytes.at(-1), 'last base-image progress').toBe(baseSize);
      expect(bytes.length, 'base-image progress events').toBeGreaterThan(1);
    };
    // Nothing injected: the disk is the base image, every byte of it.
    const bare = work.join('in-place-bare.etch');
    await writeEtch(bare, base, 'small.img', []);
    const copy = work.join('in-place-bare.img');
    await applyInPlace(bare, copy);
    const same = await run('cmp', [base, copy], { allowFailure: true });
    expect(same.code, `the in-place copy differs from the base image: ${same.stdout}${same.stderr}`).toBe(0);
    const allocated = (await stat(copy)).blocks * 512;
    expect(allocated, `${allocated} bytes allocated for a ${baseSize}-byte base`).toBeLessThan(baseSize / 2);
    // With an entry after the image: read from where the image ends, written into partition 6, and everything
    // before that partition is still the base (debugfs stamps the time it ran inside the partition itself).
    const etch = work.join('in-place.etch');
    await writeEtch(etch, base, 'small.img', [{ header: { name: 'inject/6/a.txt' }, content: 'a\n' }]);
    const inPlace = work.join('in-place.img');
    await applyInPlace(etch, inPlace);
    const before = String(offsets[6]);
    const prefix = await run('cmp', ['-n', before, base, inPlace], { allowFailure: true });
    expect(prefix.code, `the first ${before} bytes differ from the base image: ${prefix.stdout}${prefix.stderr}`).toBe(
      0,
    );
    const { fs, close } = await fsOf(inPlace, 6);
    try {
      expect((await fs.readFile('/a.txt'))?.toString(), '/a.txt of partition 6').toBe('a\n');
    } finally {
      await close();
    }
  });

  it('refuses a .etch file cut inside its base image, read in place, and leaves no image', async () => {
    const etch = work.join('cut.etch');
    await writeEtch(etch, base, 'small.img', [{ header: { name: 'inject/6/a.txt' }, content: 'a\n' }]);
    await truncate(etch, 5 * 1024 * 1024);
    const file = await TarFile.open(etch);
    const out = work.join('cut.img');
    const error = await applyEtch(file, { output: out })
      .catch((e: unknown) => e)
      .finally(() => file.close());
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), String(error)).toBe(true);
    expect(existsSync(out), 'image left behind').toBe(false);
    expect(
      (await readdir(work.path)).filter((name) => name.includes('cut.img')),
      'partial files',
    ).toEqual([]);
  });
});

/** What debugfs says of an inode, for comparing two ways of writing the same entries: no inode numbers or ctimes. */
async function inodeFacts(device: string, path: string): Promise<Record<string, string>> {
  const { stdout } = await run('debugfs', ['-R', `stat "${path}"`, device]);
  const field = (pattern: RegExp) => pattern.exec(stdout)?.[1] ?? '';
  const type = field(/Type: (\S+)/);
  const xattrs = /Extended attributes:\n((?: {2}.*\n)*)/.exec(stdout)?.[1] ?? '';
  return {
    type,
    mode: field(/Mode: +(\d+)/),
    owner: field(/(User: +\d+ +Group: +\d+)/),
    // A directory's size is how the tool laid out its blocks.
    size: type === 'directory' ? '' : field(/Size: (\d+)/),
    links: field(/Links: (\d+)/),
    mtime: field(/ mtime: (0x[0-9a-f]+(?::[0-9a-f]+)?)/),
    atime: field(/ atime: (0x[0-9a-f]+(?::[0-9a-f]+)?)/),
    device: field(/Device major\/minor number: (\S+)/),
    xattrs: xattrs.split('\n').sort().join('\n'),
    target: field(/Fast link dest: "(.*)"/),
  };
}

/** Mounts under `dir` still present (each test stages in its own folder): a failed or aborted apply must leave none. */
async function mountsUnder(dir: string): Promise<string[]> {
  const table = await readFile('/proc/self/mountinfo', 'utf8');
  return table.split('\n').filter((line) => line.split(' ')[4]?.startsWith(dir));
}

describe('applyEtch through a loop mount (mount: true, root)', () => {
  const NS_TIME = { mtime: MTIME, mtimeNanoseconds: 123_456_789 };
  let base: string;
  let outside: string;
  // A function: the content streams are read once.
  const entries = (): { header: EntryHeader; content?: EntryContent }[] => [
    { header: { name: 'inject/6/', type: 'directory', mode: 0o755, ...NS_TIME } },
    { header: { name: 'inject/6/merge/', type: 'directory', mode: 0o750, uid: 7, gid: 8, ...NS_TIME } },
    { header: { name: 'inject/6/merge/new.txt', ...NS_TIME }, content: 'new\n' },
    { header: { name: 'inject/6/docker/keep.txt', mode: 0o600 }, content: 'replaced\n' },
    { header: { name: 'inject/6/app/', type: 'directory', mode: 0o700, uid: 3, gid: 4 } },
    { header: { name: 'inject/6/app/suid', mode: 0o4755, uid: 1000, gid: 1000, ...NS_TIME }, content: '#!/bin/sh\n' },
    { header: { name: 'inject/6/app/hard', type: 'link', linkname: 'inject/6/app/suid' } },
    { header: { name: 'inject/6/app/rel', type: 'symlink', linkname: '../docker/keep.txt', uid: 9 } },
    { header: { name: 'inject/6/app/abs', type: 'symlink', linkname: '/etc/passwd' } },
    { header: { name: 'inject/6/app/whiteout', type: 'character-device', devmajor: 0, devminor: 0, mode: 0 } },
    { header: { name: 'inject/6/app/disk', type: 'block-device', devmajor: 8, devminor: 1, mode: 0o660 } },
    { header: { name: 'inject/6/app/fifo', type: 'fifo', mode: 0o600, uid: 5 } },
    { header: { name: 'inject/6/app/opaque/', type: 'directory', xattrs: { 'trusted.overlay.opaque': 'y' } } },
    {
      header: { name: 'inject/6/app/cap', mode: 0o755, xattrs: { 'security.capability': CAPABILITY } },
      content: 'cap\n',
    },
    { header: { name: 'inject/6/app/naïve 名前.txt', uid: 65_536 }, content: 'unicode\n' },
    { header: { name: 'inject/6/big.bin', size: BIG }, content: patternStream(BIG) },
    // What bsdtar or the kernel would drop or change, written after the unmount as debugfs writes it.
    { header: { name: 'inject/6/odd/acl', xattrs: { 'system.posix_acl_access': ACL } }, content: 'acl\n' },
    { header: { name: 'inject/6/odd/acl-dir/', type: 'directory', xattrs: { 'system.posix_acl_default': ACL } } },
    { header: { name: 'inject/6/odd/linked', type: 'link', linkname: 'inject/6/app/cap', xattrs: { 'user.k': 'v' } } },
    { header: { name: 'inject/6/odd/nobody', uid: 0xffffffff, gid: 0xffffffff, mode: 0o4755 }, content: 'x\n' },
    { header: { name: 'inject/6/odd/1969', mtime: new Date(-86_400_000), mtimeNanoseconds: 5 }, content: 'old\n' },
    { header: { name: 'inject/6/odd/link-xattr', type: 'symlink', linkname: 'acl', xattrs: { 'user.k': 'v' } } },
    // Directories bsdtar meets again: made for an entry below before their own entry, or named twice.
    { header: { name: 'inject/6/late/first.txt' }, content: '1\n' },
    { header: { name: 'inject/6/late/', type: 'directory', mode: 0o750, ...NS_TIME } },
    { header: { name: 'inject/6/late/second.txt' }, content: '2\n' },
    { header: { name: 'inject/6/twice/', type: 'directory', mtime: new Date(1_500_000_000_000) } },
    { header: { name: 'inject/6/twice/a.txt' }, content: 'a\n' },
    { header: { name: 'inject/6/twice/', type: 'directory', ...NS_TIME } },
    { header: { name: 'inject/6/twice/b.txt' }, content: 'b\n' },
  ];
  const compared = [
    '/',
    '/merge',
    '/merge/new.txt',
    '/merge/old.txt',
    '/docker/keep.txt',
    '/app',
    '/app/suid',
    '/app/hard',
    '/app/rel',
    '/app/abs',
    '/app/whiteout',
    '/app/disk',
    '/app/fifo',
    '/app/opaque',
    '/app/cap',
    '/app/naïve 名前.txt',
    '/big.bin',
    '/odd/acl',
    '/odd/acl-dir',
    '/odd/linked',
    '/app/cap',
    '/odd/nobody',
    '/odd/1969',
    '/odd/link-xattr',
    '/late',
    '/twice',
  ];

  /** A 1.2 .etch (devices and FIFOs): requirements.json announces what partition 6 needs, which --mount makes room for first. */
  async function writeAnnounced(
    path: string,
    image: string,
    list: ReturnType<typeof entries>,
    announce = true,
    announcedBytes = BIG + 1024 * 1024,
  ): Promise<void> {
    const pack = tarPack();
    const done = pipeline(pack as unknown as Readable, createWriteStream(path));
    const write = promisePacker(pack);
    await write({ name: 'VERSION', mtime: new Date(0) }, announce ? '1.2' : '1.0');
    await write({ name: 'base.img', size: (await stat(image)).size }, createReadStream(image));
    if (announce)
      await write(
        { name: 'requirements.json', mtime: new Date(0) },
        JSON.stringify({ partitions: { '6': { bytes: announcedBytes, entries: list.length } } }),
      );
    for (const { header, content } of list) await write({ mtime: MTIME, ...header }, content);
    await whenPackerIdle(pack);
    pack.finalize();
    await done;
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('These tests mount a loop device: run them as root.');
    const data = work.join('mount-os-data');
    outside = work.join('outside');
    await mkdir(outside);
    await mkdir(`${data}/docker/volumes`, { recursive: true });
    await writeFile(`${data}/docker/keep.txt`, 'from the OS\n');
    await mkdir(`${data}/merge`);
    await writeFile(`${data}/merge/old.txt`, 'old\n');
    // A base image whose data partition points out of itself: a mounted path would lead onto the host.
    await run('ln', ['-s', outside, `${data}/escape`]);
    base = work.join('mount-base.img');
    await makeBalenaLikeImage(base, { dataMiB: 8, dataContent: data });
  });

  it('writes every entry type exactly as the debugfs path does, and e2fsck finds it clean', async () => {
    const etch = work.join('mount.etch');
    await writeAnnounced(etch, base, entries());
    const viaMount = work.join('via-mount.img');
    const viaDebugfs = work.join('via-debugfs.img');
    const mounted = await applyEtch(createReadStream(etch), {
      output: viaMount,
      mount: true,
      tempDir: work.path,
      verify: true,
    });
    await applyEtch(createReadStream(etch), { output: viaDebugfs });
    expect(mounted.verified).toBe(true);
    expect(mounted.partitions[6]?.entries).toBe(entries().length);
    const [a, b] = await Promise.all([fsOf(viaMount, 6), fsOf(viaDebugfs, 6)]);
    try {
      for (const path of compared) {
        const [got, want] = await Promise.all([
          inodeFacts(`${viaMount}?offset=${a.part.offset}`, path),
          inodeFacts(`${viaDebugfs}?offset=${b.part.offset}`, path),
        ]);
        expect(got.type, `${path}: debugfs stat found it`).not.toBe('');
        expect(got, `${path}: written through the mount vs with debugfs`).toEqual(want);
      }
      for (const path of ['/app/naïve 名前.txt', '/docker/keep.txt', '/merge/old.txt'])
        expect((await a.fs.readFile(path))?.toString(), path).toBe((await b.fs.readFile(path))?.toString());
      expect((await collect(a.fs.readFileStream('/big.bin'))).equals(await collect(patternStream(BIG)))).toBe(true);
      expect(await a.fs.stat('/app/naïve 名前.txt')).toMatchObject({ uid: 65_536 });
      const fsck = await run('e2fsck', ['-fn', `${viaMount}?offset=${a.part.offset}`], { allowFailure: true });
      expect(fsck.code, `e2fsck of the partition written through the mount:\n${fsck.stdout}${fsck.stderr}`).toBe(0);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    expect(await mountsUnder(work.path), 'mounts left behind').toEqual([]);
  });

  it.each([
    ['a symlink of the base image', [{ header: { name: 'inject/6/escape/planted.txt' }, content: 'on the host\n' }]],
    [
      'a hardlink to a symlink of the base image',
      [
        { header: { name: 'inject/6/alias', type: 'link', linkname: 'inject/6/escape' } },
        { header: { name: 'inject/6/alias/planted.txt' }, content: 'on the host\n' },
      ],
    ],
    [
      'a symlink the .etch made',
      [
        { header: { name: 'inject/6/made', type: 'symlink', linkname: '/tmp' } },
        { header: { name: 'inject/6/made/planted.txt' }, content: 'on the host\n' },
      ],
    ],
  ] as const)('refuses an entry through %s, writes nothing on the host and leaves no mount', async (_, middle) => {
    const etch = work.join('mount-escape.etch');
    const dir = await mkdtemp(work.join('out-escape-'));
    await writeAnnounced(etch, base, [
      { header: { name: 'inject/6/first.txt' }, content: 'first\n' },
      ...middle,
      { header: { name: 'inject/6/last.txt' }, content: 'last\n' },
    ]);
    const error = await applyEtch(createReadStream(etch), {
      output: `${dir}/out.img`,
      mount: true,
      tempDir: work.path,
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_UNSAFE_PATH') || isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    expect(String(error)).toMatch(/planted\.txt/);
    expect(await readdir(outside), 'files written through the symlink, on the host').toEqual([]);
    expect(existsSync('/tmp/planted.txt'), '/tmp/planted.txt on the host').toBe(false);
    expect(await readdir(dir), 'image left behind').toEqual([]);
    expect(await mountsUnder(work.path), 'mounts left behind').toEqual([]);
  });

  it.each([
    ['the .etch', [{ header: { name: 'inject/6/d/', type: 'directory' } }], 'inject/6/d'],
    ['the base image', [], 'inject/6/merge'],
    // The .etch names the base image's /docker; its empty /docker/volumes must not be taken for new.
    [
      'the base image, in a directory the .etch names',
      [{ header: { name: 'inject/6/docker/', type: 'directory' } }],
      'inject/6/docker/volumes',
    ],
  ] as const)('refuses a file over a directory of %s, as the debugfs path does', async (_, first, target) => {
    const etch = work.join('mount-over-dir.etch');
    await writeAnnounced(etch, base, [...first, { header: { name: target }, content: 'not a directory\n' }]);
    for (const mount of [true, false]) {
      const error = await applyEtch(createReadStream(etch), {
        output: work.join('over-dir.img'),
        mount,
        tempDir: work.path,
      }).catch((e: unknown) => e);
      expect(isEtchError(error, 'ETCH_BAD_ENTRY'), `mount: ${mount}: ${String(error)}`).toBe(true);
      expect(String(error)).toMatch(/is a directory/);
    }
    expect(await mountsUnder(work.path), 'mounts left behind').toEqual([]);
  });

  it('fails with ETCH_BAD_DISK_IMAGE when the announced sizes were too small, and leaves no image or mount', async () => {
    const etch = work.join('mount-full.etch');
    // 1 KiB announced, 24 MiB delivered into an 8 MiB partition: nothing grows while it is mounted.
    await writeAnnounced(
      etch,
      base,
      [{ header: { name: 'inject/6/big.bin', size: BIG }, content: patternStream(BIG) }],
      true,
      1024,
    );
    const dir = await mkdtemp(work.join('out-full-'));
    const error = await applyEtch(createReadStream(etch), {
      output: `${dir}/out.img`,
      mount: true,
      tempDir: work.path,
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE'), String(error)).toBe(true);
    expect(String(error)).toMatch(/without --mount/);
    expect(await readdir(dir), 'image left behind').toEqual([]);
    expect(await mountsUnder(work.path), 'mounts left behind').toEqual([]);
  });

  it('writes a partition without announced sizes with debugfs, and says so', async () => {
    const etch = work.join('mount-unannounced.etch');
    await writeAnnounced(etch, base, entries().slice(0, 3), false);
    const warnings: string[] = [];
    const logger = { debug() {}, info() {}, warn: (message: string) => warnings.push(message) };
    const out = work.join('unannounced.img');
    await applyEtch(createReadStream(etch), { output: out, mount: true, tempDir: work.path, logger });
    expect(warnings.join('\n')).toMatch(/--mount needs the sizes requirements\.json announces/);
    const { fs, close } = await fsOf(out, 6);
    expect((await fs.readFile('/merge/new.txt'))?.toString()).toBe('new\n');
    await close();
  });

  it('stops on abort while entries stream into the mount: ETCH_ABORTED, no image, no mount', async () => {
    const etch = work.join('mount-abort.etch');
    await writeAnnounced(etch, base, entries());
    const dir = work.join('out-abort');
    await mkdir(dir);
    const controller = new AbortController();
    const error = await applyEtch(createReadStream(etch), {
      output: `${dir}/out.img`,
      mount: true,
      tempDir: work.path,
      signal: controller.signal,
      onProgress: (event) => {
        if (event.phase === 'inject' && event.entries === 3) controller.abort();
      },
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED'), String(error)).toBe(true);
    expect(await readdir(dir), 'image left behind').toEqual([]);
    expect(await mountsUnder(work.path), 'mounts left behind').toEqual([]);
  });
});
