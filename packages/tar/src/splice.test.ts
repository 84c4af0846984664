import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { collect, craftTar, rejectionOf } from '@etch/test-utils';
import { isEtchError } from '@etch/format';
import { createTarPack } from './pack.js';
import { promisePacker, whenPackerIdle, type EntryHeader, type EntryWriter } from './packer.js';
import { spliceTar, type SplicedEntry } from './splice.js';

const big = randomBytes(200_000);

/** Entries of every kind the store writes: long names (PAX), binary xattrs, links, a large body, a device. */
async function layerEntries(write: EntryWriter): Promise<void> {
  await write({ name: 'layer', type: 'directory', mode: 0o755 });
  await write({ name: 'layer/small', mode: 0o644, mtime: new Date(1_000_000_000) }, 'hello');
  await write({ name: `layer/${'d/'.repeat(80)}long-ünï.txt`, mtimeNanoseconds: 5 }, 'long');
  await write({ name: 'layer/big.bin', size: big.length }, Readable.from([big]));
  await write({ name: 'layer/hard', type: 'link', linkname: 'layer/small' });
  await write({ name: 'layer/sym', type: 'symlink', linkname: '/etc/elsewhere' });
  await write({ name: 'layer/caps', xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0xff]) } }, '');
  await write({ name: 'layer/null', type: 'character-device', devmajor: 1, devminor: 3 });
}
const LAYER_ENTRIES = 8;

/** A whole tar of `entries` written by promisePacker with `prefix`. */
async function packed(entries: (write: EntryWriter) => Promise<void>, prefix?: string): Promise<Buffer> {
  const pack = createTarPack();
  const out = collect(pack);
  // A fixed time for entries without one: the expected tar is packed at another moment than the spliced one.
  await entries(promisePacker(pack, prefix, { mtime: new Date(1_600_000_000_000) }));
  await whenPackerIdle(pack);
  pack.finalize();
  return out;
}

/** A tar: one entry before, `source` spliced, one entry after; with what the splice reported. */
async function around(source: AsyncIterable<Uint8Array>, check?: (entry: SplicedEntry) => void) {
  const pack = createTarPack();
  const out = collect(pack);
  const write = promisePacker(pack, 'inject/6', { mtime: new Date(1_600_000_000_000) });
  void write({ name: 'before.txt' }, 'b');
  const added = spliceTar(pack, source, check ? { check } : {});
  void write({ name: 'after.txt' }, 'a');
  const result = await added;
  await whenPackerIdle(pack);
  pack.finalize();
  return { bytes: await out, result };
}

/** `data` in chunks of `size` bytes. */
function chunked(data: Buffer, size: number): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
  })();
}

describe('spliceTar', () => {
  it.each([1 << 20, 512, 700, 1])(
    'appends a tar packed with the same prefix byte for byte, in queue order (chunks of %i bytes)',
    async (chunkSize) => {
      const staged = await packed(layerEntries, 'inject/6');
      const expected = await packed(async (write) => {
        await write({ name: 'before.txt' }, 'b');
        await layerEntries(write);
        await write({ name: 'after.txt' }, 'a');
      }, 'inject/6');
      const { bytes, result } = await around(chunked(staged, chunkSize));
      expect(bytes.length, 'length').toBe(expected.length);
      expect(bytes.equals(expected), 'the bytes, spliced vs packed').toBe(true);
      expect(result).toEqual({ entries: LAYER_ENTRIES, fileBytes: 5 + 4 + big.length });
    },
  );

  it('shows every entry to check with its full name and link target, before its bytes', async () => {
    const staged = await packed(layerEntries, 'inject/6');
    const seen: string[] = [];
    await around(chunked(staged, 4096), (e) => seen.push(`${e.type} ${e.name} ${e.linkname} ${e.size}`));
    expect(seen).toEqual([
      'directory inject/6/layer/  0',
      'file inject/6/layer/small  5',
      `file inject/6/layer/${'d/'.repeat(80)}long-ünï.txt  4`,
      `file inject/6/layer/big.bin  ${big.length}`,
      'link inject/6/layer/hard inject/6/layer/small 0',
      'symlink inject/6/layer/sym /etc/elsewhere 0',
      'file inject/6/layer/caps  0',
      'character-device inject/6/layer/null  0',
    ]);
  });

  it('stops at an entry check refuses: rejects with its error, destroys the pack, appends nothing of it', async () => {
    const staged = await packed(layerEntries, 'inject/6');
    const pack = createTarPack();
    const out: Buffer[] = [];
    pack.on('error', () => {}); // destroyed with the error the splice rejects with
    pack.on('data', (chunk: unknown) => out.push(chunk as Buffer));
    const refused = new Error('refused hard');
    const error = await rejectionOf(
      spliceTar(pack, chunked(staged, 512), {
        check: (e) => {
          if (e.type === 'link') throw refused;
        },
      }),
    );
    expect(error).toBe(refused);
    expect(pack.destroying || pack.destroyed, 'pack destroyed').toBe(true);
    expect(Buffer.concat(out).includes(Buffer.from('layer/hard')), 'the refused header in the output').toBe(false);
  });

  const craftedCases: [string, () => Promise<Buffer>][] = [
    [
      'a GNU long name',
      async () =>
        patched(
          await craftTar([
            { name: 'x', content: 'y'.repeat(10) },
            { name: 'z', content: '' },
          ]),
          'L',
        ),
    ],
    ['a global PAX header', async () => patched(await craftTar([{ name: 'g', content: '11 a=bcdef\n' }]), 'g')],
    ['a directory with a body', async () => patched(await craftTar([{ name: 'd/', type: 'directory' }]), '5', 512)],
    ['a cut-off stream', async () => (await packed(layerEntries)).subarray(0, 100_000)],
    ['no end-of-archive marker', async () => craftTar([{ name: 'a', content: 'a' }], { finalize: false })],
    [
      'data after the end marker',
      async () => Buffer.concat([await craftTar([{ name: 'a', content: 'a' }]), Buffer.from('x')]),
    ],
    // A reader honouring `size=0` would take the two blocks after the header as entries check never saw.
    ['a PAX size record', async () => smuggled({ size: '0' })],
    ['a PAX GNU.sparse record', async () => smuggled({ 'GNU.sparse.size': '0' })],
  ];
  it.each(craftedCases)('refuses a tar with %s as ETCH_BAD_ARCHIVE', async (_what, make) => {
    const tar = await make();
    const pack = createTarPack();
    pack.resume();
    pack.on('error', () => {}); // the pack is destroyed with the error the splice rejects with
    const error = await rejectionOf(spliceTar(pack, chunked(tar, 1000)));
    expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), String(error)).toBe(true);
    expect(pack.destroying || pack.destroyed, 'pack destroyed').toBe(true);
  });

  it.each(['its signal aborts', 'the pack is destroyed'])(
    'stops waiting for a pack nobody reads when %s',
    async (how) => {
      const header: EntryHeader = { name: 'big', size: 8 * 1024 * 1024 };
      const staged = await packed(async (write) => write(header, Readable.from([Buffer.alloc(header.size ?? 0)])));
      const pack = createTarPack();
      pack.on('error', () => {}); // destroyed with the error the splice rejects with
      const controller = new AbortController();
      let pulled = 0;
      const source = (async function* () {
        for (let at = 0; at < staged.length; at += 65536) {
          pulled += 65536;
          // Stopped once the first chunk has left the splice waiting for the pack's reader, which never comes.
          if (pulled === 65536) setImmediate(() => (how === 'its signal aborts' ? controller.abort() : pack.destroy()));
          yield staged.subarray(at, at + 65536);
        }
      })();
      const error = await rejectionOf(spliceTar(pack, source, { signal: controller.signal }));
      if (how === 'its signal aborts') expect(isEtchError(error, 'ETCH_ABORTED'), String(error)).toBe(true);
      else expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
      expect(pack.destroying || pack.destroyed, 'pack destroyed').toBe(true);
    },
  );

  it('waits for a slow reader instead of buffering the whole source', async () => {
    const header: EntryHeader = { name: 'big', size: 8 * 1024 * 1024 };
    const staged = await packed(async (write) => write(header, Readable.from([Buffer.alloc(header.size ?? 0)])));
    const pack = createTarPack();
    let pulled = 0;
    const source = (async function* () {
      for (let at = 0; at < staged.length; at += 65536) {
        pulled += 65536;
        yield staged.subarray(at, at + 65536);
      }
    })();
    const added = spliceTar(pack, source);
    // Nobody reads the pack: the splice must stall after about the pack's buffer.
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(pulled, 'bytes pulled from the source while the pack is not read').toBeLessThan(2 * 1024 * 1024);
    const out = collect(pack);
    await added;
    pack.finalize();
    expect((await out).length).toBe(staged.length);
  });
});

/**
 * A tar whose first file carries PAX `records` and a ustar size of 1024 whose bytes are a second, unchecked
 * entry: what a tampered stage file would use to slip an entry past `check`.
 */
async function smuggled(records: Record<string, string>): Promise<Buffer> {
  const hidden = (await craftTar([{ name: 'inject/1/evil', content: 'x' }])).subarray(0, 1024);
  return craftTar([{ name: 'inject/6/a', content: hidden, pax: records }]);
}

/**
 * `tar` with the first header's type flag set to `typeflag`, and its size to `size` with that many bytes
 * inserted after it when given; the checksum is fixed.
 */
function patched(tar: Buffer, typeflag: string, size?: number): Buffer {
  const header = Buffer.from(tar.subarray(0, 512));
  header.write(typeflag, 156, 'latin1');
  if (size !== undefined) header.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return Buffer.concat([header, size === undefined ? Buffer.alloc(0) : Buffer.alloc(size, 1), tar.subarray(512)]);
}
