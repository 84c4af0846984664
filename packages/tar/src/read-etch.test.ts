import { PassThrough, Readable } from 'node:stream';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { collect, craftTar, type CraftedEntry } from '@etch/test-utils';
import { isEtchError, type EtchErrorCode } from '@etch/format';
import { createCompressor } from './compression.js';
import { readEtch, type EtchEntry } from './read-etch.js';

const base: CraftedEntry[] = [
  { name: 'VERSION', content: '1.0' },
  { name: 'balena.img', content: Buffer.alloc(4096, 0xaa) },
];

async function readAll(tarball: Buffer): Promise<{ entry: EtchEntry; content?: Buffer }[]> {
  const out = [];
  for await (const entry of readEtch(Readable.from([tarball]))) {
    const stream = 'stream' in entry ? entry.stream : undefined;
    out.push({ entry, content: stream ? await collect(stream) : undefined });
  }
  return out;
}

async function refusal(entries: CraftedEntry[]): Promise<unknown> {
  return readAll(await craftTar(entries)).then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe('readEtch', () => {
  it('yields typed entries in order with their content', async () => {
    const tarball = await craftTar([
      ...base,
      { name: 'inject/', type: 'directory' },
      { name: 'inject/6/docker', type: 'directory', mode: 0o710 },
      { name: 'inject/6/docker/a', content: 'A', uid: 5, gid: 6, mode: 0o600 },
      { name: 'inject/6/docker/b', type: 'link', linkname: 'inject/6/docker/a' },
      { name: 'inject/6/docker/s', type: 'symlink', linkname: '../../../etc/x' },
      { name: 'inject/6/docker/w', type: 'character-device', devmajor: 0, devminor: 0, mode: 0 },
      { name: 'inject/1/config.json', content: '{}' },
    ]);
    const all = await readAll(tarball);
    expect(all.map(({ entry }) => entry.kind)).toEqual([
      'version',
      'base-image',
      'inject',
      'inject',
      'inject',
      'inject',
      'inject',
      'inject',
    ]);
    const [version, image, dir, a, b, s, w, config] = all;
    expect(version?.entry).toMatchObject({ version: { major: 1, minor: 0 }, compression: 'none' });
    expect(image?.entry).toMatchObject({ name: 'balena.img', container: 'raw', size: 4096 });
    expect(image?.content?.equals(Buffer.alloc(4096, 0xaa))).toBe(true);
    expect(dir?.entry).toMatchObject({ partition: 6, path: 'docker', type: 'directory', mode: 0o710 });
    expect(a?.entry).toMatchObject({ path: 'docker/a', type: 'file', uid: 5, gid: 6, mode: 0o600 });
    expect(a?.content?.toString()).toBe('A');
    expect(b?.entry).toMatchObject({ type: 'link', hardlinkTarget: 'docker/a' });
    expect(s?.entry).toMatchObject({ type: 'symlink', symlinkTarget: '../../../etc/x' });
    expect(w?.entry).toMatchObject({ type: 'character-device' });
    expect(config?.entry).toMatchObject({ partition: 1, path: 'config.json' });
  });

  it('skips the base image when the caller does not read it', async () => {
    const tarball = await craftTar([...base, { name: 'inject/2/x', content: 'x' }]);
    const kinds: string[] = [];
    for await (const entry of readEtch(Readable.from([tarball]))) kinds.push(entry.kind);
    expect(kinds).toEqual(['version', 'base-image', 'inject']);
  });

  it('reads gzip- and zstd-compressed .etch files, detected by magic bytes', async () => {
    const tarball = await craftTar([...base, { name: 'inject/6/f', content: 'hello' }]);
    // zstd output of other producers (the zstd command) is read in @etch/baseimage's tests.
    const zstd = await collect(createCompressor('zstd').end(tarball));
    for (const [bytes, compression] of [
      [gzipSync(tarball), 'gzip'],
      [zstd, 'zstd'],
    ] as const) {
      const all = await readAll(bytes);
      expect(all[0]?.entry).toMatchObject({ kind: 'version', compression });
      expect(all[2]?.content?.toString()).toBe('hello');
    }
  });

  it('accepts the legacy /VERSION name and 1:0 spelling, and a newer minor with unknown entries', async () => {
    const all = await readAll(
      await craftTar([
        { name: '/VERSION', content: '1:0' },
        { name: 'a.zip', content: 'PK' },
      ]),
    );
    expect(all[1]?.entry).toMatchObject({ kind: 'base-image', container: 'zip' });
    const newer = await readAll(
      await craftTar([
        { name: 'VERSION', content: '1.9' },
        { name: 'meta/info.json', content: '{}' },
        { name: 'a.img', content: 'x' },
        { name: 'inject/6/f', content: 'y' },
      ]),
    );
    expect(newer.map(({ entry }) => entry.kind)).toEqual(['version', 'unknown', 'base-image', 'inject']);
  });

  it('reads the 1.1 requirements entry before the inject entries', async () => {
    const all = await readAll(
      await craftTar([
        { name: 'VERSION', content: '1.1' },
        { name: 'a.img', content: 'x' },
        { name: 'requirements.json', content: '{"partitions":{"6":{"bytes":10,"entries":2}}}' },
        { name: 'inject/6/f', content: 'y' },
      ]),
    );
    expect(all.map(({ entry }) => entry.kind)).toEqual(['version', 'base-image', 'requirements', 'inject']);
    expect(all[2]?.entry).toMatchObject({ requirements: { partitions: { '6': { bytes: 10, entries: 2 } } } });
    const broken = await readAll(
      await craftTar([
        { name: 'VERSION', content: '1.1' },
        { name: 'a.img', content: 'x' },
        { name: 'requirements.json', content: '{"partitions":{"6":{"bytes":-1,"entries":2}}}' },
      ]),
    ).catch((e: unknown) => e);
    expect(broken).toMatchObject({ code: 'ETCH_BAD_ENTRY' });
  });

  const cases: [string, CraftedEntry[], EtchErrorCode][] = [
    ['an empty tar', [], 'ETCH_BAD_VERSION'],
    ['a missing VERSION', [{ name: 'balena.img', content: 'x' }], 'ETCH_BAD_VERSION'],
    ['VERSION not first', [base[1] as CraftedEntry, base[0] as CraftedEntry], 'ETCH_BAD_VERSION'],
    ['a garbage VERSION', [{ name: 'VERSION', content: 'one' }, base[1] as CraftedEntry], 'ETCH_BAD_VERSION'],
    [
      'an unsupported major',
      [{ name: 'VERSION', content: '2.0' }, base[1] as CraftedEntry],
      'ETCH_UNSUPPORTED_VERSION',
    ],
    ['no base image', [base[0] as CraftedEntry], 'ETCH_BAD_ORDER'],
    ['a second base image', [...base, { name: 'b.img', content: 'x' }], 'ETCH_BAD_ORDER'],
    [
      'inject before the base image',
      [base[0] as CraftedEntry, { name: 'inject/6/x', content: 'x' }, base[1] as CraftedEntry],
      'ETCH_BAD_ORDER',
    ],
    ['partition 0', [...base, { name: 'inject/0/x', content: 'x' }], 'ETCH_BAD_ENTRY'],
    ['a non-number partition', [...base, { name: 'inject/resin-data/x', content: 'x' }], 'ETCH_BAD_ENTRY'],
    ['an absolute path', [...base, { name: '/inject/6/x', content: 'x' }], 'ETCH_BAD_ENTRY'],
    ['a .. path', [...base, { name: 'inject/6/../../../etc/passwd', content: 'x' }], 'ETCH_UNSAFE_PATH'],
    [
      'a NUL in a PAX path',
      [...base, { name: 'inject/6/x', content: 'x', pax: { path: 'inject/6/a\u0000b' } }],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'a hardlink into another partition',
      [...base, { name: 'inject/6/h', type: 'link', linkname: 'inject/1/x' }],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'a hardlink to an absolute path',
      [...base, { name: 'inject/6/h', type: 'link', linkname: '/etc/shadow' }],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'a write through an archive symlink',
      [...base, { name: 'inject/6/d', type: 'symlink', linkname: '/etc' }, { name: 'inject/6/d/cron', content: 'x' }],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'a block device',
      [...base, { name: 'inject/6/sda', type: 'block-device', devmajor: 8, devminor: 0 }],
      'ETCH_BAD_ENTRY',
    ],
    [
      'a real character device',
      [...base, { name: 'inject/6/tty', type: 'character-device', devmajor: 4, devminor: 1 }],
      'ETCH_BAD_ENTRY',
    ],
    ['a fifo', [...base, { name: 'inject/6/p', type: 'fifo' }], 'ETCH_BAD_ENTRY'],
    ['an unknown top-level entry', [...base, { name: 'extra.txt', content: 'x' }], 'ETCH_BAD_ENTRY'],
    [
      'a base image that is a directory',
      [base[0] as CraftedEntry, { name: 'a.img', type: 'directory' }],
      'ETCH_BAD_ENTRY',
    ],
  ];

  it.each(cases)('refuses %s', async (_label, entries, expected) => {
    const error = await refusal(entries);
    expect(isEtchError(error, expected), String(error)).toBe(true);
  });

  it('refuses an empty input', async () => {
    const error = await readAll(Buffer.alloc(0)).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('refuses input that is not a tar at all', async () => {
    const error = await readAll(Buffer.from('this is a text file, not an archive'.repeat(40))).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
    expect((error as Error).message).toContain('not a .etch');
  });

  it('refuses a truncated .etch mid base image', async () => {
    const tarball = await craftTar([...base, { name: 'inject/6/x', content: 'x' }]);
    const error = await readAll(tarball.subarray(0, 2000)).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('refuses corrupt gzip data', async () => {
    const gz = gzipSync(await craftTar(base));
    const broken = Buffer.concat([gz.subarray(0, 30), Buffer.alloc(50, 0x55)]);
    const error = await readAll(broken).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE')).toBe(true);
  });

  it('refuses corrupt zstd data', async () => {
    // The frame header kept, its first block overwritten: zstd reports "Data corruption detected".
    const broken = Buffer.from(zstdCompressSync(await craftTar(base))).fill(0x55, 6, 26);
    const error = await readAll(broken).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), String(error)).toBe(true);
  });
});

describe('readEtch bytes()', () => {
  it('gives a file of up to 1 MiB whole, the same as its stream; a larger one has only the stream', async () => {
    const big = Buffer.alloc(1024 * 1024 + 1, 3);
    const tarball = await craftTar([
      ...base,
      { name: 'inject/6/a.txt', content: 'a file' },
      { name: 'inject/6/mib.bin', content: big.subarray(1) },
      { name: 'inject/6/big.bin', content: big },
      { name: 'inject/6/dir', type: 'directory' },
    ]);
    const seen: Record<string, unknown> = {};
    for await (const entry of readEtch(Readable.from([tarball]))) {
      if (entry.kind !== 'inject') continue;
      const content = entry.bytes ? await entry.bytes() : entry.stream ? await collect(entry.stream) : undefined;
      seen[entry.path] = { bytes: entry.bytes !== undefined, length: content?.length };
      if (entry.path === 'a.txt') expect(content?.toString()).toBe('a file');
    }
    expect(seen).toEqual({
      'a.txt': { bytes: true, length: 6 },
      'mib.bin': { bytes: true, length: 1024 * 1024 },
      'big.bin': { bytes: false, length: 1024 * 1024 + 1 },
      dir: { bytes: false, length: undefined },
    });
  });
});

describe('readEtch checks what a filesystem can store', () => {
  it('drops file-type bits from modes (a directory with mode 0100755 stays a directory with 0755)', async () => {
    const entries = await readAll(
      await craftTar([
        ...base,
        { name: 'inject/6/d', type: 'directory', mode: 0o100755 },
        { name: 'inject/6/d/f', content: 'x', mode: 0o100644 },
      ]),
    );
    const modes = entries.flatMap(({ entry }) => (entry.kind === 'inject' ? [[entry.path, entry.mode]] : []));
    expect(modes).toEqual([
      ['d', 0o755],
      ['d/f', 0o644],
    ]);
  });

  it.each([
    ['a uid beyond 32 bits', { pax: { uid: String(2 ** 32) } }],
    ['an mtime beyond 2446', { pax: { mtime: String(2 ** 35) } }],
    ['an mtime before 1901', { pax: { mtime: String(-(2 ** 32)) } }],
  ])('refuses %s as a bad entry naming it', async (_label, fields) => {
    const error = await refusal([...base, { name: 'inject/6/odd', content: 'x', ...fields }]);
    expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
    expect(String(error)).toMatch(/inject\/6\/odd/);
  });

  it('folds a doubled slash after the partition (inject/6//x is inject/6/x)', async () => {
    const entries = await readAll(await craftTar([...base, { name: 'inject/6//x', content: 'x' }]));
    const inject = entries.find(({ entry }) => entry.kind === 'inject')?.entry;
    expect(inject).toMatchObject({ partition: 6, path: 'x' });
  });
});

describe('readEtch and a stalled input', () => {
  it.each([
    ['before its first bytes', 0],
    ['after its first entry', 1],
  ])('rejects with ETCH_ABORTED on abort %s, and closes the input', async (_, entries) => {
    // A pipe nobody writes to any more: without closing it, the abort would wait for its next byte.
    const input = new PassThrough();
    const tarball = await craftTar([...base, { name: 'inject/6/a.txt', content: 'a' }]);
    // The VERSION entry and the base image: 512-byte header blocks and padded bodies.
    if (entries > 0) input.write(tarball.subarray(0, 3 * 512));
    const controller = new AbortController();
    const reading = (async () => {
      for await (const entry of readEtch(input, { signal: controller.signal })) {
        if ('stream' in entry) entry.stream?.resume();
        controller.abort();
      }
    })();
    if (entries === 0) controller.abort();
    const error = await reading.catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED'), String(error)).toBe(true);
    expect(input.destroyed, 'input destroyed').toBe(true);
  });
});
