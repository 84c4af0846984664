import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { paxEntry, rawTarEntry, rawTarHeader, tarEnd } from '@etch/test-utils';
import { isEtchError } from '@etch/format';
import { extractTar } from './extract.js';

/** Reads every entry (draining bodies) and resolves with the error, or undefined when the archive is fine. */
async function outcome(archive: Buffer): Promise<{ error: unknown; ms: number; entries: number }> {
  const started = Date.now();
  let entries = 0;
  try {
    for await (const { body } of extractTar(Readable.from([archive]))) {
      entries += 1;
      for await (const chunk of body) void chunk;
    }
    return { error: undefined, ms: Date.now() - started, entries };
  } catch (error) {
    return { error, ms: Date.now() - started, entries };
  }
}

const file = (size = 3) => rawTarEntry({ name: 'file.txt', size }, Buffer.alloc(size, 0x61));

describe('extractTar refuses hostile numbers (strict parsing, never a spin)', () => {
  it.each([
    ['fractional', '0.5'],
    ['negative', '-1'],
    ['hex', '0x10'],
    ['exponent', '1e3'],
    ['signed', '+3'],
    ['empty', ''],
    ['beyond 2^53', '9007199254740993'],
    ['spaces inside', '1 2'],
  ])('a PAX size that is %s (%j)', async (_label, size) => {
    const result = await outcome(Buffer.concat([paxEntry({ size }), file(), tarEnd()]));
    expect(isEtchError(result.error, 'ETCH_BAD_ARCHIVE'), `size=${size}: ${String(result.error)}`).toBe(true);
    expect(String(result.error), 'names the PAX record, not a later checksum').toMatch(/PAX record size=/);
    expect(result.ms, 'milliseconds to refuse').toBeLessThan(1000);
  });

  it.each([
    ['uid', { uid: '-5' }],
    ['gid', { gid: '1.5' }],
    ['mtime', { mtime: '1e9' }],
    ['mtime beyond 2^40', { mtime: '99999999999999' }],
  ])('a PAX %s that is not a valid number', async (_label, records) => {
    const result = await outcome(Buffer.concat([paxEntry(records), file(), tarEnd()]));
    expect(isEtchError(result.error, 'ETCH_BAD_ARCHIVE'), String(result.error)).toBe(true);
  });

  it('accepts fractional and negative PAX mtimes, as POSIX allows', async () => {
    const result = await outcome(Buffer.concat([paxEntry({ mtime: '-12.25' }), file(), tarEnd()]));
    expect(result.error).toBeUndefined();
  });

  it.each([
    ['octal with a sign', { size: '-0000001\0' }],
    ['octal with a stray letter', { size: '0000000001x\0' }],
    [
      'base-256 beyond 2^53',
      { size: Buffer.from([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) },
    ],
    ['negative base-256', { size: Buffer.alloc(12, 0xff) }],
    ['mode in hex', { mode: '0x1ff\0' }],
  ])('a header field that is %s', async (_label, fields) => {
    const archive = Buffer.concat([rawTarHeader({ name: 'f', ...fields }), Buffer.alloc(512), tarEnd()]);
    const result = await outcome(archive);
    expect(isEtchError(result.error, 'ETCH_BAD_ARCHIVE'), String(result.error)).toBe(true);
    expect(result.ms).toBeLessThan(1000);
  });
});

describe('extractTar bounds global PAX state', () => {
  it('refuses global headers that add up to more than 1 MiB', async () => {
    const big = (key: string) => paxEntry({ [key]: 'v'.repeat(600 * 1024) }, true);
    const result = await outcome(Buffer.concat([big('comment.a'), big('comment.b'), file(), tarEnd()]));
    expect(isEtchError(result.error, 'ETCH_BAD_ARCHIVE'), String(result.error)).toBe(true);
    expect(String(result.error)).toMatch(/global PAX headers/);
  });

  it('refuses more than 1024 global records', async () => {
    const records = Array.from({ length: 1025 }, (_, i) => [`k${i}`, 'v'] as [string, string]);
    const result = await outcome(Buffer.concat([paxEntry(records, true), file(), tarEnd()]));
    expect(isEtchError(result.error, 'ETCH_BAD_ARCHIVE'), String(result.error)).toBe(true);
  });

  it('keeps the same global headers cheap for 20,000 entries (no per-entry copy)', async () => {
    const records = Array.from({ length: 1000 }, (_, i) => [`comment.${i}`, 'x'.repeat(64)] as [string, string]);
    const entry = rawTarEntry({ name: 'f' }, Buffer.alloc(0));
    const archive = Buffer.concat([paxEntry(records, true), ...Array.from({ length: 20_000 }, () => entry), tarEnd()]);
    const heap = process.memoryUsage().heapUsed;
    const result = await outcome(archive);
    expect(result.error).toBeUndefined();
    expect(result.entries).toBe(20_000);
    expect(result.ms, 'milliseconds for 20,000 entries').toBeLessThan(5000);
    expect(process.memoryUsage().heapUsed - heap, 'heap growth').toBeLessThan(128 * 1024 * 1024);
  });
});
