import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { collect } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { createTarPack } from './pack.js';
import { promisePacker, whenPackerIdle } from './packer.js';
import { extractTar } from './extract.js';
import { formatPaxTime, parsePaxTime } from './pax-time.js';

describe('PAX times', () => {
  it('parses seconds and nanoseconds exactly, negative times floored', () => {
    expect(parsePaxTime('1700000000.123456789', 0)).toEqual({ seconds: 1700000000, nanoseconds: 123456789 });
    expect(parsePaxTime('1700000000.5', 0)).toEqual({ seconds: 1700000000, nanoseconds: 500000000 });
    expect(parsePaxTime('1700000000.1234567891', 0)).toEqual({ seconds: 1700000000, nanoseconds: 123456789 });
    expect(parsePaxTime('-1.25', 0)).toEqual({ seconds: -2, nanoseconds: 750000000 });
    expect(parsePaxTime('-100', 0)).toEqual({ seconds: -100, nanoseconds: 0 });
    expect(() => parsePaxTime('1e9', 0)).toThrow(expect.objectContaining({ code: 'ETCH_BAD_ARCHIVE' }));
  });

  it('formats what it parses', () => {
    for (const text of ['0', '1700000000', '1700000000.000000001', '1700000000.5', '-1.25', '-0.5', '-100'])
      expect(formatPaxTime(...(Object.values(parsePaxTime(text, 0)) as [number, number])), text).toBe(text);
  });

  it('packs and reads back nanosecond and pre-epoch mtimes, as GNU tar reads them too', async () => {
    const pack = createTarPack();
    const bytes = collect(pack);
    const write = promisePacker(pack);
    await write({ name: 'fraction', mtime: new Date(1_700_000_000_000), mtimeNanoseconds: 123_456_789 }, 'a');
    await write({ name: 'pre-epoch', mtime: new Date(-86_400_000), mtimeNanoseconds: 5 }, 'b');
    await write({ name: 'whole', mtime: new Date(1_700_000_000_999) }, 'c');
    await whenPackerIdle(pack);
    pack.finalize();
    const tar = await bytes;
    const seen: Record<string, [number, number]> = {};
    for await (const { header } of extractTar(Readable.from([tar])))
      seen[header.name] = [header.mtime.getTime(), header.mtimeNanoseconds];
    expect(seen).toEqual({
      fraction: [1_700_000_000_123, 123_456_789],
      'pre-epoch': [-86_400_000, 5],
      whole: [1_700_000_000_000, 0],
    });
    const dir = await mkdtemp(join(tmpdir(), 'pax-time-'));
    try {
      await writeFile(join(dir, 't.tar'), tar);
      const listing = (await run('tar', ['--utc', '--full-time', '-tvf', join(dir, 't.tar')])).stdout;
      expect(listing).toContain('2023-11-14 22:13:20.123456789 fraction');
      // GNU tar writes -86400 s + 5 ns as this record too (its listing then shows it oddly, its extraction right).
      expect(tar.includes('mtime=-86399.999999995\n'), 'the pre-epoch PAX record').toBe(true);
      await run('tar', ['-xf', join(dir, 't.tar'), '-C', dir, 'pre-epoch']);
      expect((await run('env', ['TZ=UTC', 'stat', '-c', '%y', join(dir, 'pre-epoch')])).stdout).toContain(
        '1969-12-31 00:00:00.000000005',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
