// Issue 19 point 8: `etch apply` memory was ~27 KB an entry (20,000 small files took 554 MB): every staged
// entry kept its pipeline alive, and a batch's debugfs script, plan and echoed output were held whole. Then,
// with the live heap flat, peak RSS still rose ~40 MiB from 1,500 to 7,500 entries: each growth of the
// filesystem copied the partition through fresh 1 MiB buffers (tens of MiB waiting for the collector, and
// growths get larger with the number of entries), each small file was staged through a stream pipeline
// (~20 KB of garbage an entry) and a batch's script was built whole before it was written. The real CLI's peak
// RSS for a .etch of 7,500 small files must stay within a few buffers of one of 1,500.
import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { DISK_TOOLS, ensureTools } from '@etch/test-utils/system';
import { entry, etchOf, makeTinyDisk } from './corpus.test.helper.js';
import { runEtch, type ChildRun } from './run-etch.test.helper.js';

// 6,000 more entries (past one batch of 5,000, two growths of 400-500 MiB): measured +16 to +24 MiB (+37 to +45
// before the fixes above; the flasher before that kept 27 KiB an entry). The bound sits between the two with
// room for a loaded machine's noise on the fixed side.
const GROWTH_MIB = 34;

let work: TempDir;
let tiny: string;

beforeAll(async () => {
  ensureTools(DISK_TOOLS);
  await access(new URL('../../dist/cli/run.js', import.meta.url)).catch((cause: unknown) => {
    throw new Error('This test runs the etch binary, which loads dist/: build first (pnpm build).', { cause });
  });
  work = await createTempDir('etch-flat-memory-');
  tiny = await makeTinyDisk(work.path);
});

afterAll(async () => {
  await work?.remove();
});

async function apply(count: number): Promise<ChildRun> {
  const cwd = work.join(`apply-${count}`);
  const box = { cwd, tmp: join(cwd, 'tmp'), cache: join(cwd, 'cache') };
  await mkdir(box.tmp, { recursive: true });
  await mkdir(box.cache, { recursive: true });
  const files = Array.from({ length: count }, (_, i) => entry({ name: `inject/2/d${i % 100}/f${i}` }, `${i}\n`));
  await writeFile(join(cwd, 'in.etch'), await etchOf(tiny, files));
  const result = await runEtch(['apply', 'in.etch', '--output', 'out.img', '-q'], box, {
    timeoutMs: 240_000,
    maxRssMiB: 1024,
  });
  await rm(cwd, { recursive: true, force: true });
  return result;
}

describe('etch apply memory, flat in the number of entries', () => {
  it('a .etch of 7,500 small files peaks within a few buffers of one of 1,500', async () => {
    const few = await apply(1_500);
    const many = await apply(7_500);
    const peaks = { '1,500 entries': few.peakRssMiB, '7,500 entries': many.peakRssMiB };
    console.log(`etch apply peak RSS (MiB): ${JSON.stringify(peaks)}; ${few.ms} ms and ${many.ms} ms`);
    expect(few.code, `1,500 entries: ${few.stderr}`).toBe(0);
    expect(many.code, `7,500 entries: ${many.stderr}`).toBe(0);
    expect(
      many.peakRssMiB - few.peakRssMiB,
      `MiB of peak RSS that 6,000 more entries added (all: ${JSON.stringify(peaks)})`,
    ).toBeLessThan(GROWTH_MIB);
  }, 480_000);
});
