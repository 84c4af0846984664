import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collect, craftTar, createTempDir, type CraftedEntry, type TempDir } from '@etch/test-utils';
import { isEtchError, type Logger } from '@etch/format';
import { createTarPack, promisePacker } from '@etch/tar';
import { ConvertedLayerCache } from './converted-cache.js';
import { cacheIdFor, chainIds } from './ids.js';
import { stageLayers, type StageOptions } from './layer-stager.js';
import { dockerStoreEntries, type LayerProgress, type StoreImage } from './store.js';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir('etch-converted-cache-');
});
afterEach(() => dir.remove());

const sha = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** An image of one layer per entry list; `opened` records each blob read. */
async function image(name: string, layers: CraftedEntry[][], opened: string[]): Promise<StoreImage> {
  const tars = await Promise.all(layers.map(async (entries) => craftTar(entries)));
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: tars.map(sha) } }),
  );
  return {
    config,
    configDigest: sha(config),
    layers: tars.map((tar) => {
      const blob = gzipSync(tar);
      return {
        digest: sha(blob),
        size: blob.length,
        open: async () => {
          opened.push(sha(blob));
          return Readable.from([blob]);
        },
      };
    }),
    names: [{ repository: name, tag: '1' }],
    sourceRepository: `registry.test/${name}`,
  };
}

const lower: CraftedEntry[] = [
  { name: 'bin/', type: 'directory' },
  { name: 'bin/tool', content: 'x'.repeat(100_000), mode: 0o755 },
  { name: 'etc/motd', content: 'hello\n' },
];
const upper: CraftedEntry[] = [
  { name: 'etc/.wh.motd', content: '' },
  { name: 'app.txt', content: 'app' },
];

/** Every entry of the store, written through a stage that uses `cache`, as `name hex-of-content` lines. */
async function storeThroughStage(
  images: StoreImage[],
  options: Partial<StageOptions> & { cache: ConvertedLayerCache },
): Promise<{ lines: string[]; events: LayerProgress[] }> {
  const events: LayerProgress[] = [];
  const stage = stageLayers(images, {
    dir: join(dir.path, `stage-${Math.random()}`),
    ...options,
    onProgress: (e) => events.push(e),
  });
  const lines: string[] = [];
  // As in a .etch, where the base image streams first: the stager is done before the store starts.
  await stage.settled();
  try {
    for await (const { header, content } of dockerStoreEntries(images, { stage })) {
      const bytes =
        content === undefined
          ? ''
          : typeof content === 'string' || Buffer.isBuffer(content)
            ? Buffer.from(content)
            : await collect(content);
      lines.push(`${header.name} ${header.type ?? 'file'} ${JSON.stringify(header.mtime)} ${bytes.toString('hex')}`);
    }
  } finally {
    await stage.close();
  }
  return { lines, events };
}

const diffIdsOf = (image: StoreImage) =>
  (JSON.parse(image.config.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;

/** The cache key of layer `index` of `image`, stored under the default data root. */
function keyOf(image: StoreImage, index: number) {
  const diffIds = diffIdsOf(image);
  const chainId = chainIds(diffIds)[index]!;
  return { chainId, diffId: diffIds[index]!, diffPrefix: `docker/overlay2/${cacheIdFor(chainId)}/diff` };
}

/**
 * `img` with layer 0 out of `cache` and its blob held until `release()`: the stager converts it from the blob,
 * so it is still busy with layer 0 (`started` has resolved) when the store asks for a later layer.
 */
async function holdFirstLayer(
  img: StoreImage,
  cache: ConvertedLayerCache,
): Promise<{ image: StoreImage; started: Promise<void>; release: () => void }> {
  const first = cache.pathOf(keyOf(img, 0));
  await Promise.all([rm(first, { force: true }), rm(first.replace(/\.tar$/, '.json'), { force: true })]);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reading!: () => void;
  const started = new Promise<void>((resolve) => (reading = resolve));
  const layer = img.layers[0]!;
  const held = {
    ...layer,
    open: async (signal?: AbortSignal) => {
      const blob = await collect(await layer.open(signal));
      return (async function* () {
        reading();
        await gate;
        yield blob;
      })();
    },
  };
  return { image: { ...img, layers: [held, ...img.layers.slice(1)] }, started, release };
}

function recordingLogger(warnings: string[]): Logger {
  const none = () => {};
  // The stager puts the cause in `error` and the layer in `digest`: kept, so a test can tell whose it is.
  const extra = (fields: Record<string, unknown> | undefined, name: string) =>
    typeof fields?.[name] === 'string' ? ` ${name}=${fields[name]}` : '';
  return {
    debug: none,
    info: none,
    warn: (message: string, fields?: Record<string, unknown>) =>
      void warnings.push(`${message}${extra(fields, 'error')}${extra(fields, 'digest')}`),
  };
}

describe('ConvertedLayerCache', () => {
  it('gives a rebuild every layer from the cache: no blob opened, state cached, the same entries', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower, upper], opened)];
    const cold = await storeThroughStage(images, { cache });
    expect(opened, 'the cold run reads each blob once').toHaveLength(2);
    expect(await cache.usage()).toMatchObject({ layers: 2 });

    opened.length = 0;
    const warm = await storeThroughStage(images, { cache });
    expect(opened, 'blobs the warm run opened').toEqual([]);
    expect(warm.events.filter((e) => e.state === 'cached').map((e) => e.layer)).toEqual([0, 1]);
    expect(warm.events.some((e) => e.state === 'converting')).toBe(false);
    expect(warm.lines).toEqual(cold.lines);
  });

  it('takes a layer from the cache even when the store gets to it before the stager', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const img = await image('app', [lower, upper], opened);
    await storeThroughStage([img], { cache });
    const held = await holdFirstLayer(img, cache);
    opened.length = 0;
    const events: LayerProgress[] = [];
    const stage = stageLayers([held.image], { dir: dir.join('stage'), cache, onProgress: (e) => events.push(e) });
    try {
      await held.started;
      const staged = await stage.take(keyOf(img, 1).chainId);
      expect(staged?.converted.diffId, 'the diffID of layer 1, taken out of turn').toBe(keyOf(img, 1).diffId);
      expect(
        events.filter((e) => e.state === 'cached').map((e) => e.layer),
        'layers reported cached',
      ).toEqual([1]);
      expect(opened, 'blobs opened: layer 0 only').toEqual([img.layers[0]!.digest]);
    } finally {
      held.release();
      await stage.close();
    }
  });

  it('warns when the cache cannot be read for a layer the store takes first, and leaves it to convert', async () => {
    const opened: string[] = [];
    const img = await image('app', [lower, upper], opened);
    await storeThroughStage([img], { cache: new ConvertedLayerCache(dir.join('converted')) });
    // A cache whose disk fails on read (EIO): a real one cannot be made to, so restore throws as it would.
    const failing = new (class extends ConvertedLayerCache {
      override async restore(): Promise<undefined> {
        throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      }
    })(dir.join('converted'));
    const held = await holdFirstLayer(img, failing);
    const warnings: string[] = [];
    const stage = stageLayers([held.image], {
      dir: dir.join('stage'),
      cache: failing,
      logger: recordingLogger(warnings),
    });
    try {
      await held.started;
      expect(await stage.take(keyOf(img, 1).chainId), 'layer 1: left to convert inline').toBeUndefined();
      // Layer 0 is converted from its blob after the same failure: it warns too.
      expect(warnings.filter((w) => w.includes(img.layers[1]!.digest))).toEqual([
        `cannot read the cache of converted layers; converting the layer error=EIO: i/o error, read digest=${img.layers[1]!.digest}`,
      ]);
    } finally {
      held.release();
      await stage.close();
    }
  });

  it('says nothing about the cache when the run is aborted while a conversion is being kept', async () => {
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const controller = new AbortController();
    // Aborted just as the conversion is handed to the cache: the abort lands inside store().
    const cache = new (class extends ConvertedLayerCache {
      override async store(...args: Parameters<ConvertedLayerCache['store']>): Promise<void> {
        controller.abort();
        return super.store(...args);
      }
    })(dir.join('converted'));
    const warnings: string[] = [];
    const stage = stageLayers(images, {
      dir: dir.join('stage'),
      cache,
      signal: controller.signal,
      logger: recordingLogger(warnings),
    });
    await stage.settled();
    await stage.close();
    expect(controller.signal.aborted, 'the run was aborted').toBe(true);
    expect(warnings, 'warnings after an abort').toEqual([]);
    expect(await cache.usage(), 'what the aborted run kept').toEqual({ layers: 0, bytes: 0 });
  });

  it('removes a damaged entry (one byte flipped) and converts the layer again, naming layer and path', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const cold = await storeThroughStage(images, { cache });
    const [data] = (await readdir(cache.dir)).filter((n) => n.endsWith('.tar'));
    const handle = await open(join(cache.dir, data as string), 'r+');
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, 2000);
    await handle.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 2000);
    await handle.close();

    opened.length = 0;
    const warnings: string[] = [];
    const damaged = new ConvertedLayerCache(cache.dir, { logger: recordingLogger(warnings) });
    const rebuilt = await storeThroughStage(images, { cache: damaged });
    expect(rebuilt.lines).toEqual(cold.lines);
    expect(opened, 'the damaged layer is read from its blob again').toHaveLength(1);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(join(cache.dir, data as string));
    expect(warnings[0]).toContain(JSON.parse(images[0]!.config.toString()).rootfs.diff_ids[0]);
    expect(warnings[0]).toContain('etch cache clean');

    // Converted again, the entry is whole once more.
    opened.length = 0;
    expect((await storeThroughStage(images, { cache })).lines).toEqual(cold.lines);
    expect(opened).toEqual([]);
  });

  it('copies entries across disks when it cannot link them, checking them on the way, damage included', async () => {
    // /dev/shm is a tmpfs: the cache there, the stage on the temporary folder's disk, so nothing can be linked.
    const shm = await mkdtemp('/dev/shm/etch-converted-cache-');
    try {
      const [shmDevice, stageDevice] = await Promise.all([stat(shm), stat(dir.path)]).then((s) => s.map((i) => i.dev));
      expect(shmDevice, '/dev/shm and the temporary folder must be different file systems').not.toBe(stageDevice);
      const cache = new ConvertedLayerCache(join(shm, 'converted'));
      const opened: string[] = [];
      const images = [await image('app', [lower, upper], opened)];
      const cold = await storeThroughStage(images, { cache });
      opened.length = 0;
      expect((await storeThroughStage(images, { cache })).lines, 'entries of a warm run').toEqual(cold.lines);
      expect(opened, 'blobs a warm run opened').toEqual([]);

      const data = cache.pathOf(keyOf(images[0]!, 1));
      const handle = await open(data, 'r+');
      await handle.write(Buffer.from('!'), 0, 1, 700);
      await handle.close();
      const warnings: string[] = [];
      const damaged = new ConvertedLayerCache(cache.dir, { logger: recordingLogger(warnings) });
      expect((await storeThroughStage(images, { cache: damaged })).lines, 'entries after damage').toEqual(cold.lines);
      expect(opened, 'blobs read again after damage').toHaveLength(1);
      expect(warnings.join('\n'), 'warning').toContain(data);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  // link() takes the symlink itself, a read follows it: a read of /dev/zero never ends. (A FIFO, whose read
  // never starts, is tested through the CLI in @etch/dotetch's layer-cache.test.ts: making one needs mkfifo.)
  it(
    'treats a data file that is a symbolic link to /dev/zero as damaged, in bounded time',
    async () => {
      const cache = new ConvertedLayerCache(dir.join('converted'));
      const opened: string[] = [];
      const images = [await image('app', [lower], opened)];
      const cold = await storeThroughStage(images, { cache });
      const data = cache.pathOf(keyOf(images[0]!, 0));
      await rm(data);
      await symlink('/dev/zero', data);
      opened.length = 0;
      const warnings: string[] = [];
      // The stager's warnings too: one, from the cache, is all there should be.
      const logger = recordingLogger(warnings);
      const rebuilt = await storeThroughStage(images, {
        cache: new ConvertedLayerCache(cache.dir, { logger }),
        logger,
      });
      expect(rebuilt.lines).toEqual(cold.lines);
      expect(opened, 'the layer is read from its blob again').toHaveLength(1);
      expect(warnings, 'warnings').toHaveLength(1);
      expect(warnings[0]).toContain(data);
      expect(warnings[0]).toContain('symbolic link');
      // Replaced by a whole entry: the next run takes it.
      opened.length = 0;
      expect((await storeThroughStage(images, { cache })).lines).toEqual(cold.lines);
      expect(opened, 'blobs opened once the entry is whole again').toEqual([]);
    },
    // A read that never ends fails here instead of stalling the suite.
    20_000,
  );

  it('treats a damaged descriptor as no entry', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const cold = await storeThroughStage(images, { cache });
    const [descriptor] = (await readdir(cache.dir)).filter((n) => n.endsWith('.json'));
    const handle = await open(join(cache.dir, descriptor as string), 'r+');
    const char = Buffer.alloc(1);
    await handle.read(char, 0, 1, 40);
    await handle.write(Buffer.from(char.toString() === 'a' ? 'b' : 'a'), 0, 1, 40);
    await handle.close();
    opened.length = 0;
    const warnings: string[] = [];
    const rebuilt = await storeThroughStage(images, {
      cache: new ConvertedLayerCache(cache.dir, { logger: recordingLogger(warnings) }),
    });
    expect(rebuilt.lines).toEqual(cold.lines);
    expect(opened).toHaveLength(1);
    expect(warnings[0]).toContain('descriptor');
  });

  it('refuses an entry whose stage tar writes outside its layer, even with checksums that agree', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const diffId = (JSON.parse(images[0]!.config.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids[0]!;
    // A single-layer chain: its chain ID is its diffID.
    const key = { diffId, diffPrefix: `docker/overlay2/${cacheIdFor(diffId)}/diff` };
    const planted = dir.join('planted.tar');
    await writeFile(planted, await craftTar([{ name: 'docker/image/overlay2/repositories.json', content: '{}' }]));
    const converted = { diffId, size: 2, entries: 1, tarSplit: gzipSync('') };
    await cache.store(key, planted, { converted, fileBytes: 2, spooled: 4096 });
    const error = await storeThroughStage(images, { cache }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_UNSAFE_PATH'), String(error)).toBe(true);
    expect((error as Error).message).toContain('docker/image/overlay2/repositories.json');
  });

  it('refuses such an entry when the staged layer is appended to the pack as it is, before its bytes', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const diffId = diffIdsOf(images[0]!)[0]!;
    const key = { diffId, diffPrefix: `inject/6/docker/overlay2/${cacheIdFor(diffId)}/diff` };
    const planted = dir.join('planted.tar');
    const escape = 'inject/6/docker/image/overlay2/repositories.json';
    await writeFile(planted, await craftTar([{ name: escape, content: '{}' }]));
    const converted = { diffId, size: 2, entries: 1, tarSplit: gzipSync('') };
    await cache.store(key, planted, { converted, fileBytes: 2, spooled: 4096 });
    const stage = stageLayers(images, { dir: dir.join('stage'), cache, namePrefix: 'inject/6' });
    await stage.settled();
    const pack = createTarPack();
    pack.on('error', () => {}); // destroyed with the error the store rejects with
    // What reached the pack's reader before it was destroyed.
    const parts: Buffer[] = [];
    pack.on('data', (chunk: unknown) => parts.push(chunk as Buffer));
    const write = promisePacker(pack, 'inject/6');
    const error = await (async () => {
      for await (const { header, content } of dockerStoreEntries(images, {
        stage,
        appendTo: { pack, prefix: 'inject/6' },
      }))
        await write(header, content);
    })()
      .catch((e: unknown) => e)
      .finally(async () => stage.close());
    expect(opened, 'blobs opened').toEqual([]);
    expect(isEtchError(error, 'ETCH_UNSAFE_PATH'), String(error)).toBe(true);
    expect((error as Error).message).toContain(escape);
    expect(Buffer.concat(parts).length, 'bytes before the layer (its directories)').toBeGreaterThan(0);
    expect(Buffer.concat(parts).includes(Buffer.from('repositories.json')), 'the refused entry in the output').toBe(
      false,
    );
  });

  it('keeps nothing of a conversion aborted part-way', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const img = await image('app', [lower], opened);
    const blob = gzipSync(await craftTar(lower));
    const controller = new AbortController();
    let reading!: () => void;
    const started = new Promise<void>((resolve) => (reading = resolve));
    const stalled: StoreImage = {
      ...img,
      layers: [
        {
          ...img.layers[0]!,
          open: async (signal?: AbortSignal) =>
            (async function* () {
              yield blob.subarray(0, blob.length >> 1);
              reading();
              await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason as Error)));
            })(),
        },
      ],
    };
    const stage = stageLayers([stalled], { dir: dir.join('stage'), cache, signal: controller.signal });
    await started;
    controller.abort();
    await stage.close();
    expect(await readdir(cache.dir).catch(() => [])).toEqual([]);
    expect(await cache.usage()).toEqual({ layers: 0, bytes: 0 });
  });

  it('never takes what a killed run left (a temporary file, a data file without descriptor), and clears it', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower], opened)];
    const diffId = (JSON.parse(images[0]!.config.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids[0]!;
    const data = cache.pathOf({ diffId, diffPrefix: `docker/overlay2/${cacheIdFor(diffId)}/diff` });
    // A process that has exited: its pid names the temporary file a killed writer leaves.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const partial = join(
      cache.dir,
      `.${basename(data)}.${hostname().replace(/[^A-Za-z0-9.-]/g, '_')}-${dead}-${'0'.repeat(12)}.partial`,
    );
    await mkdir(cache.dir, { recursive: true });
    await writeFile(partial, 'half a layer');
    await writeFile(data, 'half a layer');
    const built = await storeThroughStage(images, { cache });
    expect(opened, 'the layer is converted from its blob').toHaveLength(1);
    expect(built.lines.some((line) => line.includes('/diff/bin/tool '))).toBe(true);
    expect((await readdir(cache.dir)).sort()).toEqual(
      [basename(data).replace(/\.tar$/, '.json'), basename(data)].sort(),
    );
  });

  it('leaves one whole entry per layer when two runs convert the same layers at once', async () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const opened: string[] = [];
    const images = [await image('app', [lower, upper], opened)];
    const [a, b] = await Promise.all([storeThroughStage(images, { cache }), storeThroughStage(images, { cache })]);
    expect(b.lines).toEqual(a.lines);
    expect((await readdir(cache.dir)).map((n) => n.replace(/^[0-9a-f]{64}/, 'KEY')).sort()).toEqual([
      'KEY.json',
      'KEY.json',
      'KEY.tar',
      'KEY.tar',
    ]);
    opened.length = 0;
    expect((await storeThroughStage(images, { cache })).lines).toEqual(a.lines);
    expect(opened).toEqual([]);
  });

  it('evicts the least recently used entries beyond its limit', async () => {
    const opened: string[] = [];
    const first = [await image('first', [lower], opened)];
    const second = [await image('second', [[{ name: 'other.bin', content: 'y'.repeat(100_000) }]], opened)];
    const roomy = new ConvertedLayerCache(dir.join('converted'));
    await storeThroughStage(first, { cache: roomy });
    const { bytes } = await roomy.usage();
    const [described] = (await readdir(roomy.dir)).filter((n) => n.endsWith('.json'));
    await utimes(
      join(roomy.dir, described as string),
      new Date(Date.now() - 3600_000),
      new Date(Date.now() - 3600_000),
    );
    // Room for one layer: storing the second pushes the first, used longer ago, out.
    const tight = new ConvertedLayerCache(roomy.dir, { maxBytes: Math.ceil(bytes * 1.5) });
    await storeThroughStage(second, { cache: tight });
    expect(await tight.usage()).toMatchObject({ layers: 1 });
    opened.length = 0;
    await storeThroughStage(second, { cache: tight });
    expect(opened, 'the kept layer is the second image').toEqual([]);
    await storeThroughStage(first, { cache: roomy });
    expect(opened, 'the first was evicted').toHaveLength(1);
  });

  it('keys an entry by everything that changes its bytes', () => {
    const cache = new ConvertedLayerCache(dir.join('converted'));
    const key = { diffId: `sha256:${'a'.repeat(64)}`, diffPrefix: 'docker/overlay2/abc/diff' };
    expect(cache.keyOf(key)).toBe(cache.keyOf({ ...key }));
    expect(cache.keyOf({ ...key, diffId: `sha256:${'b'.repeat(64)}` })).not.toBe(cache.keyOf(key));
    expect(cache.keyOf({ ...key, diffPrefix: 'balena/overlay2/abc/diff' })).not.toBe(cache.keyOf(key));
  });
});
