import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { rawTarHeader } from '@etch/test-utils';
import { createTarPack, promisePacker, whenPackerIdle } from '@etch/tar';
import { convertLayer, type ConvertedLayer } from './layer-converter.js';

// A forced collection measures what stays reachable, not what the collector has yet to reclaim.
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;

/** An uncompressed layer of `count` empty files in folders of 1000, generated as it is read. */
async function* emptyFilesLayer(count: number): AsyncGenerator<Buffer> {
  let batch: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    if (i % 1000 === 0) batch.push(rawTarHeader({ name: `d${i / 1000}/`, typeflag: '5', mode: 0o755 }));
    batch.push(rawTarHeader({ name: `d${Math.floor(i / 1000)}/f${i}`, mtime: 1_700_000_000 }));
    if (batch.length >= 128) {
      yield Buffer.concat(batch);
      batch = [];
    }
  }
  yield Buffer.concat([...batch, Buffer.alloc(1024)]);
}

describe('convertLayer', () => {
  it('keeps memory flat in the number of entries (point 9: 100,000 empty files took 600 MB)', async () => {
    const count = 40_000;
    const checkpoints = new Map([
      [count / 4, 0],
      [count, 0],
    ]);
    const pack = createTarPack();
    pack.on('data', () => undefined); // the .etch output, discarded
    const write = promisePacker(pack, 'inject/2');
    let converted: ConvertedLayer | undefined;
    let seen = 0;
    const started = Date.now();
    for await (const { header, content } of convertLayer(emptyFilesLayer(count), 'docker/overlay2/x/diff', (r) => {
      converted = r;
    })) {
      await write(header, content);
      if (header.type === 'file' && checkpoints.has(++seen)) {
        collect();
        checkpoints.set(seen, process.memoryUsage().heapUsed);
      }
    }
    await whenPackerIdle(pack);
    pack.finalize();
    const ms = Date.now() - started;
    expect(converted?.entries, 'entries converted').toBe(count + count / 1000);
    const early = checkpoints.get(count / 4) as number;
    const late = checkpoints.get(count) as number;
    const perEntry = (late - early) / (count - count / 4);
    console.log(`convertLayer: ${count} empty files in ${ms} ms, ${perEntry.toFixed(1)} heap bytes kept per entry`);
    // Each path is remembered (the engine refuses duplicates and needs hardlink targets), as a keyed digest in a
    // typed array outside the heap: a few bytes of heap an entry (the tar-split's compressed records). A Map of
    // the paths kept ~85 bytes an entry; streams, pipelines or tar-split records held per entry, kilobytes.
    expect(perEntry, `heap retained per entry (bytes), ${early} → ${late} over ${count} entries`).toBeLessThan(40);
    expect(ms, `milliseconds to convert ${count} empty files`).toBeLessThan(25_000);
  }, 60_000);
});

/** An uncompressed layer of `entries` (headers only; symlinks carry their target), with its end marker. */
function layerOf(entries: { name: string; typeflag?: string; linkname?: string }[]): AsyncIterable<Buffer> {
  return (async function* () {
    yield Buffer.concat([...entries.map((entry) => rawTarHeader(entry)), Buffer.alloc(1024)]);
  })();
}

/** Converts `entries` and drains what comes out: the error that stopped it, or undefined. */
async function conversionError(entries: Parameters<typeof layerOf>[0]): Promise<unknown> {
  try {
    for await (const entry of convertLayer(layerOf(entries), 'docker/overlay2/x/diff', () => undefined)) {
      if (entry.content !== undefined && typeof entry.content !== 'string' && !Buffer.isBuffer(entry.content))
        for await (const chunk of entry.content) void chunk;
    }
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('convertLayer refuses writes through the layer’s own symlinks', () => {
  it.each([
    [
      'a symlink in place of a folder whose files came before it',
      [
        { name: 'other', typeflag: '2', linkname: '/' },
        { name: 'dir/a' },
        { name: 'dir', typeflag: '2', linkname: '/etc' },
        { name: 'dir/cron' },
      ],
      'dir/cron',
    ],
    [
      'a symlink beside the previous entry, then a write through it',
      [{ name: 'top/a' }, { name: 'top/link', typeflag: '2', linkname: '/etc' }, { name: 'top/link/cron' }],
      'top/link/cron',
    ],
    [
      'a hardlink to a symlink, then a write through the hardlink',
      [
        { name: 'evil', typeflag: '2', linkname: '/etc' },
        { name: 'alias', typeflag: '1', linkname: 'evil' },
        { name: 'alias/cron' },
      ],
      'alias/cron',
    ],
    [
      'a symlink high up, then a write deep below it',
      [{ name: 'up', typeflag: '2', linkname: '/' }, { name: 'x/y/z' }, { name: 'up/y/z' }],
      'up/y/z',
    ],
  ])('%s', async (_label, entries, offending) => {
    const error = await conversionError(entries);
    expect(isEtchError(error, 'ETCH_UNSAFE_PATH'), String(error)).toBe(true);
    expect((error as Error).message, 'names the entry').toContain(JSON.stringify(offending));
  });

  it('takes many files of one folder after a symlink elsewhere', async () => {
    const files = Array.from({ length: 50 }, (_, i) => ({ name: `usr/lib/f${i}` }));
    expect(await conversionError([{ name: 'lib', typeflag: '2', linkname: 'usr/lib' }, ...files])).toBeUndefined();
  });
});
