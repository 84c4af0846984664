import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, stat, symlink, writeFile, utimes, chmod } from 'node:fs/promises';
import { PassThrough, Readable, Writable } from 'node:stream';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { collect, createTempDir, liveMemory, patternStream, rejectionOf, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { EtchError, isEtchError } from '@etch/format';
import { BufferPool, readFileChunks } from '@etch/disk';
import { promisePacker, readEtch, type EtchEntry } from '@etch/tar';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { craftTar } from '@etch/test-utils';
import { closeEtchStream, prepareEtchStream, startEtchStream, streamDockerAssets, streamFiles } from './lifecycle.js';
import { createEtch, type CreateEtchOptions } from './create.js';
import { temporaryPathFor, writeEtchFile } from './write-file.js';
import { baseImageFromFile } from './base-image-file.js';
import { walkDirectory } from './directory-source.js';
import type { EtchProgress } from './progress.js';
import type { StoreImage } from '@etch/docker-store';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir();
});
afterEach(() => dir.remove());

async function readBack(path: string): Promise<{ entry: EtchEntry; content?: Buffer }[]> {
  const out = [];
  for await (const entry of readEtch(createReadStream(path))) {
    const stream = 'stream' in entry ? entry.stream : undefined;
    out.push({ entry, content: stream ? await collect(stream) : undefined });
  }
  return out;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

const image = (size = 10_000) => ({ name: 'disk.img', size, stream: patternStream(size) });

describe('the original lifecycle', () => {
  it('prepare → start → streamFiles → close gives a valid .etch that GNU tar reads', async () => {
    const out = dir.join('seed.etch');
    const pack = await prepareEtchStream();
    const done = pipeline(pack as unknown as Readable, createWriteStream(out));
    await startEtchStream(pack, patternStream(5000), 5000, 'balena.img');
    await streamFiles(pack, 1, [{ header: { name: 'config.json', mode: 0o600 }, content: '{"a":1}' }]);
    // Queued but not awaited on purpose: closeEtchStream must wait for queued entries.
    const write = promisePacker(pack, 'inject/1');
    void write({ name: 'splash/logo.png', size: 3 }, Readable.from([Buffer.from('PNG')]));
    await closeEtchStream(pack);
    await done;
    const entries = await readBack(out);
    expect(entries.map(({ entry }) => (entry.kind === 'inject' ? entry.path : entry.kind))).toEqual([
      'version',
      'base-image',
      'config.json',
      'splash/logo.png',
    ]);
    expect(entries[2]?.entry).toMatchObject({ partition: 1, mode: 0o600 });
    expect(entries[2]?.content?.toString()).toBe('{"a":1}');
    const listing = (await run('tar', ['-tf', out])).stdout.trim().split('\n');
    expect(listing).toEqual(['VERSION', 'balena.img', 'inject/1/config.json', 'inject/1/splash/logo.png']);
    expect((await run('tar', ['-xOf', out, 'VERSION'])).stdout).toBe('1.0');
  });

  it('streamDockerAssets writes an engine store into the data partition and reports what it stored', async () => {
    const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    const tar = await craftTar([{ name: 'hello.txt', content: 'hi\n' }]);
    const blob = gzipSync(tar);
    const config = Buffer.from(
      JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [sha(tar)] } }),
    );
    const out = dir.join('docker.etch');
    const pack = await prepareEtchStream();
    const done = pipeline(pack as unknown as Readable, createWriteStream(out));
    await startEtchStream(pack, patternStream(5000), 5000, 'balena.img');
    const stored = await streamDockerAssets(pack, 6, [
      {
        config,
        layers: [{ digest: sha(blob), size: blob.length, open: async () => Readable.from([blob]) }],
        names: [{ repository: 'hello', tag: 'v1' }],
        sourceRepository: 'docker.io/library/hello',
      },
    ]);
    await closeEtchStream(pack);
    await done;
    expect(stored.map((s) => s.imageId)).toEqual([sha(config)]);
    const entries = await readBack(out);
    const names = entries.flatMap(({ entry }) => (entry.kind === 'inject' ? [`${entry.partition}/${entry.path}`] : []));
    expect(names).toContain(`6/docker/image/overlay2/imagedb/content/sha256/${sha(config).slice(7)}`);
    const repositories = entries.find(
      ({ entry }) => entry.kind === 'inject' && entry.path === 'docker/image/overlay2/repositories.json',
    );
    expect(JSON.parse(repositories?.content?.toString() ?? '{}')).toEqual({
      Repositories: { hello: { 'hello:v1': sha(config) } },
    });
    expect(names.filter((n) => n.endsWith('/diff/hello.txt'))).toHaveLength(1);
  });

  it('refuses a base image name that is not an image', async () => {
    const pack = await prepareEtchStream();
    await expect(startEtchStream(pack, Readable.from([]), 0, 'notes.txt')).rejects.toMatchObject({
      code: 'ETCH_BAD_ENTRY',
    });
  });
});

describe('createEtch', () => {
  async function makeTree(): Promise<string> {
    const root = dir.join('files');
    await mkdir(`${root}/sub/empty`, { recursive: true });
    await writeFile(`${root}/sub/a.txt`, 'alpha');
    await link(`${root}/sub/a.txt`, `${root}/sub/a-hard.txt`);
    await symlink('/etc/hostname', `${root}/sub/abs-link`);
    await writeFile(`${root}/top.sh`, '#!/bin/sh\n');
    await chmod(`${root}/top.sh`, 0o4750);
    await utimes(`${root}/top.sh`, new Date('2021-05-06T07:08:09Z'), new Date('2021-05-06T07:08:09Z'));
    return root;
  }

  it('writes base image and local folders, reporting progress', async () => {
    const root = await makeTree();
    const events: EtchProgress[] = [];
    const out = dir.join('out.etch');
    const result = await writeEtchFile(out, {
      base: image(300_000),
      inject: [
        { kind: 'directory', partition: 6, path: root },
        { kind: 'directory', partition: 1, path: root, dest: '/extra' },
      ],
      onProgress: (event) => events.push(event),
    });
    expect(result.baseImage).toEqual({ name: 'disk.img', size: 300_000 });
    expect(result.partitions[6]).toEqual({ entries: 6, bytes: 15 });
    expect(result.partitions[1]).toEqual({ entries: 7, bytes: 15 });
    expect(result.bytesWritten).toBe((await stat(out)).size);
    const baseEvents = events.filter((e) => e.phase === 'base-image');
    expect(baseEvents.at(-1)).toMatchObject({ bytes: 300_000, total: 300_000 });
    expect(events.some((e) => e.phase === 'inject' && e.path === 'sub/a.txt')).toBe(true);

    const entries = await readBack(out);
    const p6 = entries
      .filter(({ entry }) => entry.kind === 'inject' && entry.partition === 6)
      .map(({ entry }) => entry);
    // Parents first, names sorted: the same tree always gives the same archive.
    expect(p6.map((e) => (e.kind === 'inject' ? `${e.type}:${e.path}` : ''))).toEqual([
      'directory:sub',
      'file:top.sh',
      'file:sub/a-hard.txt',
      'link:sub/a.txt',
      'symlink:sub/abs-link',
      'directory:sub/empty',
    ]);
    const byPath = new Map(p6.map((e) => [e.kind === 'inject' ? e.path : '', e]));
    expect(byPath.get('sub/a.txt')).toMatchObject({ type: 'link', hardlinkTarget: 'sub/a-hard.txt' });
    expect(byPath.get('sub/abs-link')).toMatchObject({ symlinkTarget: '/etc/hostname' });
    expect(byPath.get('top.sh')).toMatchObject({ mode: 0o4750, mtime: new Date('2021-05-06T07:08:09Z') });
    expect(
      entries.some(
        ({ entry }) => entry.kind === 'inject' && entry.partition === 1 && entry.path === 'extra/sub/a-hard.txt',
      ),
    ).toBe(true);
    expect(await readdir(dir.path)).toEqual(['files', 'out.etch']);
  });

  it('announces in requirements.json (format 1.1) what each partition receives, before the first inject entry', async () => {
    const root = await makeTree();
    const out = dir.join('req.etch');
    const result = await writeEtchFile(out, {
      base: image(10_000),
      inject: [
        { kind: 'directory', partition: 6, path: root },
        { kind: 'entries', partition: 1, entries: [{ header: { name: 'config.json' }, content: '{"a":1}' }] },
      ],
      requirements: true,
    });
    expect(result.version).toBe('1.1');
    // What the partitions actually got: the announcement must cover it.
    expect(result.requirements).toEqual({
      partitions: { '6': { bytes: 15, entries: 6 }, '1': { bytes: 7, entries: 1 } },
    });
    const entries = await readBack(out);
    expect(entries.map(({ entry }) => entry.kind).slice(0, 4)).toEqual([
      'version',
      'base-image',
      'requirements',
      'inject',
    ]);
    expect((await run('tar', ['-xOf', out, 'VERSION'])).stdout).toBe('1.1');
    const oneShot = await writeEtchFile(dir.join('x.etch'), {
      base: image(10),
      inject: [{ kind: 'entries', partition: 1, entries: (async function* () {})() }],
      requirements: true,
    }).catch((e: unknown) => e);
    expect(oneShot).toMatchObject({ code: 'ETCH_USAGE' });
    expect((await readdir(dir.path)).filter((n) => n.startsWith('x.etch') || n.includes('.x.etch'))).toEqual([]);
  });

  it.each(['gzip', 'zstd'] as const)(
    'compresses with %s so that the standard tool and readEtch read it',
    async (compression) => {
      const out = dir.join(`out.etch`);
      await writeEtchFile(out, {
        base: image(50_000),
        compression,
        inject: [{ kind: 'entries', partition: 2, entries: [{ header: { name: 'x' }, content: 'y' }] }],
      });
      const tool = compression === 'gzip' ? ['gzip', ['-dc', out]] : ['zstd', ['-dc', out]];
      const tarball = (await run(tool[0] as string, tool[1] as string[])).stdoutBuffer;
      await writeFile(dir.join('plain.tar'), tarball);
      expect((await run('tar', ['-tf', dir.join('plain.tar')])).stdout).toContain('inject/2/x');
      const entries = await readBack(out);
      expect(entries[0]?.entry).toMatchObject({ kind: 'version', compression });
    },
  );

  it('flushes a large .etch to disk while it is written, and closes what it opened for that', async () => {
    const probe = await open(dir.join('probe'), 'w');
    const FileHandlePrototype = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = vi.spyOn(FileHandlePrototype, 'datasync');
    const fds = async () => (await readdir('/proc/self/fd')).length;
    const before = await fds();
    const size = 300 * 1024 * 1024;
    try {
      const out = dir.join('big.etch');
      // A slow producer, so the 100 ms poll sees the file grow.
      const slow = Readable.from(
        (async function* () {
          for await (const chunk of patternStream(size, 4 * 1024 * 1024)) {
            await new Promise((resolve) => setTimeout(resolve, 5));
            yield chunk as Buffer;
          }
        })(),
      );
      await writeEtchFile(out, { base: { name: 'disk.img', size, stream: slow } });
      expect((await stat(out)).size).toBeGreaterThan(size);
      expect(datasync).toHaveBeenCalled();
    } finally {
      datasync.mockRestore();
    }
    expect(await fds()).toBe(before);
  });

  it('copies the base image through a buffer pool, reusing a few buffers, byte for byte', async () => {
    const size = 64 * 1024 * 1024 + 123;
    await pipeline(patternStream(size), createWriteStream(dir.join('disk.img')));
    const pool = new BufferPool();
    const pooled = Readable.from(readFileChunks(dir.join('disk.img'), pool), { objectMode: false });
    await writeEtchFile(dir.join('pooled.etch'), {
      base: { name: 'disk.img', size, stream: pooled },
      bufferPool: pool,
    });
    await run('sh', ['-c', `tar -xOf "$1" disk.img | cmp - "$2"`, 'sh', dir.join('pooled.etch'), dir.join('disk.img')]);
    // 257 chunks of 256 KiB went through; without reuse each would be a new buffer.
    expect(pool.allocated).toBeLessThan(40);
  });

  it('fails with ETCH_IO and leaves nothing when the disk fills up', async () => {
    const small = dir.join('small');
    await mkdir(small);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small]);
    try {
      const error = await writeEtchFile(join(small, 'out.etch'), { base: image(8 * 1024 * 1024) }).catch(
        (e: unknown) => e,
      );
      expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
      expect(String((error as Error).message)).toMatch(/ENOSPC|no space/i);
      expect(await readdir(small)).toEqual([]);
    } finally {
      await run('umount', [small]);
    }
  });

  it('removes the partial files killed runs of this host left, and not those of live runs or other hosts', async () => {
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
    // A pid above Linux's pid_max: that run is certainly gone.
    const left = {
      dead: `.old.etch.${host}-999999999-aaaaaaaaaaaa.partial`,
      live: `.old.etch.${host}-${process.pid}-bbbbbbbbbbbb.partial`,
      other: '.old.etch.another-host-999999999-cccccccccccc.partial',
      unrelated: '.notes.partial',
    };
    for (const name of Object.values(left)) await writeFile(dir.join(name), 'x');
    await writeEtchFile(dir.join('new.etch'), { base: image() });
    expect((await readdir(dir.path)).sort()).toEqual([left.live, left.other, left.unrelated, 'new.etch'].sort());
    expect(temporaryPathFor(dir.join('x.etch'))).toMatch(
      new RegExp(`/\\.x\\.etch\\.${host}-${process.pid}-[0-9a-f]{12}\\.partial$`),
    );
  });

  it('leaves no file behind when the base image is shorter than declared', async () => {
    const out = dir.join('short.etch');
    const error = await writeEtchFile(out, {
      base: { name: 'disk.img', size: 10_000, stream: patternStream(9_000) },
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_SIZE_MISMATCH')).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
  });

  it('leaves no file behind when aborted mid-way, and rejects with ETCH_ABORTED', async () => {
    const out = dir.join('aborted.etch');
    const controller = new AbortController();
    const size = 2 * 1024 * 1024 * 1024;
    const pending = writeEtchFile(out, {
      base: { name: 'disk.img', size, stream: patternStream(size) },
      signal: controller.signal,
      onProgress: (event) => {
        if (event.phase === 'base-image' && event.bytes > 8 * 1024 * 1024) controller.abort();
      },
    });
    const error = await pending.catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED')).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
  });

  it('fails with the output error when the destination breaks', async () => {
    const broken = new Writable({
      write(_chunk, _enc, cb) {
        cb(new Error('disk full'));
      },
    });
    const error = await createEtch({ base: image(100_000), output: broken }).catch((e: unknown) => e);
    expect(isEtchError(error)).toBe(true);
    expect(String((error as Error).message)).toContain('disk full');
  });

  const sha = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
  async function storeImage(files: Record<string, string>, tamper = false): Promise<StoreImage> {
    const tar = await craftTar(Object.entries(files).map(([name, content]) => ({ name, content })));
    const blob = gzipSync(tar);
    const served = tamper ? gzipSync(await craftTar([{ name: 'evil', content: 'x' }])) : blob;
    const config = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(tar)] } }),
    );
    return {
      config,
      configDigest: sha(config),
      layers: [{ digest: sha(blob), size: blob.length, open: async () => Readable.from([served]) }],
      names: [{ repository: 'app', tag: 'v1' }],
      sourceRepository: 'registry.test/app',
    };
  }

  it('converts layers ahead while the base image streams: the same .etch, requirements from the conversion, the stage removed', async () => {
    const images = [
      await storeImage({ 'a.txt': 'alpha', 'bin/tool': 'x'.repeat(5000) }),
      await storeImage({ 'c.txt': 'gamma' }),
    ];
    const write = (name: string, stage?: { dir: string; maxBytes?: number }) =>
      writeEtchFile(dir.join(name), {
        base: image(200_000),
        images: { partition: 6, images, ...(stage ? { stage } : {}) },
        requirements: true,
      });
    const plain = await write('plain.etch');
    const stageDir = dir.join('stage');
    const events: EtchProgress[] = [];
    const staged = await writeEtchFile(dir.join('staged.etch'), {
      base: image(200_000),
      images: { partition: 6, images, stage: { dir: stageDir } },
      requirements: true,
      onProgress: (e) => events.push(e),
    });
    expect(staged.requirements).toEqual(plain.requirements);
    expect(staged.images).toEqual(plain.images);
    const layerPaths = async (name: string) =>
      (await readBack(dir.join(name))).flatMap(({ entry, content }) =>
        entry.kind === 'inject' && entry.path.includes('/diff/')
          ? [`${entry.path} ${content?.toString('hex') ?? ''}`]
          : [],
      );
    expect(await layerPaths('staged.etch')).toEqual(await layerPaths('plain.etch'));
    expect(events.some((e) => e.phase === 'layer' && e.state === 'converting')).toBe(true);
    expect(await readdir(dir.path)).toEqual(['plain.etch', 'staged.etch']);
  });

  it('takes images still being resolved: the base image streams meanwhile, and a failed resolution stops the run', async () => {
    const images = [await storeImage({ 'a.txt': 'alpha' })];
    let baseDone = false;
    const resolvedLate = (async () => {
      await until(() => baseDone);
      return { partition: 6, images, stage: { dir: dir.join('stage') } };
    })();
    const result = await writeEtchFile(dir.join('late.etch'), {
      base: image(100_000),
      images: resolvedLate,
      requirements: true,
      onProgress: (e) => {
        if (e.phase === 'base-image' && e.bytes === e.total) baseDone = true;
      },
    });
    expect(result.images.map((i) => i.names)).toEqual([[{ repository: 'app', tag: 'v1' }]]);
    expect(result.requirements?.partitions['6']?.bytes).toBeGreaterThan(5);

    // A base image that would never finish: only the failed resolution ends this run.
    const endless = new Readable({ read() {} });
    endless.push(Buffer.alloc(4096));
    const unknown = new EtchError('ETCH_NOT_FOUND', 'No such image: registry.test/nope:1.');
    const error = await writeEtchFile(dir.join('failed.etch'), {
      base: { name: 'disk.img', size: 1024 * 1024 * 1024, stream: endless },
      images: new Promise((_resolve, reject) => setTimeout(() => reject(unknown), 50)),
    }).catch((e: unknown) => e);
    expect(error).toBe(unknown);
    expect(await readdir(dir.path)).toEqual(['late.etch']);
  });

  it('fails cleanly, with nothing unhandled, open or left behind, when it cannot even start', async () => {
    const fds = async () => (await readdir('/proc/self/fd')).length;
    const before = await fds();
    const unknown = new EtchError('ETCH_NOT_FOUND', 'No such image.');
    // The output folder does not exist: the images' rejection must still count as handled.
    const noFolder = await writeEtchFile(dir.join('missing', 'out.etch'), {
      base: image(10),
      images: Promise.reject(unknown),
    }).catch((e: unknown) => e);
    expect(isEtchError(noFolder, 'ETCH_IO')).toBe(true);
    // A bad partition is refused before writing: the temporary file is closed and removed.
    const badPartition = await writeEtchFile(dir.join('out.etch'), {
      base: image(10),
      inject: [{ kind: 'entries', partition: 0, entries: [] }],
    }).catch((e: unknown) => e);
    expect(isEtchError(badPartition, 'ETCH_BAD_ENTRY')).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
    expect(await fds()).toBe(before);
  });

  it('closes the base image when images fail to resolve before it reaches the archive', async () => {
    const unknown = new EtchError('ETCH_NOT_FOUND', 'No such image.');
    const stream = patternStream(10_000_000);
    const images = new Promise<never>((_resolve, reject) => setTimeout(() => reject(unknown), 20));
    const error = await writeEtchFile(dir.join('out.etch'), {
      // Slow to open (a zip scan, a URL): it opens only once the resolution has failed.
      base: async () => {
        await rejectionOf(images);
        return { name: 'disk.img', size: 10_000_000, stream };
      },
      images,
    }).catch((e: unknown) => e);
    expect(error).toBe(unknown);
    expect(stream.destroyed).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
    // Refused by its name: closed as well.
    const badName = patternStream(1000);
    expect(
      isEtchError(
        await writeEtchFile(dir.join('out.etch'), { base: { name: 'disk.txt', size: 1000, stream: badName } }).catch(
          (e: unknown) => e,
        ),
      ),
    ).toBe(true);
    expect(badName.destroyed).toBe(true);
  });

  it('reports the corrupt layer itself when it fails ahead of time after the base image was written', async () => {
    const corrupt = await storeImage({ 'a.txt': 'alpha' }, true);
    const layer = corrupt.layers[0] as StoreImage['layers'][number];
    // Slow to open: the base image is written before the layer fails.
    let baseDone = false;
    const slow: StoreImage = {
      ...corrupt,
      layers: [{ ...layer, open: async () => (await until(() => baseDone), layer.open()) }],
    };
    const error = await writeEtchFile(dir.join('out.etch'), {
      base: image(10_000),
      images: { partition: 6, images: [slow], stage: { dir: dir.join('stage') } },
      requirements: true,
      onProgress: (e) => {
        if (e.phase === 'base-image' && e.bytes === e.total) baseDone = true;
      },
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
  });

  it('fails while the base image still streams when a layer converted ahead is corrupt, and leaves nothing', async () => {
    const images = [await storeImage({ 'a.txt': 'alpha' }, true)];
    // A base image that would never finish: only failing early ends this run.
    const endless = new Readable({ read() {} });
    endless.push(Buffer.alloc(4096));
    const error = await writeEtchFile(dir.join('out.etch'), {
      base: { name: 'disk.img', size: 1024 * 1024 * 1024, stream: endless },
      images: { partition: 6, images, stage: { dir: dir.join('stage') } },
      requirements: true,
    }).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
    expect(await readdir(dir.path)).toEqual([]);
  });

  it('streams a large base image in bounded memory', async () => {
    // Measured as what stays referenced (after a full collection, every 32 MiB), not as RSS: this source
    // allocates a fresh 1 MiB buffer per chunk, and how many dead ones RSS still counts is V8's choice
    // (Node 24 collects them later than 22: RSS grew 110-150 MB against 60, while 20-37 MB stayed referenced on both).
    const size = 768 * 1024 * 1024;
    const sink = new PassThrough();
    let seen = 0;
    sink.on('data', (chunk: Buffer) => {
      seen += chunk.length;
    });
    const before = liveMemory();
    let peak = before;
    let events = 0;
    const options: CreateEtchOptions = {
      base: { name: 'big.img', size, stream: patternStream(size, 1024 * 1024) },
      output: sink,
      onProgress: () => {
        events += 1;
        if (events % 32 === 0) peak = Math.max(peak, liveMemory());
      },
    };
    await createEtch(options);
    expect(seen, 'bytes written').toBeGreaterThan(size);
    expect(events, 'progress events (memory samples x32)').toBeGreaterThan(64);
    expect(peak - before, 'growth of referenced memory while streaming 768 MiB').toBeLessThan(64 * 1024 * 1024);
  });
});

describe('walkDirectory', () => {
  it('refuses FIFOs with a message naming the file', async () => {
    await mkdir(dir.join('t'));
    await run('mkfifo', [dir.join('t', 'pipe')]);
    const error = await (async () => {
      for await (const entry of walkDirectory(dir.join('t'))) void entry;
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ENTRY')).toBe(true);
    expect((error as Error).message).toContain('pipe');
  });

  it('reports a missing folder as ETCH_IO', async () => {
    const error = await (async () => {
      for await (const entry of walkDirectory(dir.join('nope'))) void entry;
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_IO')).toBe(true);
  });
});

describe('baseImageFromFile', () => {
  it('opens a local image with its size and refuses non-image names', async () => {
    await writeFile(dir.join('a.img'), Buffer.alloc(1234));
    const base = await baseImageFromFile(dir.join('a.img'));
    expect(base).toMatchObject({ name: 'a.img', size: 1234 });
    base.stream.destroy();
    await writeFile(dir.join('a.txt'), 'x');
    await expect(baseImageFromFile(dir.join('a.txt'))).rejects.toMatchObject({ code: 'ETCH_BAD_ENTRY' });
    await expect(baseImageFromFile(dir.join('missing.img'))).rejects.toMatchObject({ code: 'ETCH_IO' });
  });
});
