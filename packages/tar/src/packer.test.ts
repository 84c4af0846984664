import { createReadStream } from 'node:fs';
import { lstat, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { collect, createTempDir, patternStream, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { isEtchError } from '@etch/format';
import { promisePacker } from './packer.js';
import { createTarPack } from './pack.js';
import { extractTar } from './extract.js';

let dir: TempDir | undefined;
afterEach(async () => {
  await dir?.remove();
  dir = undefined;
});

async function packToBuffer(
  write: (w: ReturnType<typeof promisePacker>) => Promise<void>,
  prefix?: string,
): Promise<Buffer> {
  const pack = createTarPack();
  const out = collect(pack);
  await write(promisePacker(pack, prefix));
  pack.finalize();
  return out;
}

const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex');

describe('promisePacker', () => {
  it('writes entries GNU tar lists and extracts with names, links, modes, owners and xattrs intact', async () => {
    dir = await createTempDir();
    const longName = `${'deep/'.repeat(40)}file-with-a-long-name.txt`;
    const tarball = await packToBuffer(async (write) => {
      await write({ name: 'dir', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 });
      await write(
        { name: 'dir/hello.txt', mode: 0o4755, uid: 1000, gid: 1000, mtime: new Date('2020-01-02T03:04:05Z') },
        'hello\n',
      );
      await write({ name: 'dir/hard', type: 'link', linkname: 'dir/hello.txt' });
      await write({ name: 'dir/abs-link', type: 'symlink', linkname: '/usr/bin/env' });
      await write({ name: 'dir/rel-link', type: 'symlink', linkname: '../dir/hello.txt' });
      await write({ name: longName }, 'long');
      await write({ name: 'dir/ünïcödé-名前.txt' }, 'unicode');
      await write({ name: 'dir/big-uid', uid: 3_000_000, gid: 2_500_000 }, 'x');
      await write({ name: 'dir/cap', xattrs: { 'security.capability': capability, 'user.note': 'v1' } }, 'bin');
      await write({ name: 'dir/opaque', type: 'directory', xattrs: { 'trusted.overlay.opaque': 'y' } });
      await write({ name: 'dir/.wh-device', type: 'character-device', mode: 0, devmajor: 0, devminor: 0 });
      await write({ name: 'dir/shadow', mode: 0 }, 'secret');
    }, 'inject/6');
    const file = dir.join('out.tar');
    await writeFile(file, tarball);

    const listing = (await run('tar', ['-tvf', file])).stdout;
    expect(listing).toContain('inject/6/dir/hello.txt');
    expect(listing).toContain('inject/6/dir/hard link to inject/6/dir/hello.txt');
    expect(listing).toContain('inject/6/dir/abs-link -> /usr/bin/env');
    expect(listing).toContain(`inject/6/${longName}`);
    expect(listing).toContain('inject/6/dir/ünïcödé-名前.txt');

    const out = dir.join('x');
    await run('mkdir', [out]);
    await run('tar', ['-x', '--xattrs', '--xattrs-include=*', '--same-owner', '-p', '-f', file, '-C', out]);
    const root = `${out}/inject/6`;
    const hello = await stat(`${root}/dir/hello.txt`);
    expect(hello.mode & 0o7777).toBe(0o4755);
    expect([hello.uid, hello.gid]).toEqual([1000, 1000]);
    expect(hello.mtime.toISOString()).toBe('2020-01-02T03:04:05.000Z');
    expect(hello.nlink).toBe(2);
    expect((await stat(`${root}/dir/hard`)).ino).toBe(hello.ino);
    expect(await readlink(`${root}/dir/abs-link`)).toBe('/usr/bin/env');
    expect(await readlink(`${root}/dir/rel-link`)).toBe('../dir/hello.txt');
    expect(await readFile(`${root}/${longName}`, 'utf8')).toBe('long');
    expect(await readFile(`${root}/dir/ünïcödé-名前.txt`, 'utf8')).toBe('unicode');
    const big = await stat(`${root}/dir/big-uid`);
    expect([big.uid, big.gid]).toEqual([3_000_000, 2_500_000]);
    const caps = (await run('getfattr', ['-e', 'hex', '-n', 'security.capability', `${root}/dir/cap`])).stdout;
    expect(caps).toContain(`0x${capability.toString('hex')}`);
    expect(
      (await run('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', `${root}/dir/opaque`])).stdout,
    ).toBe('y');
    const device = await lstat(`${root}/dir/.wh-device`);
    expect(device.isCharacterDevice()).toBe(true);
    expect(device.rdev).toBe(0);
    expect(device.mode & 0o7777).toBe(0);
    expect((await stat(`${root}/dir/shadow`)).mode & 0o7777).toBe(0);
  });

  it('reads back binary xattrs exactly with our own reader', async () => {
    const tarball = await packToBuffer(async (write) => {
      await write({ name: 'cap', xattrs: { 'security.capability': capability } }, 'bin');
    });
    const entries = [];
    for await (const { header, body } of extractTar(Readable.from([tarball]))) {
      entries.push({ name: header.name, xattrs: header.xattrs, content: (await collect(body)).toString() });
    }
    expect(entries).toEqual([{ name: 'cap', xattrs: new Map([['security.capability', capability]]), content: 'bin' }]);
  });

  it('keeps PAX records but never lets pax path/linkpath/size override the written name', async () => {
    const tarball = await packToBuffer(async (write) => {
      await write(
        { name: 'renamed', pax: { path: 'evil/../../etc/passwd', linkpath: 'x', size: '999', comment: 'kept' } },
        'ok',
      );
    }, 'inject/1');
    const entries = [];
    for await (const e of extractTar(Readable.from([tarball]))) entries.push(e.header);
    const [entry] = entries;
    expect(entry?.name).toBe('inject/1/renamed');
    expect(entry?.size).toBe(2);
    expect(entry?.pax.get('comment')?.toString()).toBe('kept');
  });

  it('rejects a short stream with ETCH_SIZE_MISMATCH and destroys the pack', async () => {
    const pack = createTarPack();
    pack.resume();
    pack.on('error', () => {});
    const write = promisePacker(pack);
    const error = await write({ name: 'short', size: 10 }, Readable.from([Buffer.from('12345')])).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, 'ETCH_SIZE_MISMATCH')).toBe(true);
    expect(pack.destroying).toBe(true);
  });

  it('rejects a long stream with ETCH_SIZE_MISMATCH', async () => {
    const pack = createTarPack();
    pack.resume();
    pack.on('error', () => {});
    const error = await promisePacker(pack)({ name: 'long', size: 3 }, Readable.from([Buffer.from('12345')])).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, 'ETCH_SIZE_MISMATCH')).toBe(true);
    expect(pack.destroying).toBe(true);
  });

  it.each([
    ['a small file in many chunks', 64 * 1024, 1000],
    ['a file just over the small-entry size', 64 * 1024 + 1, 4096],
    ['a small file in one chunk', 5000, 5000],
  ])('writes %s byte for byte (%i bytes, chunks of %i)', async (_what, size, chunkSize) => {
    const data = Buffer.alloc(size, 0);
    for (let i = 0; i < size; i++) data[i] = (i * 7) % 251;
    const chunks: Buffer[] = [];
    for (let at = 0; at < size; at += chunkSize) chunks.push(data.subarray(at, at + chunkSize));
    const tarball = await packToBuffer((write) => write({ name: 'f', size }, Readable.from(chunks)));
    const read: Buffer[] = [];
    for await (const { body } of extractTar(Readable.from([tarball])))
      for await (const chunk of body as AsyncIterable<Buffer>) read.push(chunk);
    const back = Buffer.concat(read);
    expect(back.length, 'bytes read back').toBe(size);
    expect(back.equals(data), 'content read back equals what was written').toBe(true);
  });

  it('writes an empty streamed file, and rejects a stream declared empty that carries bytes', async () => {
    const tarball = await packToBuffer((write) => write({ name: 'empty', size: 0 }, Readable.from([])));
    const entries: [string, number][] = [];
    for await (const { header } of extractTar(Readable.from([tarball]))) entries.push([header.name, header.size]);
    expect(entries, 'entries read back').toEqual([['empty', 0]]);

    const broken = createTarPack();
    broken.resume();
    broken.on('error', () => {});
    const error = await promisePacker(broken)({ name: 'not-empty', size: 0 }, Readable.from([Buffer.from('x')])).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, 'ETCH_SIZE_MISMATCH'), String(error)).toBe(true);
    expect(broken.destroying, 'pack destroyed after the mismatch').toBe(true);
  });

  it.each([
    [{ name: 'a', mode: 0o10000 }, 'mode'],
    [{ name: 'a', mode: 1.5 }, 'mode'],
    [{ name: 'a', uid: -1 }, 'uid'],
    [{ name: 'a', type: 'symlink' as const }, 'target'],
    [{ name: 'a', type: 'link' as const, linkname: '../../x' }, '..'],
    [{ name: '../a' }, '..'],
    [{ name: '/etc/a' }, 'absolute'],
  ])('refuses an invalid header %j', async (header, word) => {
    const pack = createTarPack();
    pack.resume();
    pack.on('error', () => {});
    const error = await promisePacker(pack)(header, '').catch((e: unknown) => e);
    expect(isEtchError(error)).toBe(true);
    expect((error as Error).message).toContain(word);
  });

  it('serialises entries written without awaiting each one', async () => {
    const tarball = await packToBuffer(async (write) => {
      await Promise.all([
        write({ name: 'a', size: 200_000 }, patternStream(200_000, 1000, 1)),
        write({ name: 'b' }, 'bee'),
        write({ name: 'c', size: 150_000 }, patternStream(150_000, 777, 2)),
      ]);
    });
    const seen: [string, number][] = [];
    for await (const { header, body } of extractTar(Readable.from([tarball])))
      seen.push([header.name, (await collect(body)).length]);
    expect(seen).toEqual([
      ['a', 200_000],
      ['b', 3],
      ['c', 150_000],
    ]);
  });

  it('respects backpressure: a paused consumer stops the producer', async () => {
    const pack = createTarPack();
    const write = promisePacker(pack);
    let produced = 0;
    const source = patternStream(64 * 1024 * 1024);
    source.on('data', (chunk: Buffer) => {
      produced += chunk.length;
    });
    source.pause();
    const done = write({ name: 'big', size: 64 * 1024 * 1024 }, source);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Nobody reads the pack: only a few buffers' worth may have been pulled from the source.
    expect(produced).toBeLessThan(2 * 1024 * 1024);
    let consumed = 0;
    pack.on('data', (chunk: unknown) => {
      consumed += (chunk as Buffer).length;
    });
    await done;
    pack.finalize();
    await new Promise<void>((resolve) => pack.on('end', () => resolve()));
    expect(consumed).toBeGreaterThan(64 * 1024 * 1024);
  });

  it('aborts cleanly: rejects with ETCH_ABORTED and the process survives', async () => {
    const controller = new AbortController();
    const pack = createTarPack();
    const sink = createWriteStream('/dev/null');
    const piping = pipeline(pack, sink).catch((e: unknown) => e);
    const write = promisePacker(pack, undefined, { signal: controller.signal });
    // Aborted mid-entry, after its first MiB, however fast the machine.
    const source = (async function* () {
      let sent = 0;
      for await (const chunk of patternStream(512 * 1024 * 1024)) {
        yield chunk as Buffer;
        sent += (chunk as Buffer).length;
        if (sent >= 1024 * 1024 && !controller.signal.aborted) controller.abort();
      }
    })();
    const pending = write({ name: 'big', size: 512 * 1024 * 1024 }, Readable.from(source));
    const error = await pending.catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED')).toBe(true);
    expect(await piping).toBeDefined();
    const next = await write({ name: 'after' }, 'x').catch((e: unknown) => e);
    expect(isEtchError(next)).toBe(true);
  });

  it('streams a file from disk', async () => {
    dir = await createTempDir();
    const path = dir.join('f.bin');
    await pipeline(patternStream(3_000_000, 65536, 7), createWriteStream(path));
    const tarball = await packToBuffer(async (write) => {
      await write({ name: 'f.bin', size: (await stat(path)).size }, createReadStream(path));
    });
    for await (const { body } of extractTar(Readable.from([tarball]))) {
      expect((await collect(body)).equals(await readFile(path))).toBe(true);
    }
  });
});

describe('promisePacker writes only inject entries a flasher can write', () => {
  it.each([
    ['a path longer than 4095 bytes', { name: `${'d/'.repeat(2500)}f` }],
    ['a name longer than 255 bytes', { name: `${'n'.repeat(256)}` }],
    ['a newline in a name', { name: 'etc/evil\nname' }],
    ['a newline in a symlink target', { name: 'l', type: 'symlink' as const, linkname: 'a\nb' }],
    ['an xattr outside the Linux namespaces', { name: 'x', xattrs: { '-n': 'v' } }],
    ['an mtime beyond what ext4 stores', { name: 'late', mtime: new Date(2 ** 35 * 1000) }],
  ])('refuses %s under inject/ with ETCH_BAD_ENTRY', async (_label, header) => {
    const pack = createTarPack();
    pack.resume();
    const write = promisePacker(pack, 'inject/6');
    const error = await write(header, 'type' in header ? undefined : '').catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    pack.destroy();
  });

  it('leaves archives outside inject/ alone (a layer may hold any name)', async () => {
    const tarball = await packToBuffer(async (write) => {
      await write({ name: 'etc/odd\nname' }, 'x');
    });
    const names = [];
    for await (const { header, body } of extractTar(Readable.from([tarball]))) {
      names.push(header.name);
      body.resume();
    }
    expect(names).toEqual(['etc/odd\nname']);
  });
});
