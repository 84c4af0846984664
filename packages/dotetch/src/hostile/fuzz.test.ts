// A short fuzz run in `pnpm test`: random mutations of a valid .etch, read in a child process under a time
// limit and a memory watch. Every input must end in success or a typed EtchError; never a hang, a crash or
// unbounded memory. ETCH_FUZZ_RUNS=20000 ETCH_FUZZ_SEED=7 runs longer, on demand.
import { access, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { DISK_TOOLS, ensureTools } from '@etch/test-utils/system';
import { entry, etchOf, makeTinyDisk, paxEntry } from './corpus.test.helper.js';
import { runChild } from './run-etch.test.helper.js';

const RUNS = Number(process.env['ETCH_FUZZ_RUNS'] ?? 1000);
const SEED = Number(process.env['ETCH_FUZZ_SEED'] ?? 20_240_601);
const CHILD = fileURLToPath(new URL('./fuzz-child.test.helper.mjs', import.meta.url));

let work: TempDir;
beforeAll(async () => {
  ensureTools(DISK_TOOLS);
  await access(new URL('../../../tar/dist/index.js', import.meta.url)).catch((cause: unknown) => {
    throw new Error('The fuzz child loads @etch/tar from dist/: build first (pnpm build).', { cause });
  });
  work = await createTempDir('etch-fuzz-');
});
afterAll(() => work?.remove());

describe('fuzz: mutations of a valid .etch', () => {
  it(`${RUNS} mutations (seed ${SEED}) end in success or a typed error, in bounded time and memory`, async () => {
    const tiny = await makeTinyDisk(work.path);
    // Small enough that each mutation is read in milliseconds: the base image is the tiny disk's first MiB.
    const { readFile } = await import('node:fs/promises');
    const disk = (await readFile(tiny)).subarray(0, 4096);
    const valid = await etchOf(disk, [
      paxEntry({ 'SCHILY.xattr.user.k': 'v', mtime: '1.5' }),
      entry({ name: 'inject/2/dir/', typeflag: '5', mode: 0o755 }),
      entry({ name: 'inject/2/dir/file' }, 'content'),
      entry({ name: 'inject/2/dir/link', typeflag: '2', linkname: 'file' }),
      entry({ name: 'inject/2/dir/hard', typeflag: '1', linkname: 'inject/2/dir/file' }),
      entry({ name: 'inject/1/boot.txt' }, 'x'.repeat(700)),
    ]);
    const path = work.join('valid.etch');
    await writeFile(path, valid);
    const result = await runChild(process.execPath, [CHILD, String(SEED), String(RUNS), path], {
      cwd: work.path,
      timeoutMs: 20_000 + RUNS * 50,
      maxRssMiB: 300,
    });
    const lines = result.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { i: number; outcome: string; ms: number });
    const untyped = lines.filter((l) => l.outcome.startsWith('untyped'));
    const slowest = lines.reduce((a, b) => (b.ms > a.ms ? b : a), { i: -1, outcome: '', ms: 0 });
    const outcomes = new Map<string, number>();
    for (const l of lines)
      outcomes.set(l.outcome.split(':')[0] as string, (outcomes.get(l.outcome.split(':')[0] as string) ?? 0) + 1);
    console.log(
      `fuzz: ${lines.length} inputs (seed ${SEED}) in ${result.ms} ms, peak ${result.peakRssMiB} MiB, slowest input ${slowest.ms} ms (#${slowest.i}); ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`,
    );
    const context = `seed ${SEED}, stopped after input #${lines.length} (${result.killed ?? `exit ${result.code}`})\n${result.stderr.slice(-800)}`;
    expect(result.killed, context).toBeUndefined();
    expect(result.code, context).toBe(0);
    expect(lines.length, context).toBe(RUNS);
    expect(untyped, context).toEqual([]);
    expect(slowest.ms, `slowest input #${slowest.i}`).toBeLessThan(2000);
  });
});
