/**
 * Issue 17, goal 3, through the CLI: a warm `etch create` takes its layers unpacked from the cache of converted
 * layers (no layer blob read, the same bytes), a damaged entry is caught before use, `etch cache` shows and
 * removes it, `--no-cache` keeps nothing.
 */
import { existsSync } from 'node:fs';
import { open, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildPreloadFixtures,
  makeBalenaLikeImage,
  pushFixture,
  readLayoutImage,
  run,
  startRegistryServer,
  type RegistryServer,
} from '@etch/test-utils/system';
import { runCli } from './cli/in-process.test.helper.js';

let dir: TempDir;
let registry: RegistryServer;
const refs: string[] = [];
const layerDigests = new Set<string>();

const etch = (args: string[]) => runCli(args, { cwd: dir.path, env: { HOME: dir.path } });

/** `etch create` of images a and b (they share their base layer) into `out`, with `cacheArgs`. */
const create = (out: string, cacheArgs: string[], quiet = true) =>
  etch([
    'create',
    '--base',
    'base.img',
    ...refs.flatMap((ref) => ['--image', ref]),
    '--platform',
    'linux/amd64',
    '--ignore-base-repositories',
    ...cacheArgs,
    '-o',
    out,
    ...(quiet ? ['-q'] : []),
  ]);

/** The layer directories (`overlay2/<id>/diff/`) of a .etch: one per distinct layer chain. */
async function diffDirs(file: string): Promise<number> {
  const listing = (await run('tar', ['-tf', dir.join(file)])).stdout.split('\n');
  return listing.filter((name) => /^inject\/6\/docker\/overlay2\/[0-9a-f]{64}\/diff\/?$/.test(name)).length;
}

async function flipByte(path: string, at: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    await handle.write(Buffer.from([(byte[0] as number) ^ 0xff]), 0, 1, at);
  } finally {
    await handle.close();
  }
}

/** Where two files' bytes first differ: -1 when they are the same, else an offset (the shorter's length at most). */
function firstDifference(a: Buffer, b: Buffer): number {
  const length = Math.min(a.length, b.length);
  for (let offset = 0; offset < length; offset += 1) if (a[offset] !== b[offset]) return offset;
  return a.length === b.length ? -1 : length;
}

beforeAll(async () => {
  dir = await createTempDir('etch-layer-cache-');
  const fixtures = await buildPreloadFixtures(dir.join('fixtures'));
  registry = await startRegistryServer();
  for (const key of ['a', 'b'] as const) {
    const ref = `${registry.host}/etch/${key}:v1`;
    await pushFixture(fixtures.layout, fixtures.images[key].tag, ref);
    refs.push(ref);
    for (const layer of (await readLayoutImage(fixtures.layout, fixtures.images[key].tag)).layers)
      layerDigests.add(layer.digest);
  }
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 8 });
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
}, 60_000);

describe('etch create with a warm cache of converted layers', () => {
  it('writes the same bytes as the cold run without reading a single layer blob', async () => {
    const cold = await create('cold.etch', ['--cache-dir', 'warm-cache']);
    expect(cold.code, cold.stderr).toBe(0);
    const listed = JSON.parse((await etch(['cache', 'ls', '--cache-dir', 'warm-cache', '--json'])).stdout);
    expect(listed.convertedLayers.count, 'converted layers cached: one per layer directory').toBe(
      await diffDirs('cold.etch'),
    );
    expect(listed.convertedLayers.bytes).toBeGreaterThan(0);

    // Every cached layer blob replaced by as many zeros: a run that reads one fails its digest check.
    for (const digest of layerDigests) {
      const blob = dir.join('warm-cache', 'oci', 'blobs', 'sha256', digest.slice('sha256:'.length));
      const handle = await open(blob, 'r+');
      const { size } = await handle.stat();
      await handle.write(Buffer.alloc(size), 0, size, 0);
      await handle.close();
    }
    const warm = await create('warm.etch', ['--cache-dir', 'warm-cache']);
    expect(warm.code, warm.stderr).toBe(0);
    const [coldBytes, warmBytes] = await Promise.all([
      readFile(dir.join('cold.etch')),
      readFile(dir.join('warm.etch')),
    ]);
    expect(warmBytes.length, 'size of warm.etch against cold.etch').toBe(coldBytes.length);
    expect(firstDifference(warmBytes, coldBytes), 'first offset where warm.etch differs from cold.etch').toBe(-1);
  });

  it('finds a damaged entry before using it, converts that layer again and says where the damage was', async () => {
    const cold = await create('cold-2.etch', ['--cache-dir', 'damage-cache']);
    expect(cold.code, cold.stderr).toBe(0);
    const converted = dir.join('damage-cache', 'oci', 'converted');
    const [data] = (await readdir(converted)).filter((name) => name.endsWith('.tar'));
    await flipByte(join(converted, data as string), 1500);
    const rebuilt = await create('rebuilt.etch', ['--cache-dir', 'damage-cache'], false);
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    expect(rebuilt.stderr).toContain(`warning: The cached conversion of layer sha256:`);
    expect(rebuilt.stderr).toContain(join(converted, data as string));
    expect(rebuilt.stderr).toContain('etch cache clean');
    const [a, b] = await Promise.all([readFile(dir.join('cold-2.etch')), readFile(dir.join('rebuilt.etch'))]);
    expect(firstDifference(b, a), 'first offset where rebuilt.etch differs from cold-2.etch').toBe(-1);
    // The layer was converted again and kept: the next run finds nothing damaged.
    const again = await create('again.etch', ['--cache-dir', 'damage-cache'], false);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toContain('warning');
  });

  it('takes a data file replaced by a FIFO for damage instead of waiting on it forever', async () => {
    const cold = await create('cold-3.etch', ['--cache-dir', 'fifo-cache']);
    expect(cold.code, cold.stderr).toBe(0);
    const converted = dir.join('fifo-cache', 'oci', 'converted');
    const [data] = (await readdir(converted)).filter((name) => name.endsWith('.tar'));
    const fifo = join(converted, data as string);
    await rm(fifo);
    await run('mkfifo', [fifo]);
    // A read of a FIFO nobody writes never starts: before the fix this run hung until the test timed out.
    const rebuilt = await create('fifo.etch', ['--cache-dir', 'fifo-cache'], false);
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    expect(rebuilt.stderr).toContain(`warning: The cached conversion of layer sha256:`);
    expect(rebuilt.stderr).toContain(`${fifo} is damaged (it is not a regular file`);
    const [a, b] = await Promise.all([readFile(dir.join('cold-3.etch')), readFile(dir.join('fifo.etch'))]);
    expect(firstDifference(b, a), 'first offset where fifo.etch differs from cold-3.etch').toBe(-1);
  });

  it('is listed and removed by etch cache, and --no-cache keeps nothing', async () => {
    const built = await create('listed.etch', ['--cache-dir', 'clean-cache']);
    expect(built.code, built.stderr).toBe(0);
    const human = await etch(['cache', 'ls', '--cache-dir', 'clean-cache']);
    expect(human.stdout).toMatch(/^ {2}unpacked layers +\d+, [\d.]+ [KM]iB$/m);
    const cleaned = await etch(['cache', 'clean', '--cache-dir', 'clean-cache']);
    expect(cleaned.code, cleaned.stderr).toBe(0);
    expect(cleaned.stdout).toMatch(/\d+ unpacked layers? \(/);
    expect(existsSync(dir.join('clean-cache', 'oci', 'converted'))).toBe(false);

    const uncached = await create('uncached.etch', ['--no-cache']);
    expect(uncached.code, uncached.stderr).toBe(0);
    expect(existsSync(dir.join('.cache', 'etch', 'oci', 'converted')), 'the default cache after --no-cache').toBe(
      false,
    );
  });
});
