// `etch create` in bounded memory whatever the shape of the images: peak RSS of the real CLI for one 64 MiB
// layer (enough to reach its steady state), for twenty layers, and for one 2 GiB layer must stay flat (issue
// 17: "add a 20-layer image and a 2 GiB layer to the memory check"). The images are OCI layouts written here,
// so no registry time is measured.
import { mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, finishOciLayout, putLayoutBlob, rawTarHeader, type TempDir } from '@etch/test-utils';
import { BASE_TOOLS, DISK_TOOLS, ensureTools, makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { runEtch, type ChildRun } from './hostile/run-etch.test.helper.js';

const MIB = 1024 * 1024;
// Above the 150 MB goal of `pnpm bench` on purpose: this test runs beside others on a loaded machine, and
// what it guards is growth with the input, checked by the difference below. Measured at load 9-11 on 2 cores:
// 99-106 MiB for 64 MiB and twenty layers, 115-132 MiB for 2 GiB.
const ABSOLUTE_MIB = 200;
// How much more the largest input may take than the smallest: a few buffers, not a layer's worth.
const GROWTH_MIB = 40;
// How much more a layer of 200,000 entries may take than one of 20,000.
const ENTRIES_GROWTH_MIB = 48;
/** The old generation the entries test runs the CLI with (see there). */
const OLD_SPACE_MIB = 24;

let dir: TempDir;

/**
 * An OCI layout holding one image whose layers are uncompressed tars of the folders given (uncompressed:
 * a gzip of hundreds of MiB would spend the test's time in the test itself, and the store's work per byte
 * (hashing, tar parsing, packing) is the same).
 */
async function layoutOf(name: string, trees: string[]): Promise<string> {
  const layout = dir.join(`${name}-layout`);
  const layers: { digest: string; size: number }[] = [];
  for (const [i, tree] of trees.entries()) {
    const tar = dir.join(`${name}-${i}.tar`);
    await run('tar', ['--format=pax', '--sort=name', '--mtime=@0', '--numeric-owner', '-C', tree, '-cf', tar, '.']);
    layers.push(await putLayoutBlob(layout, { path: tar }));
  }
  return finishOciLayout(layout, layers);
}

/** A folder with one file of `bytes` bytes (a MiB of pattern, then zeros) and a few small ones. */
async function treeWith(name: string, bytes: number): Promise<string> {
  const tree = dir.join(`tree-${name}`);
  await mkdir(join(tree, 'data'), { recursive: true });
  const pattern = Buffer.alloc(MIB);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 131 + name.length) % 251;
  const file = join(tree, 'data', 'payload.bin');
  await writeFile(file, pattern);
  // Grown by doubling the pattern with dd would cost seconds; the tail past the first MiB is a hole (zeros),
  // which the store reads, hashes and writes like any bytes.
  if (bytes > MIB) await truncate(file, bytes);
  for (let i = 0; i < 5; i++) await writeFile(join(tree, 'data', `small-${i}.txt`), `${name} ${i}\n`);
  return tree;
}

/** An OCI layout whose one layer holds `count` empty files in folders of 1000 (what `docker pull` takes flat). */
async function manyEntriesLayout(name: string, count: number): Promise<string> {
  const layout = dir.join(`${name}-layout`);
  const headers: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    if (i % 1000 === 0) headers.push(rawTarHeader({ name: `d${i / 1000}/`, typeflag: '5', mode: 0o755 }));
    headers.push(rawTarHeader({ name: `d${Math.floor(i / 1000)}/f${i}`, mtime: 1_700_000_000 }));
  }
  headers.push(Buffer.alloc(1024));
  return finishOciLayout(layout, [await putLayoutBlob(layout, Buffer.concat(headers))]);
}

async function create(layout: string, out: string, nodeOptions = ''): Promise<ChildRun> {
  const sandbox = { cwd: dir.path, tmp: dir.join('tmp'), cache: dir.join('cache') };
  await mkdir(sandbox.tmp, { recursive: true });
  const result = await runEtch(
    [
      'create',
      '--base',
      'base.img',
      '--image',
      `oci:${layout}:v1`,
      '--platform',
      'linux/amd64',
      '--ignore-base-repositories',
      '--no-cache',
      '-o',
      out,
      '-q',
    ],
    sandbox,
    { timeoutMs: 180_000, maxRssMiB: 1024, env: { NODE_OPTIONS: nodeOptions } },
  );
  await rm(dir.join(out), { force: true });
  return result;
}

beforeAll(async () => {
  ensureTools([...BASE_TOOLS, ...DISK_TOOLS]);
  dir = await createTempDir('etch-memory-scale-');
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 8 });
}, 120_000);

afterAll(async () => {
  await dir?.remove();
});

describe('etch create memory, flat in the number and size of layers', () => {
  it('one 64 MiB layer, twenty layers and one 2 GiB layer peak within a few buffers of each other', async () => {
    const small = await layoutOf('small', [await treeWith('small', 64 * MIB)]);
    const trees: string[] = [];
    for (let i = 0; i < 20; i++) trees.push(await treeWith(`layer${i}`, 2 * MIB));
    const many = await layoutOf('many', trees);
    const big = await layoutOf('big', [await treeWith('big', 2048 * MIB)]);

    const runs = {
      'one 64 MiB layer': await create(small, 'small.etch'),
      'twenty layers': await create(many, 'many.etch'),
      'one 2 GiB layer': await create(big, 'big.etch'),
    };
    const peaks = Object.fromEntries(Object.entries(runs).map(([what, r]) => [what, r.peakRssMiB]));
    console.log(`etch create peak RSS (MiB): ${JSON.stringify(peaks)}`);
    for (const [what, result] of Object.entries(runs)) {
      expect(result.code, `${what}: ${result.stderr}`).toBe(0);
      expect(result.peakRssMiB, `${what}: peak RSS in MiB (all: ${JSON.stringify(peaks)})`).toBeLessThan(ABSOLUTE_MIB);
    }
    const baseline = runs['one 64 MiB layer'].peakRssMiB;
    for (const what of ['twenty layers', 'one 2 GiB layer'] as const)
      expect(
        runs[what].peakRssMiB - baseline,
        `${what}: MiB of peak RSS above one 64 MiB layer (all: ${JSON.stringify(peaks)})`,
      ).toBeLessThan(GROWTH_MIB);
  }, 400_000);
});

describe('etch create memory, flat in the number of entries of a layer', () => {
  // Issue 19 point 9: 100,000 empty files took 600 MB and 1,000,000 took 3.5 GB; the engine takes them flat.
  it('a layer of 200,000 empty files peaks within a few buffers of one of 20,000', async () => {
    // Under V8's default limits the old generation grows with the garbage of a longer run, so peak RSS drifts
    // 40-60 MiB between these two sizes with the live heap flat, and a bound on RSS alone is a coin toss. A
    // small old generation takes that drift out and makes retention fatal. Measured with 200,000 entries: this
    // converter completes with 24 MiB (not with 16); the one that kept a Map of the paths runs out of heap.
    const heap = `--max-old-space-size=${OLD_SPACE_MIB}`;
    const few = await create(await manyEntriesLayout('few', 20_000), 'few.etch', heap);
    const many = await create(await manyEntriesLayout('many-entries', 200_000), 'many-entries.etch', heap);
    const peaks = { '20,000 entries': few.peakRssMiB, '200,000 entries': many.peakRssMiB };
    console.log(`etch create peak RSS (MiB) by entries in one layer: ${JSON.stringify(peaks)}`);
    for (const [what, result] of [
      ['20,000 entries', few],
      ['200,000 entries', many],
    ] as const)
      expect(result.code, `${what}: ${result.stderr}`).toBe(0);
    // Nothing is kept per entry but an 8-byte keyed digest of its path (duplicates and hardlink targets are
    // checked against those); what remains is the allocator's high-water mark (measured: +12 to +27 MiB).
    expect(
      many.peakRssMiB - few.peakRssMiB,
      `MiB of peak RSS that 180,000 more entries added (all: ${JSON.stringify(peaks)})`,
    ).toBeLessThan(ENTRIES_GROWTH_MIB);
  }, 300_000);
});
