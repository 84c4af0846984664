import { describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { ByteSource } from './byte-source.js';

/** A source over `chunks` of the bytes 0, 1, 2, … (each chunk's own buffer, as a stream hands them out). */
function sourceOf(sizes: number[], seek?: (position: number) => void): ByteSource {
  let next = 0;
  const chunks = sizes.map((size) => Buffer.from(Array.from({ length: size }, () => next++ & 0xff)));
  return new ByteSource(
    (async function* () {
      yield* chunks;
    })(),
    seek,
  );
}

const bytes = (from: number, length: number) => [...Array.from({ length }, (_, i) => (from + i) & 0xff)];

describe('ByteSource', () => {
  it('hands out a chunk in pieces no larger than asked, then the next chunk, then null', async () => {
    const source = sourceOf([5, 3]);
    expect([...((await source.readSome(2)) as Buffer)], 'first read').toEqual(bytes(0, 2));
    expect([...((await source.readSome(10)) as Buffer)], 'rest of the first chunk').toEqual(bytes(2, 3));
    expect([...((await source.readSome(10)) as Buffer)], 'second chunk').toEqual(bytes(5, 3));
    expect(await source.readSome(1), 'after the end').toBeNull();
    expect(source.position, 'position').toBe(8);
  });

  it('reads exact lengths within a chunk and across chunks', async () => {
    const source = sourceOf([4, 1, 6]);
    expect([...((await source.readExact(3)) as Buffer)], 'within the first chunk').toEqual(bytes(0, 3));
    expect([...((await source.readExact(5)) as Buffer)], 'across three chunks').toEqual(bytes(3, 5));
    expect((await source.readExact(0))?.length, 'an empty read').toBe(0);
    expect([...((await source.readExact(3)) as Buffer)], 'the rest').toEqual(bytes(8, 3));
    expect(await source.readExact(1), 'a clean end').toBeNull();
  });

  it('names the position where the input ends part-way through a read or a skip', async () => {
    const reading = sourceOf([4]);
    await reading.readSome(1);
    const readError = await reading.readExact(10).catch((error: unknown) => error);
    expect(isEtchError(readError, 'ETCH_BAD_ARCHIVE'), String(readError)).toBe(true);
    expect((readError as Error).message, 'read error').toContain('before byte 4');

    const skipping = sourceOf([4, 2]);
    const skipError = await skipping.skip(10).catch((error: unknown) => error);
    expect(isEtchError(skipError, 'ETCH_BAD_ARCHIVE'), String(skipError)).toBe(true);
    expect((skipError as Error).message, 'skip error').toContain('before byte 6');
  });

  it('skips within a chunk and across chunks without losing the bytes after', async () => {
    const source = sourceOf([6, 2, 5]);
    await source.skip(2);
    expect([...((await source.readExact(2)) as Buffer)], 'after a skip within a chunk').toEqual(bytes(2, 2));
    await source.skip(5);
    expect([...((await source.readExact(3)) as Buffer)], 'after a skip across chunks').toEqual(bytes(9, 3));
    expect(source.position, 'position').toBe(12);
  });

  it('records what it hands out and what it skips, in order, when recording', async () => {
    const source = sourceOf([3, 4]);
    source.recording = [];
    await source.readExact(2);
    await source.skip(3);
    await source.readSome(5);
    expect([...Buffer.concat(source.recording)], 'recorded bytes').toEqual(bytes(0, 7));
  });

  it('asks to seek past what a skip leaves out beyond the chunk in hand, and does not read it', async () => {
    const seeks: number[] = [];
    const source = sourceOf([4, 4, 4], (position) => seeks.push(position));
    await source.readSome(1);
    await source.skip(6);
    expect(seeks, 'seek positions').toEqual([7]);
    expect(source.position, 'position').toBe(7);
  });
});
