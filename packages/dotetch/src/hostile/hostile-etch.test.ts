// The hostile corpus, part 1: `.etch` files and disks that are broken or malicious, run through the real
// `etch inspect` and `etch apply` in child processes. Each case asserts the exit code and error code, a time
// bound and a memory bound, and that the run left no file but its output.
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, rawTarHeader, type TempDir } from '@etch/test-utils';
import { DISK_TOOLS, ensureTools, gptWithEntries, overlappingMbr, run } from '@etch/test-utils/system';
import { TINY, entry, etchOf, makeBombDisk, makeTinyDisk, paxEntry } from './corpus.test.helper.js';
import { errorCode, listTree, runEtch, type ChildRun } from './run-etch.test.helper.js';

/** Every case must end (or be refused) within this, and stay under this resident size. */
const TIME_LIMIT_MS = 20_000;
const RSS_LIMIT_MIB = 400;

interface Outcome {
  exit: number;
  code?: string;
}
interface EtchCase {
  name: string;
  etch: () => Promise<Buffer>;
  inspect: Outcome;
  apply: Outcome;
  /** Checks on the written disk after a successful apply. */
  check?: (disk: string) => Promise<void>;
}

let work: TempDir;
let tiny: string;
let bomb: string;
const worst = { ms: 0, rss: 0, name: '' };
const runs: { name: string; ms: number; rss: number }[] = [];

beforeAll(async () => {
  ensureTools(DISK_TOOLS);
  await access(new URL('../../dist/cli/run.js', import.meta.url)).catch((cause: unknown) => {
    throw new Error('The hostile corpus runs the etch binary, which loads dist/: build first (pnpm build).', { cause });
  });
  work = await createTempDir('etch-hostile-');
  tiny = await makeTinyDisk(work.path);
  bomb = await makeBombDisk(tiny, work.path);
});

afterAll(async () => {
  if (runs.length > 0) {
    const slowest = runs.reduce((a, b) => (b.ms > a.ms ? b : a));
    const largest = runs.reduce((a, b) => (b.rss > a.rss ? b : a));
    console.log(
      `hostile .etch corpus: ${runs.length} runs; slowest ${slowest.ms} ms (${slowest.name}); largest ${largest.rss} MiB (${largest.name})`,
    );
  }
  await work?.remove();
});

const ok: Outcome = { exit: 0 };
const bad = (code: string): Outcome => ({ exit: 3, code });
const failed = (code: string): Outcome => ({ exit: 1, code });
const file = (name: string, data = 'x', fields: Partial<Parameters<typeof entry>[0]> = {}) =>
  entry({ name, ...fields }, data);

async function fsck(disk: string, offset: number): Promise<void> {
  const result = await run('e2fsck', ['-fn', `${disk}?offset=${offset}`], { allowFailure: true });
  expect(result.code, `e2fsck of the written partition:\n${result.stdout}${result.stderr}`).toBe(0);
}

const cases: EtchCase[] = [
  // Point 1: numbers in PAX records and headers.
  ...['0.5', '-1', '0x10', '1e3', '9007199254740993'].map((size): EtchCase => ({
    name: `PAX size ${size}`,
    etch: async () => etchOf(tiny, [paxEntry({ size }), file('inject/2/a.txt', 'abc')]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  })),
  {
    name: 'header size in hex',
    etch: async () => etchOf(tiny, [rawTarHeader({ name: 'inject/2/a', size: '0x10\0' }), Buffer.alloc(512)]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'header size in base-256 beyond 2^53',
    etch: async () =>
      etchOf(tiny, [rawTarHeader({ name: 'inject/2/a', size: Buffer.from([0x80, ...Buffer.alloc(11, 0xff)]) })]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'bad checksum',
    etch: async () => etchOf(tiny, [rawTarHeader({ name: 'inject/2/a', checksum: '0000001\0' })]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  // Point 7: global PAX state.
  {
    name: 'global PAX headers adding up past 1 MiB',
    etch: async () =>
      etchOf(tiny, [
        paxEntry({ 'comment.a': 'v'.repeat(600 * 1024) }, true),
        paxEntry({ 'comment.b': 'v'.repeat(600 * 1024) }, true),
        file('inject/2/a'),
      ]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'one global PAX header with 5000 records',
    etch: async () =>
      etchOf(tiny, [
        paxEntry(
          Array.from({ length: 5000 }, (_, i) => [`k${i}`, 'v'] as [string, string]),
          true,
        ),
        file('inject/2/a'),
      ]),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  // Structure.
  {
    name: 'truncated inside an entry',
    etch: async () => (await etchOf(tiny, [file('inject/2/a', 'x'.repeat(2000))], false)).subarray(0, -1000),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'no end-of-archive marker',
    etch: async () => etchOf(tiny, [file('inject/2/a')], false),
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'inject entry before the base image',
    etch: async () =>
      Buffer.concat([entry({ name: 'VERSION' }, '1.0'), file('inject/2/a'), entry({ name: 'disk.img' }, 'x')]),
    inspect: bad('ETCH_BAD_ORDER'),
    apply: bad('ETCH_BAD_ORDER'),
  },
  {
    name: 'no VERSION',
    etch: async () => Buffer.concat([file('disk.img', 'x'), Buffer.alloc(1024)]),
    inspect: bad('ETCH_BAD_VERSION'),
    apply: bad('ETCH_BAD_VERSION'),
  },
  // Escapes.
  ...[
    ['dot-dot', 'inject/2/../../etc/passwd'],
    ['absolute', 'inject/2//../x'],
    ['NUL in a PAX path', undefined],
  ].map(([label, name]): EtchCase => ({
    name: `unsafe path: ${label}`,
    etch: async () =>
      name === undefined
        ? etchOf(tiny, [paxEntry({ path: 'inject/2/a\0b' }), file('inject/2/a')])
        : etchOf(tiny, [file(name)]),
    inspect: bad('ETCH_UNSAFE_PATH'),
    apply: bad('ETCH_UNSAFE_PATH'),
  })),
  {
    name: 'PAX path override escaping',
    etch: async () => etchOf(tiny, [paxEntry({ path: 'inject/2/../../../x' }), file('inject/2/harmless')]),
    inspect: bad('ETCH_UNSAFE_PATH'),
    apply: bad('ETCH_UNSAFE_PATH'),
  },
  {
    name: 'GNU long name escaping',
    etch: async () =>
      etchOf(tiny, [entry({ name: '././@LongLink', typeflag: 'L' }, 'inject/2/../../x\0'), file('inject/2/harmless')]),
    inspect: bad('ETCH_UNSAFE_PATH'),
    apply: bad('ETCH_UNSAFE_PATH'),
  },
  {
    name: 'hardlink out of its partition',
    etch: async () =>
      etchOf(tiny, [entry({ name: 'inject/2/l', typeflag: '1', linkname: 'inject/1/boot/readme.txt' })]),
    inspect: bad('ETCH_UNSAFE_PATH'),
    apply: bad('ETCH_UNSAFE_PATH'),
  },
  // Point 4 and the metadata a filesystem stores.
  {
    name: 'directory mode with file-type bits (0100755)',
    etch: async () =>
      etchOf(tiny, [
        entry({ name: 'inject/2/d/', typeflag: '5', mode: 0o100755 }),
        file('inject/2/d/f', 'x', { mode: 0o100644 }),
      ]),
    inspect: ok,
    apply: ok,
    check: async (disk) => {
      await fsck(disk, TINY.ext);
      const stat = await run('debugfs', ['-R', 'stat /d', `${disk}?offset=${TINY.ext}`]);
      expect(stat.stdout, 'inode type of /d').toMatch(/Type: directory\s+Mode:\s+0755/);
    },
  },
  {
    name: 'uid beyond 32 bits',
    etch: async () => etchOf(tiny, [paxEntry({ uid: String(2 ** 32) }), file('inject/2/a')]),
    inspect: bad('ETCH_BAD_ENTRY'),
    apply: bad('ETCH_BAD_ENTRY'),
  },
  {
    name: 'mtime beyond 2446',
    etch: async () => etchOf(tiny, [paxEntry({ mtime: String(2 ** 35) }), file('inject/2/a')]),
    inspect: bad('ETCH_BAD_ENTRY'),
    apply: bad('ETCH_BAD_ENTRY'),
  },
  {
    // Lesser: out-of-range numbers reached debugfs and came back as ETCH_IO.
    name: 'mode beyond the file-type and permission bits (07777777)',
    etch: async () => etchOf(tiny, [file('inject/2/a', 'x', { mode: 0o7777777 })]),
    inspect: bad('ETCH_BAD_ENTRY'),
    apply: bad('ETCH_BAD_ENTRY'),
  },
  {
    name: 'xattr name starting with -',
    etch: async () => etchOf(tiny, [paxEntry({ 'SCHILY.xattr.-f': 'x' }), file('inject/2/a')]),
    inspect: ok,
    apply: bad('ETCH_BAD_ENTRY'),
  },
  // Point 12: names the flasher cannot write are refused, never half-written.
  {
    name: 'newline in a file name',
    etch: async () => etchOf(tiny, [paxEntry({ path: 'inject/2/evil\nname' }), file('inject/2/x')]),
    inspect: ok,
    apply: bad('ETCH_BAD_ENTRY'),
  },
  {
    name: 'path of 5000 bytes',
    etch: async () => etchOf(tiny, [paxEntry({ path: `inject/2/${'d/'.repeat(2500)}f` }), file('inject/2/x')]),
    inspect: ok,
    apply: bad('ETCH_BAD_ENTRY'),
  },
  {
    name: 'doubled slash after the partition (inject/2//x)',
    etch: async () => etchOf(tiny, [file('inject/2//x', 'hello')]),
    inspect: ok,
    apply: ok,
    // §5: readers fold `//`, so the file is /x of partition 2.
    check: async (disk) => {
      await fsck(disk, TINY.ext);
      const cat = await run('debugfs', ['-R', 'cat /x', `${disk}?offset=${TINY.ext}`]);
      expect(cat.stdout, 'content of /x in partition 2').toBe('hello');
    },
  },
  {
    name: 'names with shell metacharacters reach ext4 literally',
    etch: async () => etchOf(tiny, [file('inject/2/$(touch pwned);`id`|"q"\'s\\-x', 'x')]),
    inspect: ok,
    apply: ok,
    check: (disk) => fsck(disk, TINY.ext),
  },
  // Compression.
  {
    name: 'corrupt gzip .etch',
    etch: async () => {
      const zipped = gzipSync(await etchOf(tiny, [file('inject/2/a')]));
      zipped.fill(0x55, 2000, 2400);
      return zipped;
    },
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  {
    name: 'truncated zstd .etch',
    etch: async () => {
      // zstd is in node:zlib from Node 22.15; the types pinned at the engine floor do not know it yet.
      const packed = (zlib as unknown as { zstdCompressSync: (b: Buffer) => Buffer }).zstdCompressSync(
        await etchOf(tiny, [file('inject/2/a')]),
      );
      return packed.subarray(0, packed.length - 40);
    },
    inspect: bad('ETCH_BAD_ARCHIVE'),
    apply: bad('ETCH_BAD_ARCHIVE'),
  },
  // Point 5: FAT names that clash with what is there (FAT ignores case and trailing dots).
  ...[
    ['a file where the base has a folder', [file('inject/1/boot', 'x')]],
    ['a file whose name differs from a folder only in case', [file('inject/1/BOOT', 'x')]],
    ['a name with a trailing dot', [file('inject/1/boot.', 'x')]],
    [
      'a folder where the .etch put a file',
      [file('inject/1/cfg', 'x'), entry({ name: 'inject/1/CFG/', typeflag: '5' })],
    ],
  ].map(([label, body]): EtchCase => ({
    name: `FAT: ${label as string}`,
    etch: async () => etchOf(tiny, body as Buffer[]),
    inspect: ok,
    apply: bad('ETCH_BAD_ENTRY'),
  })),
  {
    name: 'FAT: a file replacing one that differs only in case',
    etch: async () => etchOf(tiny, [file('inject/1/boot/README.TXT', 'new')]),
    inspect: ok,
    apply: ok,
    check: async (disk) => {
      const listed = await run('mdir', ['-b', '-i', `${disk}@@${TINY.fat}`, '::/boot'], {
        env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
      });
      expect(listed.stdout.trim(), 'the boot folder holds one file, spelled as the .etch spells it').toBe(
        '::/boot/README.TXT',
      );
    },
  },
  // Points 2 and 3: hostile disks as the base image.
  {
    name: 'GPT with a 2 GiB entry size',
    etch: async () => etchOf(gptWithEntries(0x8000_0000, 2), [file('inject/1/a')]),
    inspect: ok,
    apply: failed('ETCH_BAD_DISK_IMAGE'),
  },
  {
    name: 'overlapping MBR partitions',
    etch: async () => etchOf(overlappingMbr(), [file('inject/1/a')]),
    inspect: ok,
    apply: failed('ETCH_BAD_DISK_IMAGE'),
  },
  {
    name: 'ext4 extent-tree bomb under the injected path',
    etch: async () => etchOf(bomb, [file('inject/2/docker/image/x')]),
    inspect: ok,
    apply: failed('ETCH_BAD_DISK_IMAGE'),
  },
];

async function sandbox(name: string): Promise<{ cwd: string; tmp: string; cache: string }> {
  const cwd = await mkdtemp(join(work.path, `${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40)}-`));
  const tmp = join(cwd, 'tmp');
  const cache = join(cwd, 'cache');
  await mkdir(tmp);
  await mkdir(cache);
  return { cwd, tmp, cache };
}

function record(name: string, result: ChildRun): void {
  runs.push({ name, ms: result.ms, rss: result.peakRssMiB });
  if (result.ms > worst.ms) Object.assign(worst, { ms: result.ms, name });
  worst.rss = Math.max(worst.rss, result.peakRssMiB);
}

function expectOutcome(what: string, result: ChildRun, outcome: Outcome): void {
  const said = `${what}: exit ${result.code} ${result.signal ?? ''} after ${result.ms} ms, ${result.peakRssMiB} MiB${result.killed ? `, killed for ${result.killed}` : ''}\n${result.stderr.slice(-600)}`;
  expect(result.killed, said).toBeUndefined();
  expect(result.code, said).toBe(outcome.exit);
  if (outcome.code !== undefined) expect(errorCode(result.stderr), said).toBe(outcome.code);
  expect(result.stderr, said).not.toMatch(/ETCH_INTERNAL|at .*\.js:\d+/);
}

describe.concurrent('hostile .etch corpus (etch inspect, etch apply)', () => {
  it.each(cases)('$name', async (c) => {
    const box = await sandbox(c.name);
    await writeFile(join(box.cwd, 'in.etch'), await c.etch());
    const limits = { timeoutMs: TIME_LIMIT_MS, maxRssMiB: RSS_LIMIT_MIB };
    const inspected = await runEtch(['inspect', 'in.etch'], box, limits);
    record(`inspect ${c.name}`, inspected);
    expectOutcome(`inspect ${c.name}`, inspected, c.inspect);
    const applied = await runEtch(['apply', 'in.etch', '--output', 'out.img'], box, limits);
    record(`apply ${c.name}`, applied);
    expectOutcome(`apply ${c.name}`, applied, c.apply);
    if (c.apply.exit === 0) await c.check?.(join(box.cwd, 'out.img'));
    const expected = ['cache', 'in.etch', 'tmp', ...(c.apply.exit === 0 ? ['out.img'] : [])].sort();
    expect(await listTree(box.cwd), `files left by ${c.name}`).toEqual(expected);
    await rm(box.cwd, { recursive: true, force: true });
  });
});
