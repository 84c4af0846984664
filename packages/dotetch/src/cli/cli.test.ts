import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, symlink, truncate, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { collect, craftTar, createTempDir, type CraftedEntry, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { runCli } from './in-process.test.helper.js';

const bin = fileURLToPath(new URL('../../bin/etch.js', import.meta.url));
let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir();
});
afterEach(() => dir.remove());

const etch = (args: string[], options: { isTTY?: boolean } = {}) => runCli(args, { cwd: dir.path, ...options });

async function fixtures(): Promise<void> {
  await writeFile(dir.join('disk.img'), Buffer.alloc(70_000, 7));
  await mkdir(dir.join('boot'));
  await writeFile(dir.join('boot', 'config.json'), '{"hostname":"x"}');
  await mkdir(dir.join('data', 'sub'), { recursive: true });
  await writeFile(dir.join('data', 'sub', 'file.txt'), 'data!');
  await symlink('sub/file.txt', dir.join('data', 'link'));
}

describe('etch create with images that do not exist', () => {
  it('stops with the image error before writing, and leaves nothing', async () => {
    await fixtures();
    const result = await etch([
      'create',
      '--base',
      'disk.img',
      '--image',
      'docker-archive:/nonexistent.tar',
      '--platform',
      'linux/arm64',
      '--ignore-base-repositories',
      '-o',
      'out.etch',
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('ETCH_NOT_FOUND');
    expect(result.stderr).toContain('/nonexistent.tar');
    expect((await readdir(dir.path)).filter((n) => n.includes('out.etch'))).toEqual([]);
  });
});

describe('etch create stages', () => {
  it("removes the stages killed runs of this host left in the cache, and nobody else's", async () => {
    const sample = fileURLToPath(new URL('../../../../examples/sample/', import.meta.url));
    const oci = dir.join('cache', 'oci');
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
    // A pid above Linux's pid_max: that run is certainly gone.
    const left = {
      dead: `stage-${host}-999999999-aaaa`,
      live: `stage-${host}-${process.pid}-bbbb`,
      other: 'stage-another-host-999999999-cccc',
    };
    for (const name of Object.values(left)) {
      await mkdir(join(oci, name), { recursive: true });
      await writeFile(join(oci, name, 'layer.tar'), 'x');
    }
    const result = await etch([
      'create',
      '--base',
      join(sample, 'balena-sample.img'),
      '--image',
      `oci:${join(sample, 'app')}:v1`,
      '--platform',
      'linux/arm64',
      '--cache-dir',
      dir.join('cache'),
      '-o',
      'out.etch',
      '-q',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect((await readdir(oci)).filter((n) => n.startsWith('stage-')).sort()).toEqual([left.live, left.other].sort());
  });
});

describe('etch create → etch inspect', () => {
  it('round-trips, and GNU tar lists and extracts the result', async () => {
    await fixtures();
    const created = await etch([
      'create',
      '--base',
      'disk.img',
      '--inject',
      '1:boot:/boot-extra',
      '--inject',
      '6:data',
      '-o',
      'out.etch',
      '--json',
    ]);
    expect(created.code, created.stderr).toBe(0);
    const summary = JSON.parse(created.stdout);
    expect(summary).toMatchObject({
      schemaVersion: 1,
      baseImage: { name: 'disk.img', size: 70_000, container: 'raw' },
      partitions: [
        { number: 1, entries: 2, announced: { entries: 2, bytes: 16 } },
        { number: 6, entries: 3, bytes: 5, announced: { entries: 3, bytes: 5 } },
      ],
      images: [],
    });

    const inspected = await etch(['inspect', 'out.etch', '--json']);
    expect(inspected.code).toBe(0);
    const report = JSON.parse(inspected.stdout);
    // etch create announces what each partition receives (format 1.1), and it covers what was written.
    expect(report).toMatchObject({
      schemaVersion: 1,
      version: '1.1',
      compression: 'none',
      baseImage: { name: 'disk.img', container: 'raw', size: 70_000 },
      partitions: [
        {
          number: 1,
          entries: 2,
          bytes: 16,
          types: { directory: 1, file: 1 },
          announced: { bytes: 16, entries: 2 },
        },
        {
          number: 6,
          entries: 3,
          bytes: 5,
          types: { directory: 1, file: 1, symlink: 1 },
          announced: { bytes: 5, entries: 3 },
        },
      ],
    });

    const listing = (await run('tar', ['-tf', dir.join('out.etch')])).stdout.trim().split('\n');
    expect(listing).toEqual([
      'VERSION',
      'disk.img',
      'requirements.json',
      'inject/1/boot-extra/',
      'inject/1/boot-extra/config.json',
      'inject/6/link',
      'inject/6/sub/',
      'inject/6/sub/file.txt',
    ]);
    await mkdir(dir.join('x'));
    await run('tar', ['-xf', dir.join('out.etch'), '-C', dir.join('x')]);
    expect((await run('cat', [dir.join('x', 'inject', '6', 'link')])).stdout).toBe('data!');
  });

  it('shows redrawn progress lines on a terminal, plain lines otherwise, nothing with -q', async () => {
    await fixtures();
    const tty = await etch(['create', '--base', 'disk.img', '-o', 'a.etch'], { isTTY: true });
    expect(tty.stderr).toMatch(/base image +disk\.img +written +68\.4 KiB/);
    expect(tty.stderr).toMatch(/sync +synced/);
    const plain = await etch(['create', '--base', 'disk.img', '-o', 'b.etch']);
    expect(plain.stderr).toContain('etch: writing base image disk.img (68.4 KiB)');
    expect(plain.stderr).toContain('etch: syncing to disk');
    expect(plain.stderr).not.toContain('\r');
    const quiet = await etch(['create', '--base', 'disk.img', '-o', 'c.etch', '-q']);
    expect(quiet).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('writes a zstd .etch that inspect reads', async () => {
    await fixtures();
    expect((await etch(['create', '--base', 'disk.img', '--compress', 'zstd', '-o', 'z.etch', '-q'])).code).toBe(0);
    const report = JSON.parse((await etch(['inspect', 'z.etch', '--json'])).stdout);
    expect(report.compression).toBe('zstd');
  });
});

describe('errors and exit codes', () => {
  it.each([
    [['create', '--base', 'disk.img'], 'output'],
    [['create', '-o', 'x.etch'], '--base'],
    [['create', '--base', 'disk.img', '-o', 'x.etch', '--inject', '0:boot'], 'partition'],
    [['create', '--base', 'disk.img', '-o', 'x.etch', '--inject', 'boot'], 'PART:LOCALDIR'],
    [['create', '--base', 'disk.img', '-o', 'x.etch', '--compress', 'xz'], 'gzip or zstd'],
    [['create', '--bogus'], 'bogus'],
    [['frobnicate'], 'unknown command'],
  ])('usage error for %j exits 2 naming the problem', async (args, word) => {
    const result = await etch(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('ETCH_USAGE');
    expect(result.stderr).toContain(word);
  });

  it('a missing base image exits 1 with ETCH_NOT_FOUND and leaves no output', async () => {
    const result = await etch(['create', '--base', 'nope.img', '-o', 'x.etch']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^etch: ETCH_NOT_FOUND: Cannot read the base image .*nope\.img/m);
    expect(await readdir(dir.path)).toEqual([]);
  });

  const invalid: [string, CraftedEntry[], string][] = [
    ['no VERSION', [{ name: 'a.img', content: 'x' }], 'ETCH_BAD_VERSION'],
    [
      'major 2',
      [
        { name: 'VERSION', content: '2.0' },
        { name: 'a.img', content: 'x' },
      ],
      'ETCH_UNSUPPORTED_VERSION',
    ],
    [
      'two base images',
      [
        { name: 'VERSION', content: '1.0' },
        { name: 'a.img', content: 'x' },
        { name: 'b.img', content: 'x' },
      ],
      'ETCH_BAD_ORDER',
    ],
    [
      'inject first',
      [
        { name: 'VERSION', content: '1.0' },
        { name: 'inject/1/x', content: 'x' },
      ],
      'ETCH_BAD_ORDER',
    ],
    [
      'escape',
      [
        { name: 'VERSION', content: '1.0' },
        { name: 'a.img', content: 'x' },
        { name: 'inject/1/../../x', content: 'x' },
      ],
      'ETCH_UNSAFE_PATH',
    ],
    [
      'partition 0',
      [
        { name: 'VERSION', content: '1.0' },
        { name: 'a.img', content: 'x' },
        { name: 'inject/0/x', content: 'x' },
      ],
      'ETCH_BAD_ENTRY',
    ],
  ];
  it.each(invalid)('inspect of a .etch with %s exits 3 with %s', async (_label, entries, code) => {
    await writeFile(dir.join('bad.etch'), await craftTar(entries));
    const result = await etch(['inspect', 'bad.etch']);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(`etch: ${code}: `);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    const json = await etch(['inspect', 'bad.etch', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code } });
  });
});

describe('the etch binary', () => {
  it('starts when its module compile cache cannot be written', async () => {
    // The cache goes under TMPDIR unless NODE_COMPILE_CACHE says otherwise: both made impossible (a file).
    await writeFile(dir.join('not-a-dir'), '');
    for (const env of [{ TMPDIR: dir.join('not-a-dir') }, { NODE_COMPILE_CACHE: dir.join('not-a-dir', 'cache') }]) {
      const { NODE_COMPILE_CACHE: _ignored, ...rest } = process.env;
      const result = await run('node', [bin, '--version'], { env: { ...rest, ...env }, allowFailure: true });
      expect(result.code, `exit code with ${JSON.stringify(env)}: ${result.stderr}`).toBe(0);
      expect(result.stdout.trim(), `version printed with ${JSON.stringify(env)}`).toMatch(/^\d+\.\d+\.\d+$/);
    }
  });

  it('writes to stdout with -o -', async () => {
    await fixtures();
    const result = await run('node', [bin, 'create', '--base', dir.join('disk.img'), '-o', '-', '-q']);
    expect(result.stdoutBuffer.subarray(0, 7).toString()).toBe('VERSION');
  });

  /**
   * Starts `etch create` of a sparse 32 GiB base image into `out` and resolves once its temporary output exists
   * (the signal handlers are installed before it): it reads fast but not instantly, so a signal lands mid base
   * image. `closed` resolves to the exit code.
   */
  async function createMidBaseImage(out: string) {
    await writeFile(dir.join('huge.img'), '');
    await truncate(dir.join('huge.img'), 32 * 1024 * 1024 * 1024);
    const child = spawn('node', [bin, 'create', '--base', dir.join('huge.img'), '-o', dir.join(out)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const stderr = collect(child.stderr);
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    await vi.waitUntil(async () => (await readdir(dir.path)).some((name) => name.endsWith('.partial')), {
      timeout: 60_000,
      interval: 20,
    });
    return { child, stderr, closed };
  }

  it('Ctrl-C aborts within a second, exits 130 and leaves no output file', async () => {
    const { child, stderr, closed } = await createMidBaseImage('out.etch');
    const sent = Date.now();
    child.kill('SIGINT');
    const code = await closed;
    expect(Date.now() - sent).toBeLessThan(1000);
    expect(code).toBe(130);
    expect((await stderr).toString()).toContain('ETCH_ABORTED');
    expect(await readdir(dir.path)).toEqual(['huge.img']);
  });

  it('a second interrupt (Ctrl-C after a SIGTERM) exits at once, and still leaves no temporary file', async () => {
    const { child, stderr, closed } = await createMidBaseImage('twice.etch');
    // Back to back, and of two kinds (two pending signals of one kind are delivered once): the second is
    // handled while the first one's cleanup is still under way.
    child.kill('SIGTERM');
    child.kill('SIGINT');
    const code = await closed;
    expect(code, (await stderr).toString()).toBe(130);
    expect(await readdir(dir.path), 'files left in the output folder').toEqual(['huge.img']);
  });
});

describe('etch create is reproducible', () => {
  const sample = fileURLToPath(new URL('../../../../examples/sample/', import.meta.url));
  const create = (out: string, cache: string, extra: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli(
      [
        'create',
        '--base',
        join(sample, 'balena-sample.img'),
        '--inject',
        `1:${join(sample, 'boot')}`,
        '--image',
        `oci:${join(sample, 'app')}:v1`,
        '--platform',
        'linux/arm64',
        '--cache-dir',
        dir.join(cache),
        '-o',
        out,
        '-q',
        ...extra,
      ],
      { cwd: dir.path, env },
    );

  /** The first byte at which two files differ, for a failure message that says where. */
  function firstDifference(a: Buffer, b: Buffer): string {
    const length = Math.min(a.length, b.length);
    for (let i = 0; i < length; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`;
    return a.length === b.length ? 'none' : `lengths ${a.length} vs ${b.length}`;
  }

  it.each([[[]], [['--compress', 'gzip']], [['--compress', 'zstd']]] as string[][][])(
    'gives byte-identical files for the same inputs %j, from a cold and a warm cache',
    async (extra) => {
      // Different cache folders and a pause: nothing of the run (time, paths, cache state) may leak in.
      const first = await create('a.etch', 'cache-a', extra);
      expect(first.code, first.stderr).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const second = await create('b.etch', 'cache-b', extra);
      expect(second.code, second.stderr).toBe(0);
      const third = await create('c.etch', 'cache-a', extra);
      expect(third.code, third.stderr).toBe(0);
      const [a, b, c] = await Promise.all(['a.etch', 'b.etch', 'c.etch'].map((n) => readFile(dir.join(n))));
      expect(firstDifference(a as Buffer, b as Buffer), 'a.etch vs b.etch (cold caches)').toBe('none');
      expect(firstDifference(a as Buffer, c as Buffer), 'a.etch vs c.etch (warm cache)').toBe('none');
      if (extra[1] === 'gzip') {
        // RFC 1952 header: MTIME (bytes 4–7) zero, OS (byte 9) 3 = Unix, whatever the clock says.
        expect([...(a as Buffer).subarray(0, 10)], 'gzip header').toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
      }
    },
  );

  it('stamps the entries it makes with SOURCE_DATE_EPOCH, else 1980-01-01, and refuses a malformed one', async () => {
    const stamped = await create('s.etch', 'cache', [], { SOURCE_DATE_EPOCH: '1700000000' });
    expect(stamped.code, stamped.stderr).toBe(0);
    const plain = await create('p.etch', 'cache', []);
    expect(plain.code, plain.stderr).toBe(0);
    const times = async (file: string) => {
      const listing = (await run('tar', ['--utc', '--full-time', '-tvf', dir.join(file)])).stdout.trim().split('\n');
      return new Map(
        listing.map((line) => [
          line.split(/\s+/).slice(5).join(' ').split(' -> ')[0],
          line.split(/\s+/)[3] + ' ' + line.split(/\s+/)[4],
        ]),
      );
    };
    const s = await times('s.etch');
    const p = await times('p.etch');
    expect(s.get('balena-sample.img'), 'base image entry with SOURCE_DATE_EPOCH').toBe('2023-11-14 22:13:20');
    expect(p.get('balena-sample.img'), 'base image entry without it').toBe('1980-01-01 00:00:00');
    expect(s.get('inject/6/docker/image/overlay2/repositories.json'), 'engine store file').toBe('2023-11-14 22:13:20');
    expect(p.get('inject/6/docker/image/overlay2/repositories.json'), 'engine store file').toBe('1980-01-01 00:00:00');
    const bad = await create('x.etch', 'cache', [], { SOURCE_DATE_EPOCH: 'yesterday' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('SOURCE_DATE_EPOCH');
  });
});
