import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, craftTar, createTempDir, type CraftedEntry, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { EtchError, isEtchError } from '@etch/format';
import { promisePacker, readEtch, whenPackerIdle, type EtchInjectEntry } from '@etch/tar';
import { dockerStoreEntries, type StoreImage, type StoredImage } from './store.js';
import { chainIds } from './ids.js';
import { stageLayers } from './layer-stager.js';
import { measureStore } from './measure.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir();
});
afterAll(() => dir.remove());

/** A folder of its own inside the suite's temp folder (removed with it), for one stage. */
const stageParent = () => mkdtemp(dir.join('stage-'));

const sha = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface Layer {
  tar: Buffer;
  blob: Buffer;
}
async function layer(entries: CraftedEntry[], compress = true): Promise<Layer> {
  const tar = await craftTar(entries);
  return { tar, blob: compress ? gzipSync(tar) : tar };
}

function image(layers: Layer[], names: StoreImage['names'], extra: Record<string, unknown> = {}): StoreImage {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha(l.tar)) },
      ...extra,
    }),
  );
  return {
    config,
    configDigest: sha(config),
    layers: layers.map((l) => ({
      digest: sha(l.blob),
      size: l.blob.length,
      open: async () => Readable.from([l.blob]),
    })),
    names,
    sourceRepository: `127.0.0.1:5000/${names[0]?.repository ?? 'x'}`,
  };
}

interface Result {
  entries: { entry: EtchInjectEntry; content?: Buffer }[];
  byPath: Map<string, { entry: EtchInjectEntry; content?: Buffer }>;
  stored: StoredImage[];
  /** The .etch itself. */
  bytes: Buffer;
  /** What staged layers appended to the pack (with `append`). */
  appended: { entries: number; fileBytes: number }[];
}

/**
 * Writes the store into a real .etch (so every format rule is enforced by readEtch) and reads it back. With
 * `append`, staged layers are appended to the pack as they are (the stage must be made with `inject/6`).
 */
async function preload(
  images: StoreImage[],
  options: Parameters<typeof dockerStoreEntries>[1] = {},
  append = false,
): Promise<Result> {
  const pack = tarPack();
  const out = collect(pack);
  const appended: Result['appended'] = [];
  if (append)
    options = { ...options, appendTo: { pack, prefix: 'inject/6', onAppended: (added) => appended.push(added) } };
  // A fixed time for entries without one, so two runs give the same bytes.
  const write = promisePacker(pack, undefined, { mtime: new Date(0) });
  await write({ name: 'VERSION' }, '1.0');
  await write({ name: 'disk.img' }, 'x');
  const into = promisePacker(pack, 'inject/6', { mtime: new Date(0) });
  const generator = dockerStoreEntries(images, options);
  let next = await generator.next();
  while (!next.done) {
    await into(next.value.header, next.value.content);
    next = await generator.next();
  }
  await whenPackerIdle(pack);
  pack.finalize();
  const entries: Result['entries'] = [];
  const bytes = await out;
  for await (const entry of readEtch(Readable.from([bytes]))) {
    if (entry.kind !== 'inject') continue;
    entries.push({ entry, content: entry.stream ? await collect(entry.stream) : undefined });
  }
  return { entries, byPath: new Map(entries.map((e) => [e.entry.path, e])), stored: next.value, bytes, appended };
}

// Layer content keeps its mtimes; the store's own files are stamped with the time of the run.
const summary = (r: Result) =>
  r.entries.map(
    (e) =>
      `${e.entry.type} ${e.entry.path} ${e.entry.mode} ${e.entry.uid}:${e.entry.gid} ${e.entry.path.includes('/diff/') ? e.entry.mtime.getTime() : ''} ${e.entry.symlinkTarget ?? ''} ${e.entry.hardlinkTarget ?? ''} ${[...e.entry.xattrs].map(([k, v]) => `${k}=${v.toString('hex')}`).join(',')} ${e.content?.toString('hex') ?? ''}`,
  );

const text = (r: Result, path: string) => r.byPath.get(path)?.content?.toString();

// The lab layers of the reference notes: their `size` values were read off a real dockerd (45 and 9).
const labLower: CraftedEntry[] = [
  { name: 'bin/', type: 'directory', mode: 0o755 },
  { name: 'bin/tool', content: 'x'.repeat(24), mode: 0o4755, uid: 1000, gid: 1000 },
  { name: 'bin/tool-hard', type: 'link', linkname: 'bin/tool' },
  { name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox' },
  { name: 'etc/', type: 'directory' },
  { name: 'etc/a', content: '12345' },
  { name: 'etc/b', content: '1' },
  { name: 'etc/d', content: '1' },
  { name: 'del/', type: 'directory' },
  { name: 'del/x', content: '1' },
  { name: 'opq/', type: 'directory' },
  { name: 'opq/old', content: '1' },
  { name: `long/${'n'.repeat(150)}/ünïcödé-名前.txt`, content: '' },
  { name: 'caps', content: '', pax: { 'SCHILY.xattr.user.test': 'v1' } },
];
const labUpper: CraftedEntry[] = [
  { name: 'del/', type: 'directory' },
  { name: 'del/.wh.x', content: '' },
  { name: 'opq/', type: 'directory', mode: 0o750 },
  { name: 'opq/.wh..wh..opq', content: '' },
  { name: 'opq/new', content: '123' },
  { name: 'etc/', type: 'directory' },
  { name: 'etc/a', content: '1' },
  { name: 'etc/c', content: '12345' },
];

describe('dockerStoreEntries', () => {
  it('lays out layers, metadata and references the way the engine does', async () => {
    const lower = await layer(labLower);
    const upper = await layer(labUpper, false);
    const img = image(
      [lower, upper],
      [{ repository: '127.0.0.1:5000/test/app', tag: 'v1', digest: `sha256:${'a'.repeat(64)}` }],
    );
    const base = { Repositories: { balena_supervisor: { 'balena_supervisor:v14.0.0': `sha256:${'b'.repeat(64)}` } } };
    const result = await preload([img], { baseRepositories: base });
    const [chain0, chain1] = chainIds([sha(lower.tar), sha(upper.tar)]);
    const [stored] = result.stored;
    expect(stored?.imageId).toBe(sha(img.config));
    expect(stored?.layers.map((l) => l.size)).toEqual([45, 9]);
    const [l0, l1] = stored?.layers ?? [];

    // layerdb
    const db0 = `docker/image/overlay2/layerdb/sha256/${chain0?.slice(7)}`;
    const db1 = `docker/image/overlay2/layerdb/sha256/${chain1?.slice(7)}`;
    expect(text(result, `${db0}/diff`)).toBe(sha(lower.tar));
    expect(text(result, `${db0}/size`)).toBe('45');
    expect(text(result, `${db1}/size`)).toBe('9');
    expect(text(result, `${db0}/cache-id`)).toBe(l0?.cacheId);
    expect(result.byPath.has(`${db0}/parent`)).toBe(false);
    expect(text(result, `${db1}/parent`)).toBe(chain0);
    expect(result.byPath.get(db0)?.entry.mode).toBe(0o700);

    // overlay2 dirs, link ids, lower chain, committed on the parent only
    const link0 = text(result, `docker/overlay2/${l0?.cacheId}/link`) as string;
    const link1 = text(result, `docker/overlay2/${l1?.cacheId}/link`) as string;
    expect(link0).toMatch(/^[A-Z2-7]{26}$/);
    expect(result.byPath.get(`docker/overlay2/l/${link1}`)?.entry.symlinkTarget).toBe(`../${l1?.cacheId}/diff`);
    expect(text(result, `docker/overlay2/${l1?.cacheId}/lower`)).toBe(`l/${link0}`);
    expect(result.byPath.has(`docker/overlay2/${l0?.cacheId}/lower`)).toBe(false);
    expect(result.byPath.get(`docker/overlay2/${l1?.cacheId}/work`)?.entry.mode).toBe(0o700);
    expect(result.byPath.get(`docker/overlay2/${l0?.cacheId}/committed`)?.entry.mode).toBe(0o600);
    expect(result.byPath.has(`docker/overlay2/${l1?.cacheId}/committed`)).toBe(false);
    expect(result.byPath.get(`docker/overlay2/${l0?.cacheId}`)?.entry.mode).toBe(0o710);

    // layer contents
    const d0 = `docker/overlay2/${l0?.cacheId}/diff`;
    const d1 = `docker/overlay2/${l1?.cacheId}/diff`;
    expect(result.byPath.get(`${d0}/bin/tool`)?.entry).toMatchObject({ mode: 0o4755, uid: 1000, gid: 1000 });
    expect(result.byPath.get(`${d0}/bin/tool-hard`)?.entry).toMatchObject({
      type: 'link',
      hardlinkTarget: `${d0}/bin/tool`,
    });
    expect(result.byPath.get(`${d0}/bin/sh`)?.entry.symlinkTarget).toBe('/bin/busybox');
    expect(result.byPath.has(`${d0}/long/${'n'.repeat(150)}/ünïcödé-名前.txt`)).toBe(true);
    expect(result.byPath.get(`${d0}/caps`)?.entry.xattrs.get('user.test')?.toString()).toBe('v1');
    expect(result.byPath.get(`${d1}/del/x`)?.entry).toMatchObject({ type: 'character-device', mode: 0 });
    expect(result.byPath.has(`${d1}/del/.wh.x`)).toBe(false);
    const opq = result.entries.filter((e) => e.entry.path === `${d1}/opq`).at(-1)?.entry;
    expect(opq?.xattrs.get('trusted.overlay.opaque')?.toString()).toBe('y');
    expect(opq?.mode).toBe(0o750);
    expect(result.byPath.has(`${d1}/opq/.wh..wh..opq`)).toBe(false);

    // image config, distribution metadata, references
    expect(
      result.byPath
        .get(`docker/image/overlay2/imagedb/content/sha256/${stored?.imageId.slice(7)}`)
        ?.content?.equals(img.config),
    ).toBe(true);
    expect(
      text(result, `docker/image/overlay2/distribution/diffid-by-digest/sha256/${img.layers[0]?.digest.slice(7)}`),
    ).toBe(sha(lower.tar));
    expect(
      JSON.parse(
        text(
          result,
          `docker/image/overlay2/distribution/v2metadata-by-diffid/sha256/${sha(upper.tar).slice(7)}`,
        ) as string,
      ),
    ).toEqual([
      { Digest: img.layers[1]?.digest, SourceRepository: '127.0.0.1:5000/127.0.0.1:5000/test/app', HMAC: '' },
    ]);
    const repositories = text(result, 'docker/image/overlay2/repositories.json') as string;
    expect(JSON.parse(repositories)).toEqual({
      Repositories: {
        '127.0.0.1:5000/test/app': {
          '127.0.0.1:5000/test/app:v1': stored?.imageId,
          [`127.0.0.1:5000/test/app@sha256:${'a'.repeat(64)}`]: stored?.imageId,
        },
        balena_supervisor: { 'balena_supervisor:v14.0.0': `sha256:${'b'.repeat(64)}` },
      },
    });
    expect(repositories.indexOf('127.0.0.1')).toBeLessThan(repositories.indexOf('balena_supervisor'));
    expect(result.byPath.get('docker/image/overlay2/repositories.json')?.entry.mode).toBe(0o600);
  });

  /** The layer tar the engine would rebuild from its tar-split and its diff/ files (what `docker save` does). */
  function rebuiltLayer(result: Result, tar: Buffer): Buffer {
    const [chain] = chainIds([sha(tar)]);
    const cacheId = result.stored[0]?.layers[0]?.cacheId;
    const split = gunzipSync(
      result.byPath.get(`docker/image/overlay2/layerdb/sha256/${chain?.slice(7)}/tar-split.json.gz`)?.content as Buffer,
    );
    const parts: Buffer[] = [];
    for (const line of split.toString().trim().split('\n')) {
      const record = JSON.parse(line) as { type: number; name?: string; size?: number; payload: string | null };
      if (record.type === 2) parts.push(Buffer.from(record.payload as string, 'base64'));
      else if (record.size) {
        // The engine reads the file back from diff/ by its recorded name.
        const path = `docker/overlay2/${cacheId}/diff/${(record.name as string).replace(/^\.\//, '')}`;
        const file = result.byPath.get(path);
        const content =
          file?.entry.type === 'link' ? result.byPath.get(file.entry.hardlinkTarget as string)?.content : file?.content;
        parts.push(content as Buffer);
      }
    }
    return Buffer.concat(parts);
  }

  it('writes a tar-split from which the original layer is rebuilt byte for byte (what docker save does)', async () => {
    const lower = await layer(labLower);
    const result = await preload([image([lower], [{ repository: 'a', tag: '1' }])]);
    expect(sha(rebuiltLayer(result, lower.tar))).toBe(sha(lower.tar));
  });

  it('keeps bytes after the end-of-archive marker in the tar-split, and refuses a layer that is mostly such bytes', async () => {
    const tar = await craftTar([{ name: 'f', content: 'x' }]);
    const trailing = { tar: Buffer.concat([tar, randomBytes(3 * 1024 * 1024 + 7)]) };
    const withTrailer = { ...trailing, blob: gzipSync(trailing.tar) };
    const result = await preload([image([withTrailer], [{ repository: 'a', tag: '1' }])]);
    expect(sha(rebuiltLayer(result, withTrailer.tar))).toBe(sha(withTrailer.tar));

    const hostileTar = Buffer.concat([tar, Buffer.alloc(17 * 1024 * 1024)]);
    const hostile = { tar: hostileTar, blob: gzipSync(hostileTar) };
    const error = await preload([image([hostile], [{ repository: 'a', tag: '1' }])]).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_BAD_ENTRY'), String(error)).toBe(true);
  });

  it('writes a layer shared by two images once and records both sources', async () => {
    const shared = await layer([{ name: 'shared.txt', content: 'same' }]);
    const a = await layer([{ name: 'a.txt', content: 'a' }]);
    const b = await layer([{ name: 'b.txt', content: 'b' }]);
    const result = await preload([
      image([shared, a], [{ repository: 'one', tag: 'latest' }]),
      image([shared, b], [{ repository: 'two', tag: 'latest' }]),
    ]);
    const contents = result.entries.filter((e) => e.entry.path.endsWith('/diff/shared.txt'));
    expect(contents).toHaveLength(1);
    expect(result.stored[0]?.layers[0]?.cacheId).toBe(result.stored[1]?.layers[0]?.cacheId);
    const committed = result.entries.filter((e) => e.entry.path.endsWith('/committed'));
    expect(committed).toHaveLength(1);
  });

  it('writes the same store from layers converted ahead into a stage, and removes the stage', async () => {
    const shared = await layer(labLower);
    const upper = await layer(labUpper);
    const other = await layer([{ name: 'b.txt', content: 'b' }]);
    const images = () => [
      image([shared, upper], [{ repository: 'one', tag: '1' }]),
      image([shared, other], [{ repository: 'two', tag: '1' }]),
    ];
    const direct = await preload(images());
    const dir = join(await stageParent(), 'stage');
    const staging = images();
    const stage = stageLayers(staging, { dir });
    await stage.settled();
    expect((await readdir(dir)).length).toBe(3);
    const staged = await preload(staging, { stage });
    await stage.close();
    expect(summary(staged)).toEqual(summary(direct));
    expect(staged.stored).toEqual(direct.stored);
    expect(await stat(dir).catch(() => undefined)).toBeUndefined();
  });

  it("appends layers staged with the pack's prefix byte for byte: the same .etch as converting them inline", async () => {
    const big = await layer([{ name: 'data/big.bin', content: randomBytes(300_000) }]);
    const [lower, upper] = [await layer(labLower), await layer(labUpper)];
    const images = () => [
      image([lower, big], [{ repository: 'one', tag: '1' }]),
      image([lower, upper], [{ repository: 'two', tag: '1' }]),
    ];
    const direct = await preload(images());
    const staging = images();
    const stage = stageLayers(staging, { dir: join(await stageParent(), 'stage'), namePrefix: 'inject/6' });
    await stage.settled();
    const appended = await preload(staging, { stage }, true);
    await stage.close();
    // Three distinct layers, each appended whole (the shared lower one once), none yielded entry by entry.
    expect(appended.appended.map((a) => a.entries)).toEqual([labLower.length, 1, labUpper.length]);
    expect(appended.appended.map((a) => a.fileBytes)).toEqual([
      labLower.reduce((n, e) => n + (e.type === undefined ? Buffer.byteLength(e.content ?? '') : 0), 0),
      300_000,
      labUpper.reduce((n, e) => n + (e.type === undefined ? Buffer.byteLength(e.content ?? '') : 0), 0),
    ]);
    expect(appended.bytes.length, '.etch length').toBe(direct.bytes.length);
    expect(appended.bytes.equals(direct.bytes), 'the .etch bytes, appended vs inline').toBe(true);
    // Read back entry by entry, a stage made with a prefix gives names relative to the partition, as before.
    const again = images();
    const plain = stageLayers(again, { dir: join(await stageParent(), 'stage'), namePrefix: 'inject/6' });
    await plain.settled();
    const yielded = await preload(again, { stage: plain });
    await plain.close();
    expect(yielded.bytes.equals(direct.bytes), 'the .etch bytes, staged entries vs inline').toBe(true);
    // Staged for another partition: read back entry by entry, never appended under the wrong names.
    const other = images();
    const elsewhere = stageLayers(other, { dir: join(await stageParent(), 'stage'), namePrefix: 'inject/5' });
    await elsewhere.settled();
    const mismatched = await preload(other, { stage: elsewhere }, true);
    await elsewhere.close();
    expect(mismatched.appended, 'layers appended from a stage of another prefix').toEqual([]);
    expect(mismatched.bytes.equals(direct.bytes), 'the .etch bytes, other prefix vs inline').toBe(true);
  });

  it('keeps the stage within its byte budget: a layer that does not fit is converted when due', async () => {
    const big = await layer([{ name: 'big.bin', content: 'x'.repeat(64 * 1024) }]);
    const small = await layer([{ name: 'small.txt', content: 's' }]);
    const opened: string[] = [];
    const counted = (img: StoreImage): StoreImage => ({
      ...img,
      layers: img.layers.map((l) => ({ ...l, open: async () => (opened.push(l.digest), l.open()) })),
    });
    const images = [
      counted(image([big], [{ repository: 'big', tag: '1' }])),
      counted(image([small], [{ repository: 'small', tag: '1' }])),
    ];
    const dir = join(await stageParent(), 'stage');
    const stage = stageLayers(images, { dir, maxBytes: 16 * 1024 });
    await stage.settled();
    // The big layer was abandoned part-way (it would not fit); the small one is staged.
    expect(await readdir(dir)).toHaveLength(1);
    expect(await stage.counts(images[0]?.layers[0]?.digest as string)).toBeUndefined();
    expect(await stage.counts(images[1]?.layers[0]?.digest as string)).toEqual({ entries: 1, bytes: 1 });
    const staged = await preload(images, { stage });
    await stage.close();
    expect(summary(staged)).toEqual(summary(await preload(images)));
    const bigDigest = images[0]?.layers[0]?.digest;
    // Opened by the stager, then again inline; the small layer only by the stager, then by the plain run.
    expect(opened.filter((d) => d === bigDigest)).toHaveLength(3);
    expect(opened.filter((d) => d !== bigDigest)).toHaveLength(2);
  });

  it('stages a layer that did not fit beside earlier ones once those are written out, instead of giving up on it', async () => {
    const sizes = [60, 30, 30, 30, 30];
    const layers = await Promise.all(
      sizes.map((kib, i) => layer([{ name: `f${i}.bin`, content: String(i).repeat(kib * 1024) }])),
    );
    const opened = new Map<string, number>();
    const counted = (img: StoreImage): StoreImage => ({
      ...img,
      layers: img.layers.map((l) => ({
        ...l,
        open: async () => (opened.set(l.digest, (opened.get(l.digest) ?? 0) + 1), l.open()),
      })),
    });
    const images = layers.map((l, i) => counted(image([l], [{ repository: `r${i}`, tag: '1' }])));
    const direct = await preload(images);
    opened.clear();
    const staged: string[] = [];
    const logger = {
      debug: (m: string, f?: Record<string, unknown>) => m === 'layer staged' && staged.push(String(f?.['digest'])),
      info: () => {},
      warn: () => {},
    };
    const stage = stageLayers(images, {
      dir: join(await stageParent(), 'stage'),
      maxBytes: 80 * 1024,
      logger,
    });
    await stage.settled();
    const result = await preload(images, { stage });
    await stage.close();
    expect(summary(result)).toEqual(summary(direct));
    // Every layer after the first waited for room and was staged then, each blob read at most twice.
    expect(staged).toHaveLength(sizes.length);
    expect(Math.max(...opened.values())).toBeLessThanOrEqual(2);
  });

  it('converts inline when the staging directory cannot be written, and leaves an existing directory alone', async () => {
    const images = [image([await layer([{ name: 'a', content: 'a' }])], [{ repository: 'a', tag: '1' }])];
    const existing = await stageParent();
    await writeFile(join(existing, 'keep.txt'), 'mine');
    const failures: unknown[] = [];
    const stage = stageLayers(images, { dir: existing, onFailure: (e) => failures.push(e) });
    await stage.settled();
    const result = await preload(images, { stage });
    await stage.close();
    expect(summary(result)).toEqual(summary(await preload(images)));
    expect(failures).toEqual([]);
    expect(await readFile(join(existing, 'keep.txt'), 'utf8')).toBe('mine');
  });

  it('converts inline, without failing the run, when the staging directory fills up', async () => {
    const images = [
      image(
        [await layer([{ name: 'big.bin', content: randomBytes(512 * 1024).toString('hex') }])],
        [{ repository: 'a', tag: '1' }],
      ),
    ];
    const small = await stageParent();
    await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]);
    try {
      const failures: unknown[] = [];
      const stage = stageLayers(images, { dir: join(small, 'stage'), onFailure: (e) => failures.push(e) });
      await stage.settled();
      const result = await preload(images, { stage });
      await stage.close();
      expect(summary(result)).toEqual(summary(await preload(images)));
      expect(failures).toEqual([]);
      expect(await readdir(small)).toEqual([]);
    } finally {
      await run('umount', [small]);
    }
  });

  it('counts staged layers for requirements exactly as reading them does', async () => {
    const images = [image([await layer(labLower), await layer(labUpper)], [{ repository: 'one', tag: '1' }])];
    const dir = join(await stageParent(), 'stage');
    const stage = stageLayers(images, { dir });
    const measured = await measureStore(images, { stage });
    await stage.close();
    expect(measured).toEqual(await measureStore(images));
  });

  it('refuses a tampered blob converted ahead, before writing any of it, and leaves nothing staged', async () => {
    const good = await layer([{ name: 'f', content: 'x' }]);
    const second = await layer([{ name: 'g', content: 'y' }]);
    const img = image([good, second], [{ repository: 'a', tag: '1' }]);
    const tampered = gzipSync(await craftTar([{ name: 'g', content: 'z' }]));
    const bad: StoreImage = {
      ...img,
      layers: [
        img.layers[0] as StoreImage['layers'][number],
        { ...(img.layers[1] as StoreImage['layers'][number]), open: async () => Readable.from([tampered]) },
      ],
    };
    const dir = join(await stageParent(), 'stage');
    const stage = stageLayers([bad], { dir });
    await stage.settled();
    const written: string[] = [];
    const error = await preload([bad], {
      stage,
      onProgress: (e) => e.state === 'writing' && written.push(e.digest),
    }).catch((e: unknown) => e);
    await stage.close();
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
    expect(written).not.toContain(bad.layers[1]?.digest);
    expect(await stat(dir).catch(() => undefined)).toBeUndefined();
  });

  it('stops staging when closed mid-way and removes what it had', async () => {
    const layers = await Promise.all([1, 2, 3].map((n) => layer([{ name: `f${n}`, content: String(n).repeat(1000) }])));
    const dir = join(await stageParent(), 'stage');
    const stage = stageLayers([image(layers, [{ repository: 'a', tag: '1' }])], { dir });
    await stage.close();
    expect(await stat(dir).catch(() => undefined)).toBeUndefined();
  });

  it('refuses a blob whose bytes do not match its digest', async () => {
    const good = await layer([{ name: 'f', content: 'x' }]);
    const img = image([good], [{ repository: 'a', tag: '1' }]);
    const tampered = gzipSync(await craftTar([{ name: 'f', content: 'y' }]));
    const bad: StoreImage = {
      ...img,
      layers: [{ ...(img.layers[0] as StoreImage['layers'][number]), open: async () => Readable.from([tampered]) }],
    };
    const error = await preload([bad]).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH')).toBe(true);
  });

  describe('a layer whose source verified the blob', () => {
    it('is not hashed again: a tampered blob of the right size is still refused, by its diffID', async () => {
      const good = await layer([{ name: 'f', content: 'x' }]);
      const img = image([good], [{ repository: 'a', tag: '1' }]);
      const tampered = gzipSync(await craftTar([{ name: 'f', content: 'y' }]));
      expect(tampered.length, 'size of the tampered blob').toBe(good.blob.length);
      const of = (verified: boolean): StoreImage => ({
        ...img,
        layers: [
          { ...(img.layers[0] as StoreImage['layers'][number]), open: async () => Readable.from([tampered]), verified },
        ],
      });
      const hashed = await preload([of(false)]).catch((e: unknown) => e);
      expect((hashed as Error).message, 'message when the store hashes the blob').toContain('hashes to');
      const trusted = await preload([of(true)]).catch((e: unknown) => e);
      expect(isEtchError(trusted, 'ETCH_DIGEST_MISMATCH'), String(trusted)).toBe(true);
      expect((trusted as Error).message, 'message when the source verified the blob').toContain('config expects');
    });

    it("fails with the source's own error, and still checks the size", async () => {
      const good = await layer([{ name: 'f', content: 'x' }]);
      const img = image([good], [{ repository: 'a', tag: '1' }]);
      const base = img.layers[0] as StoreImage['layers'][number];
      const refusal = new EtchError('ETCH_DIGEST_MISMATCH', 'the source refused the blob');
      const failing = async function* () {
        yield good.blob.subarray(0, 10);
        throw refusal;
      };
      const error = await preload([
        { ...img, layers: [{ ...base, open: async () => failing(), verified: true }] },
      ]).catch((e: unknown) => e);
      expect(error, "the source's error").toBe(refusal);
      const longer = { ...base, size: good.blob.length + 1, verified: true };
      const sized = await preload([{ ...img, layers: [longer] }]).catch((e: unknown) => e);
      expect(isEtchError(sized, 'ETCH_DIGEST_MISMATCH'), String(sized)).toBe(true);
      expect((sized as Error).message).toContain('manifest says');
    });
  });

  it('refuses a layer whose content does not match the config diffID', async () => {
    const real = await layer([{ name: 'f', content: 'x' }]);
    const other = await layer([{ name: 'f', content: 'other' }]);
    const img = image([real], [{ repository: 'a', tag: '1' }]);
    const lying: StoreImage = {
      ...img,
      layers: [{ digest: sha(other.blob), size: other.blob.length, open: async () => Readable.from([other.blob]) }],
    };
    const error = await preload([lying]).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH')).toBe(true);
    expect((error as Error).message).toContain('config expects');
  });

  it('refuses a blob whose size differs from the manifest', async () => {
    const good = await layer([{ name: 'f', content: 'x' }]);
    const img = image([good], [{ repository: 'a', tag: '1' }]);
    const declared = { ...(img.layers[0] as StoreImage['layers'][number]), size: good.blob.length + 1 };
    const error = await preload([{ ...img, layers: [declared] }]).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH')).toBe(true);
    expect((error as Error).message).toContain('manifest says');
  });

  it('refuses a config that does not hash to its digest', async () => {
    const img = image([await layer([{ name: 'f', content: 'x' }])], [{ repository: 'a' }]);
    const error = await preload([{ ...img, configDigest: `sha256:${'0'.repeat(64)}` }]).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH')).toBe(true);
  });

  it.each<[string, CraftedEntry[], string]>([
    ['a .. name', [{ name: 'a/../../etc/passwd', content: 'x' }], 'ETCH_UNSAFE_PATH'],
    ['a relative name starting with ..', [{ name: '../etc/passwd', content: 'x' }], 'ETCH_UNSAFE_PATH'],
    [
      'an absolute write through its own symlink',
      [
        { name: 'evil', type: 'symlink', linkname: '/etc' },
        { name: '/evil/cron', content: 'x' },
      ],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'an absolute hardlink through its own symlink',
      [
        { name: 'etc/shadow', content: 'x' },
        { name: 'evil', type: 'symlink', linkname: '/' },
        { name: 'h', type: 'link', linkname: '/evil/etc/shadow' },
      ],
      'ETCH_BAD_ENTRY',
    ],
    [
      'a write through its own symlink',
      [
        { name: 'evil', type: 'symlink', linkname: '/etc' },
        { name: 'evil/cron', content: 'x' },
      ],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'a write through a hardlink to its own symlink',
      [
        { name: 'evil', type: 'symlink', linkname: '/etc' },
        { name: 'alias', type: 'link', linkname: 'evil' },
        { name: 'alias/cron', content: 'x' },
      ],
      'ETCH_UNSAFE_PATH',
    ],
    ['a hardlink out of the layer', [{ name: 'h', type: 'link', linkname: '../../../etc/shadow' }], 'ETCH_UNSAFE_PATH'],
    ['a hardlink to a lower layer', [{ name: 'h', type: 'link', linkname: 'not/here' }], 'ETCH_BAD_ENTRY'],
    [
      'a duplicate path',
      [
        { name: 'f', content: 'x' },
        { name: 'f', content: 'y' },
      ],
      'ETCH_BAD_ENTRY',
    ],
    [
      'a whiteout of its own file',
      [
        { name: 'f', content: 'x' },
        { name: '.wh.f', content: '' },
      ],
      'ETCH_BAD_ENTRY',
    ],
  ])('refuses a layer with %s', async (_label, entries, code) => {
    const error = await preload([image([await layer(entries)], [{ repository: 'evil', tag: '1' }])]).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, code as never), String(error)).toBe(true);
  });

  it('takes absolute names from the layer root, as the engine extracts them', async () => {
    const l = await layer([
      { name: '/etc/', type: 'directory' },
      { name: '/etc/abs-name', content: 'absolute' },
      { name: '/../up', content: 'clamped at the root' },
      { name: 'a/../folded', content: 'folded' },
      { name: '/etc/hard', type: 'link', linkname: '/etc/abs-name' },
    ]);
    const result = await preload([image([l], [{ repository: 'abs', tag: '1' }])]);
    const diff = [...result.byPath.keys()].find((p) => p.endsWith('/diff')) as string;
    expect(text(result, `${diff}/etc/abs-name`), '/etc/abs-name').toBe('absolute');
    expect(text(result, `${diff}/up`), '/../up').toBe('clamped at the root');
    expect(text(result, `${diff}/folded`), 'a/../folded').toBe('folded');
    expect(result.byPath.get(`${diff}/etc/hard`)?.entry.hardlinkTarget, '/etc/hard').toBe(`${diff}/etc/abs-name`);
  });

  it('keeps nanosecond mtimes and sets pre-epoch ones to the epoch, as the engine does (symlinks keep theirs)', async () => {
    const l = await layer([
      { name: 'fraction', content: 'x', pax: { mtime: '1700000000.123456789' } },
      { name: 'old', content: 'x', pax: { mtime: '-86400.5' } },
      { name: 'old-dir/', type: 'directory', pax: { mtime: '-1' } },
      { name: 'old-link', type: 'symlink', linkname: 'old', pax: { mtime: '-100' } },
    ]);
    const result = await preload([image([l], [{ repository: 'times', tag: '1' }])]);
    const at = (name: string) => {
      const entry = [...result.byPath.values()].find((e) => e.entry.path.endsWith(`/diff/${name}`))?.entry;
      return [entry?.mtime.getTime(), entry?.mtimeNanoseconds];
    };
    expect(at('fraction'), 'fraction').toEqual([1_700_000_000_123, 123_456_789]);
    expect(at('old'), 'old (file)').toEqual([0, 0]);
    expect(at('old-dir'), 'old-dir').toEqual([0, 0]);
    expect(at('old-link'), 'old-link (symlink)').toEqual([-100_000, 0]);
  });

  it('refuses non-linux images and configs whose diff_ids do not match the layers', async () => {
    const l = await layer([{ name: 'f', content: 'x' }]);
    const windows = image([l], [{ repository: 'w' }], { os: 'windows' });
    expect(isEtchError(await preload([windows]).catch((e: unknown) => e), 'ETCH_PLATFORM_NOT_FOUND')).toBe(true);
    const short = image([l], [{ repository: 'w' }]);
    expect(isEtchError(await preload([{ ...short, layers: [] }]).catch((e: unknown) => e), 'ETCH_BAD_ENTRY')).toBe(
      true,
    );
  });

  it('streams a large layer without holding it in memory', async () => {
    // 256 MiB of file content in one layer, served as a stream of an uncompressed tar, produced lazily.
    const size = 256 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    const body = () => {
      const tarball = tarPack();
      // A fixed mtime: the stream is rendered twice and must hash the same both times.
      const sink = tarball.entry({ name: 'big.bin', size, mtime: new Date(0) });
      void (async () => {
        for (let i = 0; i < size / chunk.length; i++) {
          if (!sink.write(chunk)) await new Promise<void>((resolve) => sink.once('drain', () => resolve()));
        }
        sink.end(undefined);
        tarball.finalize();
      })();
      return tarball as unknown as AsyncIterable<Uint8Array>;
    };
    const hash = createHash('sha256');
    let blobSize = 0;
    for await (const part of body()) {
      hash.update(part);
      blobSize += part.length;
    }
    const diffId = `sha256:${hash.digest('hex')}`;
    const config = Buffer.from(JSON.stringify({ os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } }));
    const big: StoreImage = {
      config,
      layers: [{ digest: diffId, size: blobSize, open: async () => body() }],
      names: [{ repository: 'big' }],
      sourceRepository: 'big',
    };
    const before = process.memoryUsage().rss;
    let peak = before;
    let bytes = 0;
    for await (const entry of dockerStoreEntries([big], {
      onProgress: () => (peak = Math.max(peak, process.memoryUsage.rss())),
    })) {
      if (entry.content && typeof entry.content !== 'string' && !Buffer.isBuffer(entry.content)) {
        for await (const part of entry.content) bytes += part.length;
      }
    }
    expect(bytes).toBe(size);
    expect(peak - before).toBeLessThan(96 * 1024 * 1024);
  });
});
