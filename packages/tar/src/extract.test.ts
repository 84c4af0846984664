import { mkdir, symlink, writeFile, link } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, craftTar, createTempDir, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { isEtchError } from '@etch/format';
import { MAX_BYTES_READ, extractTar, type TarHeader } from './extract.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir();
  const src = dir.join('src');
  await mkdir(`${src}/sub/${'n'.repeat(120)}`, { recursive: true });
  await writeFile(`${src}/sub/file.txt`, 'content');
  await writeFile(`${src}/sub/${'n'.repeat(120)}/${'long'.repeat(40)}.txt`, 'deep');
  await link(`${src}/sub/file.txt`, `${src}/sub/hard.txt`);
  await symlink('/target/that/is/absolute', `${src}/sub/abs`);
  await writeFile(`${src}/caps`, 'x');
  await run('setfattr', [
    '-n',
    'security.capability',
    '-v',
    '0x0100000200200000000000000000000000000000',
    `${src}/caps`,
  ]);
  await run('setfattr', ['-n', 'user.note', '-v', 'hello', `${src}/caps`]);
});
afterAll(() => dir.remove());

async function entriesOf(path: string): Promise<{ header: TarHeader; content: Buffer }[]> {
  const result = [];
  for await (const { header, body } of extractTar(createReadStream(path)))
    result.push({ header, content: await collect(body) });
  return result;
}

describe('extractTar reads what GNU tar writes', () => {
  it.each(['gnu', 'pax', 'ustar'])('--format=%s', async (format) => {
    const archive = dir.join(`${format}.tar`);
    const args = ['-c', `--format=${format}`, '-f', archive, '-C', dir.join('src'), '.'];
    if (format === 'pax') args.splice(1, 0, '--xattrs', '--xattrs-include=*');
    const result = await run('tar', args, { allowFailure: true });
    if (format === 'ustar') {
      // ustar cannot hold the 120+160 byte path; GNU tar says so and skips it, which is what we expect.
      expect(result.stderr).toContain('name is too long');
    } else {
      expect(result.code).toBe(0);
    }
    const entries = await entriesOf(archive);
    const byName = new Map(entries.map((e) => [e.header.name, e]));
    expect(byName.get('./sub/file.txt')?.content.toString()).toBe('content');
    expect(byName.get('./sub/hard.txt')?.header).toMatchObject({ type: 'link', linkname: './sub/file.txt', size: 0 });
    expect(byName.get('./sub/abs')?.header).toMatchObject({ type: 'symlink', linkname: '/target/that/is/absolute' });
    expect(byName.get('./sub/')?.header.type).toBe('directory');
    if (format !== 'ustar') {
      expect(byName.get(`./sub/${'n'.repeat(120)}/${'long'.repeat(40)}.txt`)?.content.toString()).toBe('deep');
    }
    if (format === 'pax') {
      const caps = byName.get('./caps')?.header.xattrs;
      expect(caps?.get('security.capability')?.toString('hex')).toBe('0100000200200000000000000000000000000000');
      expect(caps?.get('user.note')?.toString()).toBe('hello');
    }
  });
});

describe('extractTar reads times before 1970', () => {
  it("takes GNU tar's base-256 mtime of a file from the day before the epoch", async () => {
    const folder = dir.join('old-times');
    await mkdir(folder);
    await writeFile(`${folder}/old`, 'x');
    await run('touch', ['-d', '@-86400', `${folder}/old`]);
    const archive = dir.join('old-times.tar');
    await run('tar', ['-c', '--format=gnu', '-f', archive, '-C', folder, 'old']);
    const [entry] = await entriesOf(archive);
    expect(entry?.header.mtime.toISOString(), 'mtime of old').toBe('1969-12-31T00:00:00.000Z');
  });
});

describe('extractTar raw mode', () => {
  it('gives back every byte: raw headers + data + trailer rebuild the input exactly', async () => {
    const archive = dir.join('rebuild.tar');
    await run('tar', [
      '-c',
      '--format=pax',
      '--xattrs',
      '--xattrs-include=*',
      '-f',
      archive,
      '-C',
      dir.join('src'),
      '.',
    ]);
    const original = await collect(createReadStream(archive));
    const parts: Buffer[] = [];
    const pieces: Buffer[] = [];
    for await (const { raw, body } of extractTar(createReadStream(archive), {
      raw: true,
      onTrailer: (b) => pieces.push(b),
    })) {
      parts.push(raw as Buffer, await collect(body));
    }
    const trailer: Buffer | undefined = Buffer.concat(pieces);
    expect(trailer?.length).toBeGreaterThanOrEqual(1024);
    expect(Buffer.concat([...parts, trailer]).equals(original)).toBe(true);
  });
});

describe('extractTar on hostile or broken input', () => {
  it('skips bodies the consumer did not read, and the rest of partly read ones', async () => {
    const tarball = await craftTar([
      { name: 'a', content: Buffer.alloc(5000, 1) },
      { name: 'b', content: Buffer.alloc(3000, 2) },
      { name: 'c', content: 'end' },
    ]);
    const names: string[] = [];
    let last = '';
    for await (const { header, body } of extractTar(Readable.from([tarball]))) {
      names.push(header.name);
      if (header.name === 'b') {
        for await (const chunk of body) {
          expect((chunk as Buffer)[0]).toBe(2);
          break;
        }
      }
      if (header.name === 'c') last = (await collect(body)).toString();
    }
    expect(names).toEqual(['a', 'b', 'c']);
    expect(last).toBe('end');
  });

  it('refuses a truncated archive with ETCH_BAD_ARCHIVE', async () => {
    const tarball = await craftTar([{ name: 'a', content: Buffer.alloc(5000, 1) }]);
    const cut = tarball.subarray(0, 2048);
    const error = await (async () => {
      for await (const { body } of extractTar(Readable.from([cut]))) await collect(body);
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('refuses an archive without the end marker', async () => {
    const tarball = await craftTar([{ name: 'a', content: 'x' }], { finalize: false });
    const error = await (async () => {
      for await (const { body } of extractTar(Readable.from([tarball]))) await collect(body);
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('refuses a header with a bad checksum', async () => {
    const tarball = Buffer.from(await craftTar([{ name: 'a', content: 'x' }]));
    tarball[0] = 0x62; // 'a' -> 'b' without fixing the checksum
    const error = await (async () => {
      for await (const entry of extractTar(Readable.from([tarball]))) void entry;
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
    expect((error as Error).message).toContain('checksum');
  });

  it('refuses oversized extended headers instead of buffering them', async () => {
    const tarball = await craftTar([{ name: 'a', content: 'x', pax: { comment: 'c'.repeat(4096) } }]);
    const error = await (async () => {
      for await (const entry of extractTar(Readable.from([tarball]), { maxExtensionSize: 1024 })) void entry;
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('stops with ETCH_ABORTED when the signal fires', async () => {
    const controller = new AbortController();
    const tarball = await craftTar([
      { name: 'a', content: 'x' },
      { name: 'b', content: 'y' },
    ]);
    const error = await (async () => {
      for await (const entry of extractTar(Readable.from([tarball]), { signal: controller.signal })) {
        void entry;
        controller.abort();
      }
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED')).toBe(true);
  });
});

describe('extractTar bytes()', () => {
  const entries = [
    { name: 'small.txt', content: 'small content' },
    { name: 'empty.txt', content: '' },
    { name: 'streamed.txt', content: 'streamed content' },
    { name: 'big.bin', content: Buffer.alloc(MAX_BYTES_READ + 1, 7) },
    { name: 'last.txt', content: 'last' },
  ];

  it('gives a small entry whole, and the entries after it read as before', async () => {
    const seen: Record<string, string> = {};
    for await (const entry of extractTar(Readable.from([await craftTar(entries)]))) {
      const { name } = entry.header;
      if (name === 'big.bin') {
        await expect(entry.bytes(), 'bytes() of an entry over the limit').rejects.toThrow(RangeError);
        seen[name] = String((await collect(entry.body)).length);
      } else if (name === 'streamed.txt') {
        seen[name] = (await collect(entry.body)).toString();
        await expect(entry.bytes(), 'bytes() after the stream').rejects.toThrow(/streamed/);
      } else {
        seen[name] = (await entry.bytes()).toString();
      }
    }
    expect(seen).toEqual({
      'small.txt': 'small content',
      'empty.txt': '',
      'streamed.txt': 'streamed content',
      'big.bin': String(MAX_BYTES_READ + 1),
      'last.txt': 'last',
    });
  });

  it('refuses once the reader moved on, and reports a truncated entry as ETCH_BAD_ARCHIVE', async () => {
    const tarball = await craftTar(entries);
    let first: { bytes(): Promise<Buffer> } | undefined;
    for await (const entry of extractTar(Readable.from([tarball]))) first ??= entry;
    await expect(first?.bytes(), 'bytes() of a passed entry').rejects.toThrow(/moved on/);
    // Cut inside small.txt's data: its header (512 bytes) and 5 of its 13 bytes.
    const error = await (async () => {
      for await (const entry of extractTar(Readable.from([tarball.subarray(0, 517)]))) await entry.bytes();
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), String(error)).toBe(true);
  });
});
