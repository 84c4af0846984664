import { createHash } from 'node:crypto';
import { truncate, readFile, writeFile, open as openFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, rejectionOf, sha256Of, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { openBaseImage } from './open.js';
import type { BaseImageProgress } from './types.js';

let dir: TempDir;
let image: Buffer;

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function readAll(spec: string, options: Parameters<typeof openBaseImage>[1] = {}) {
  const opened = await openBaseImage(spec, options);
  return { opened, ...(await sha256Of(opened.stream)) };
}

/**
 * Writes a zip64 with one stored entry of `size` zero bytes as a sparse file, by hand: local header and central
 * directory with zip64 extra fields, the zip64 end records, and a hole for the data. The CRC is left 0: the test
 * reads only the start of the entry.
 */
async function writeSparseZip64(path: string, name: string, size: number): Promise<number> {
  const nameBytes = Buffer.from(name);
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };
  const extra = Buffer.concat([Buffer.from([0x01, 0x00, 0x10, 0x00]), u64(size), u64(size)]);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(45, 4);
  local.writeUInt16LE(0x21, 12);
  local.writeUInt32LE(0xffffffff, 18);
  local.writeUInt32LE(0xffffffff, 22);
  local.writeUInt16LE(nameBytes.length, 26);
  local.writeUInt16LE(extra.length, 28);
  const dataStart = 30 + nameBytes.length + extra.length;
  const cdOffset = dataStart + size;
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(0x031e, 4);
  central.writeUInt16LE(45, 6);
  central.writeUInt16LE(0x21, 14);
  central.writeUInt32LE(0xffffffff, 20);
  central.writeUInt32LE(0xffffffff, 24);
  central.writeUInt16LE(nameBytes.length, 28);
  central.writeUInt16LE(extra.length, 30);
  const cd = Buffer.concat([central, nameBytes, extra]);
  const eocd64 = Buffer.concat([
    Buffer.from([0x50, 0x4b, 0x06, 0x06]),
    u64(44),
    Buffer.from([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    u64(1),
    u64(1),
    u64(cd.length),
    u64(cdOffset),
  ]);
  const locator = Buffer.concat([
    Buffer.from([0x50, 0x4b, 0x06, 0x07, 0, 0, 0, 0]),
    u64(cdOffset + cd.length),
    Buffer.from([1, 0, 0, 0]),
  ]);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(1, 8);
  eocd.writeUInt16LE(1, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(0xffffffff, 16);
  const handle = await openFile(path, 'w');
  await handle.write(Buffer.concat([local, nameBytes, extra]), 0, undefined, 0);
  const tail = Buffer.concat([cd, eocd64, locator, eocd]);
  await handle.write(tail, 0, tail.length, cdOffset);
  await handle.close();
  return cdOffset + tail.length;
}

beforeAll(async () => {
  dir = await createTempDir('etch-baseimage-');
  // Half random (incompressible), half zeros (so deflate and the compressors have something to do).
  image = Buffer.concat([
    Buffer.from(Array.from({ length: 3 * 1024 * 1024 }, (_, i) => (i * 2654435761) >>> 24)),
    Buffer.alloc(3 * 1024 * 1024),
  ]);
  await writeFile(dir.join('balena.img'), image);
  await writeFile(dir.join('small.raw'), Buffer.alloc(1000, 7));
  await writeFile(dir.join('readme.txt'), 'not an image\n');
  const zip = (args: string[]) => run('zip', ['-q', ...args], { cwd: dir.path });
  await zip(['-0', 'stored.zip', 'balena.img', 'readme.txt']);
  await zip(['-9', 'deflated.zip', 'readme.txt', 'small.raw', 'balena.img']);
  await zip(['-9', 'no-image.zip', 'readme.txt']);
  await zip(['-fz', '-9', 'zip64.zip', 'balena.img']);
  await zip(['-P', 'secret', 'encrypted.zip', 'balena.img']);
  await run('sh', ['-c', 'zip -q -Z bzip2 bzip2.zip balena.img'], { cwd: dir.path });
  // Truncated: the central directory is gone.
  const stored = await readFile(dir.join('stored.zip'));
  await writeFile(dir.join('truncated.zip'), stored.subarray(0, stored.length - 2000));
  // Corrupted: one byte of the stored image data flipped; sizes and the central directory intact.
  const corrupt = Buffer.from(stored);
  const at = corrupt.indexOf(image.subarray(1000, 1032));
  corrupt[at + 5] = (corrupt[at + 5] as number) ^ 0xff;
  await writeFile(dir.join('bad-crc.zip'), corrupt);
  await run(
    'sh',
    [
      '-c',
      'gzip -c balena.img > balena.img.gz && xz -T1 -c balena.img > balena.img.xz && zstd -q -c balena.img > balena.img.zst && cat balena.img | zstd -q > piped.img.zst && (gzip -c small.raw; gzip -c small.raw) > multi.raw.gz && (xz -c small.raw; xz -c small.raw) > multi.raw.xz',
    ],
    { cwd: dir.path },
  );
});

afterAll(async () => {
  await dir?.remove();
});

describe('local raw images', () => {
  it('streams a raw image with its size known up front and progress to the end', async () => {
    const events: BaseImageProgress[] = [];
    const { opened, sha: got, bytes } = await readAll(dir.join('balena.img'), { onProgress: (e) => events.push(e) });
    expect(opened).toMatchObject({
      name: 'balena.img',
      size: image.length,
      source: { kind: 'file', fromCache: false, mode: 'extract' },
    });
    expect(bytes).toBe(image.length);
    expect(got).toBe(sha(image));
    expect(events.at(-1)).toEqual({ phase: 'read', bytes: image.length, total: image.length });
  });

  it('refuses names that are not images, and missing files', async () => {
    expect(await rejectionOf(openBaseImage(dir.join('readme.txt')))).toMatchObject({ code: 'ETCH_USAGE' });
    expect(await rejectionOf(openBaseImage(dir.join('missing.img')))).toMatchObject({ code: 'ETCH_NOT_FOUND' });
  });

  it('fails with ETCH_SIZE_MISMATCH when the file shrinks or grows after it was opened', async () => {
    await writeFile(dir.join('changing.img'), image.subarray(0, 100_000));
    const shrinking = await openBaseImage(dir.join('changing.img'));
    await truncate(dir.join('changing.img'), 50_000);
    expect(await rejectionOf(sha256Of(shrinking.stream))).toMatchObject({ code: 'ETCH_SIZE_MISMATCH' });
    await writeFile(dir.join('changing.img'), image.subarray(0, 100_000));
    const growing = await openBaseImage(dir.join('changing.img'));
    const handle = await openFile(dir.join('changing.img'), 'a');
    await handle.write(Buffer.alloc(10));
    await handle.close();
    expect(await rejectionOf(sha256Of(growing.stream))).toMatchObject({ code: 'ETCH_SIZE_MISMATCH' });
  });

  it('rejects at once when the signal is already aborted, and errors the stream when it fires', async () => {
    const controller = new AbortController();
    controller.abort();
    expect(await rejectionOf(openBaseImage(dir.join('balena.img'), { signal: controller.signal }))).toMatchObject({
      code: 'ETCH_ABORTED',
    });
    const later = new AbortController();
    const opened = await openBaseImage(dir.join('balena.img'), { signal: later.signal });
    let seen = 0;
    const error = await rejectionOf(
      (async () => {
        for await (const chunk of opened.stream) {
          seen += (chunk as Buffer).length;
          if (seen > 100_000) later.abort();
        }
      })(),
    );
    expect(isEtchError(error, 'ETCH_ABORTED')).toBe(true);
  });
});

describe('zips', () => {
  it.each(['stored.zip', 'deflated.zip', 'zip64.zip'])(
    'extracts the largest image entry of %s, CRC-checked',
    async (file) => {
      const { opened, sha: got } = await readAll(dir.join(file));
      expect(opened).toMatchObject({
        name: 'balena.img',
        size: image.length,
        source: { kind: 'zip', entryName: 'balena.img', mode: 'extract' },
      });
      expect(got).toBe(sha(image));
    },
  );

  it('reads the size of a > 4 GiB zip64 entry (sparse, hand-made) before the first byte, in both modes', async () => {
    const size = 4.5 * 1024 ** 3 + 123;
    const total = await writeSparseZip64(dir.join('huge.zip'), 'disk/huge.img', size);
    const opened = await openBaseImage(dir.join('huge.zip'));
    expect(opened).toMatchObject({ name: 'huge.img', size, source: { kind: 'zip', entryName: 'disk/huge.img' } });
    let seen = 0;
    for await (const chunk of opened.stream) {
      expect((chunk as Buffer).every((b) => b === 0)).toBe(true);
      seen += (chunk as Buffer).length;
      if (seen > 1024 * 1024) break;
    }
    const passed = await openBaseImage(dir.join('huge.zip'), { mode: 'passthrough' });
    expect(passed).toMatchObject({ name: 'huge.zip', size: total });
    passed.stream.destroy();
  });

  it('passes a zip through as it is in passthrough mode, after checking it holds an image', async () => {
    const zip = await readFile(dir.join('deflated.zip'));
    const { opened, sha: got } = await readAll(dir.join('deflated.zip'), { mode: 'passthrough' });
    expect(opened).toMatchObject({
      name: 'deflated.zip',
      size: zip.length,
      source: { kind: 'zip', mode: 'passthrough', entryName: 'balena.img' },
    });
    expect(got).toBe(sha(zip));
    expect(await rejectionOf(openBaseImage(dir.join('no-image.zip'), { mode: 'passthrough' }))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
  });

  it('refuses a zip without an image, truncated, encrypted or with another method, each with its code', async () => {
    const none = await rejectionOf(openBaseImage(dir.join('no-image.zip')));
    expect(none).toMatchObject({ code: 'ETCH_NOT_FOUND' });
    expect((none as Error).message).toContain('readme.txt');
    expect(await rejectionOf(openBaseImage(dir.join('truncated.zip')))).toMatchObject({ code: 'ETCH_BAD_ARCHIVE' });
    expect(await rejectionOf(openBaseImage(dir.join('encrypted.zip')))).toMatchObject({
      code: 'ETCH_UNSUPPORTED_COMPRESSION',
    });
    const bzip2 = await rejectionOf(openBaseImage(dir.join('bzip2.zip')));
    expect(bzip2).toMatchObject({ code: 'ETCH_UNSUPPORTED_COMPRESSION' });
    expect((bzip2 as Error).message).toContain('method 12');
  });

  it('fails the stream with ETCH_DIGEST_MISMATCH when the entry does not match its CRC-32', async () => {
    const opened = await openBaseImage(dir.join('bad-crc.zip'));
    expect(opened.size).toBe(image.length);
    expect(await rejectionOf(sha256Of(opened.stream))).toMatchObject({ code: 'ETCH_DIGEST_MISMATCH' });
  });
});

describe('compressed raw images', () => {
  it.each([
    ['balena.img.gz', 'gzip'],
    ['balena.img.xz', 'xz'],
    ['balena.img.zst', 'zstd'],
    ['piped.img.zst', 'zstd'],
  ])('decompresses %s with the size known up front', async (file, compression) => {
    const events: BaseImageProgress[] = [];
    const { opened, sha: got } = await readAll(dir.join(file), { onProgress: (e) => events.push(e) });
    expect(opened).toMatchObject({
      name: file.replace(/\.(gz|xz|zst)$/, ''),
      size: image.length,
      source: { kind: 'compressed', compression },
    });
    expect(got).toBe(sha(image));
    // gzip (ISIZE is only the size mod 2^32) and zstd without a frame content size are counted first.
    const scanned = events.some((e) => e.phase === 'scan');
    expect(scanned).toBe(file === 'balena.img.gz' || file === 'piped.img.zst');
  });

  it('sums concatenated gzip members and xz streams', async () => {
    for (const file of ['multi.raw.gz', 'multi.raw.xz']) {
      const { opened, bytes } = await readAll(dir.join(file));
      expect(opened.size).toBe(2000);
      expect(bytes).toBe(2000);
    }
  });

  it('refuses a truncated xz (no index) with ETCH_BAD_ARCHIVE', async () => {
    const xz = await readFile(dir.join('balena.img.xz'));
    await writeFile(dir.join('cut.img.xz'), xz.subarray(0, xz.length - 100));
    expect(await rejectionOf(openBaseImage(dir.join('cut.img.xz')))).toMatchObject({ code: 'ETCH_BAD_ARCHIVE' });
    expect((await stat(dir.join('cut.img.xz'))).size).toBe(xz.length - 100);
  });
});
