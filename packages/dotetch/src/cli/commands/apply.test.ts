import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { craftTar, createTempDir, type TempDir } from '@etch/test-utils';
import { makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { createTarPack, promisePacker } from '@etch/tar';
import { etchBin } from '../binary.test.helper.js';
import { parseBytes } from '../format-bytes.js';
import { runCli } from '../in-process.test.helper.js';

const MIB = 1024 * 1024;
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
let dir: TempDir;
let offsets: Record<number, number>;

const etch = (args: string[], options: { stdin?: Readable; signal?: AbortSignal; cwd?: string } = {}) =>
  runCli(args, { ...options, cwd: options.cwd ?? dir.path });

/** Files in a folder, leaving out the inputs every test shares. */
async function outputs(path: string): Promise<string[]> {
  return (await readdir(path)).filter((name) => !['base.img', 'boot', 'data', 'small.etch'].includes(name)).sort();
}

beforeAll(async () => {
  dir = await createTempDir('etch-apply-cli-');
  offsets = await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 8 });
  await mkdir(dir.join('boot', 'overlays'), { recursive: true });
  await writeFile(dir.join('boot', 'config.json'), '{"hostname":"etched"}\n');
  await writeFile(dir.join('boot', 'overlays', 'a.dtbo'), Buffer.from([0xd0, 0x0d, 0xfe, 0xed]));
  await mkdir(dir.join('data', 'apps'), { recursive: true });
  await writeFile(dir.join('data', 'apps', 'app.txt'), 'preloaded\n');
  await symlink('apps/app.txt', dir.join('data', 'current'));
  const created = await etch([
    'create',
    '--base',
    'base.img',
    '--inject',
    '1:boot',
    '--inject',
    '6:data',
    '-o',
    'small.etch',
    '-q',
  ]);
  expect(created.code, created.stderr).toBe(0);
});
afterAll(() => dir.remove());

describe('etch apply', () => {
  it('writes a .etch onto an image, grows it to --size, verifies, and prints the summary with --json', async () => {
    const result = await etch(['apply', 'small.etch', '--output', 'disk.img', '--size', '64M', '--verify', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary).toMatchObject({
      schemaVersion: 1,
      output: dir.join('disk.img'),
      baseImage: { name: 'base.img', size: (await stat(dir.join('base.img'))).size },
      diskSize: 64 * MIB,
      verified: true,
      partitions: [
        { number: 1, filesystem: 'fat', entries: 3, bytes: 26, grown: false },
        { number: 6, filesystem: 'ext', entries: 3, bytes: 10, size: 64 * MIB - (offsets[6] as number), grown: true },
      ],
    });
    expect(summary.durationMs).toBeGreaterThanOrEqual(0);
    expect((await stat(dir.join('disk.img'))).size).toBe(64 * MIB);
    // Progress went to stderr as plain lines; stdout holds the JSON only.
    expect(result.stderr).toContain('etch: writing base image base.img');
    expect(result.stderr).toContain('etch: verifying what was written');
    expect(result.stderr).not.toContain('\r');

    const image = dir.join('disk.img');
    const config = await run('mcopy', ['-n', '-i', `${image}@@${offsets[1]}`, '::/config.json', '-'], {
      env: mtoolsEnv,
    });
    expect(config.stdout).toBe('{"hostname":"etched"}\n');
    const device = `${image}?offset=${offsets[6]}`;
    expect((await run('debugfs', ['-R', 'cat /apps/app.txt', device])).stdout).toBe('preloaded\n');
    expect((await run('debugfs', ['-R', 'stat /current', device])).stdout).toMatch(/Fast link dest: "apps\/app\.txt"/);
    const fsck = await run('e2fsck', ['-fn', device], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
  });

  it('--mount writes the ext partition through a loop mount (root) with the same content, and leaves no mount', async () => {
    await mkdir(dir.join('staging-mounted'));
    const result = await etch([
      'apply',
      'small.etch',
      '-o',
      'mounted.img',
      '--mount',
      '--verify',
      '--json',
      '-v',
      '--temp-dir',
      'staging-mounted',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr, 'the log of the apply').toMatch(/injecting through a mount partition=6/);
    expect(JSON.parse(result.stdout)).toMatchObject({
      verified: true,
      partitions: [
        { number: 1, filesystem: 'fat', entries: 3 },
        { number: 6, filesystem: 'ext', entries: 3, bytes: 10 },
      ],
    });
    const device = `${dir.join('mounted.img')}?offset=${offsets[6]}`;
    expect((await run('debugfs', ['-R', 'cat /apps/app.txt', device])).stdout, '/apps/app.txt').toBe('preloaded\n');
    expect((await run('debugfs', ['-R', 'stat /current', device])).stdout).toMatch(/Fast link dest: "apps\/app\.txt"/);
    const fsck = await run('e2fsck', ['-fn', device], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    const mounts = await run('findmnt', ['-rn', '-o', 'TARGET']);
    expect(mounts.stdout.split('\n').filter((target) => target.startsWith(dir.join('staging-mounted')))).toEqual([]);
    await rm(dir.join('mounted.img'));
  });

  it('--mount: Ctrl-C while the partition is mounted and the input stalls exits 130 with no mount and no image', async () => {
    // The .etch comes on stdin and stops after its first entry: the partition is mounted, and stays so.
    await mkdir(dir.join('staging-ctrl-c'));
    const args = ['apply', '-', '-o', 'interrupted.img', '--mount', '-v', '--temp-dir', 'staging-ctrl-c'];
    const child = spawn(process.execPath, [etchBin, ...args], {
      cwd: dir.path,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    let stderr = '';
    const mounted = new Promise<void>((resolve) =>
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (stderr.includes('injecting through a mount')) resolve();
      }),
    );
    const pack = createTarPack();
    pack.pipe(child.stdin);
    const write = promisePacker(pack);
    await write({ name: 'VERSION', mtime: new Date(0) }, '1.1');
    await write(
      { name: 'base.img', size: (await stat(dir.join('base.img'))).size },
      createReadStream(dir.join('base.img')),
    );
    await write({ name: 'requirements.json', mtime: new Date(0) }, '{"partitions":{"6":{"bytes":4096,"entries":2}}}');
    await write({ name: 'inject/6/first.txt', mtime: new Date(0) }, 'first\n');
    await Promise.race([mounted, exited.then(() => Promise.reject(new Error(`etch apply ended early: ${stderr}`)))]);
    child.kill('SIGINT');
    expect(await exited, stderr).toBe(130);
    pack.destroy();
    const left = (await readdir(dir.path)).filter((name) => name.includes('interrupted'));
    expect(left, 'the image or its partial file left behind').toEqual([]);
    const mounts = await run('findmnt', ['-rn', '-o', 'TARGET']);
    const mountsLeft = mounts.stdout.split('\n').filter((target) => target.startsWith(dir.join('staging-ctrl-c')));
    expect(mountsLeft, 'mounts left').toEqual([]);
  });

  it('keeps an image grown with --size sparse: the added space is a hole, not written zeros', async () => {
    const result = await etch(['apply', 'small.etch', '--output', 'sparse.img', '--size', '256M', '--verify']);
    expect(result.code, result.stderr).toBe(0);
    const info = await stat(dir.join('sparse.img'));
    expect(info.size, 'apparent size of the image').toBe(256 * MIB);
    const base = (await stat(dir.join('base.img'))).size;
    // What resize2fs adds for 256 MiB (group descriptors, bitmaps, a journal already there) is a few MiB.
    expect(info.blocks * 512, `bytes allocated for a ${base}-byte base image grown to 256 MiB`).toBeLessThan(
      base + 16 * MIB,
    );
    const fsck = await run('e2fsck', ['-fn', `${dir.join('sparse.img')}?offset=${offsets[6]}`], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
    await rm(dir.join('sparse.img'));
  });

  it('reads the .etch from stdin with "-" and prints a human summary on stdout', async () => {
    const result = await etch(['apply', '-', '-o', 'piped.img'], { stdin: createReadStream(dir.join('small.etch')) });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^wrote piped\.img \(30\.0 MiB\) in [\d.]+ s$/m);
    expect(result.stdout).toMatch(/^ {2}partition 1 \(fat\): 3 entries, 26 B$/m);
    expect(result.stdout).toMatch(/^ {2}partition 6 \(ext\): 3 entries, 10 B$/m);
    expect(result.stderr).not.toContain('wrote');
    const quiet = await etch(['apply', '-', '-o', 'quiet.img', '-q'], {
      stdin: createReadStream(dir.join('small.etch')),
    });
    expect(quiet).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('replaces an existing image file only once the new one is complete', async () => {
    await writeFile(dir.join('old.img'), 'previous contents');
    const bad = await etch(['apply', 'nope.etch', '-o', 'old.img']);
    expect(bad.code).toBe(1);
    expect((await stat(dir.join('old.img'))).size).toBe('previous contents'.length);
    const good = await etch(['apply', 'small.etch', '-o', 'old.img', '-q']);
    expect(good.code, good.stderr).toBe(0);
    expect((await stat(dir.join('old.img'))).size).toBe((await stat(dir.join('base.img'))).size);
  });
});

describe('etch apply errors and exit codes', () => {
  it.each([
    [['apply', '-o', 'x.img'], 'give the .etch'],
    [['apply', 'small.etch'], '--output is required'],
    [['apply', 'small.etch', 'extra', '-o', 'x.img'], 'extra'],
    [['apply', 'small.etch', '-o', '-'], 'stdout'],
    [['apply', 'small.etch', '-o', 'x.img', '--size', 'big'], 'not a size'],
    [['apply', 'small.etch', '-o', 'x.img', '--size', '0'], 'not a size'],
    [['apply', 'small.etch', '-o', 'x.img', '--bogus'], 'bogus'],
    [['apply', '-', '-o', 'x.img'], 'stdin'],
  ])('usage error for %j exits 2 with a one-line message', async (args, words) => {
    const result = await etch(args);
    expect(result.code).toBe(2);
    const [first, ...rest] = result.stderr.split('\n');
    expect(first).toMatch(/^etch: ETCH_USAGE: /);
    expect(first).toContain(words);
    // Then where to read more, not the whole help page.
    expect(rest.join('\n').trim()).toBe("Run 'etch apply --help' for usage.");
    expect(await outputs(dir.path)).not.toContain('x.img');
    const json = await etch([...args, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'ETCH_USAGE' } });
  });

  it('a missing .etch exits 1 with ETCH_IO', async () => {
    const result = await etch(['apply', 'nope.etch', '-o', 'x.img']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^etch: ETCH_IO: Cannot read .*nope\.etch/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('an invalid .etch exits 3 and leaves no image', async () => {
    const work = await createTempDir('etch-apply-bad-');
    try {
      await writeFile(work.join('bad.etch'), await craftTar([{ name: 'a.img', content: 'x' }]));
      const result = await etch(['apply', 'bad.etch', '-o', 'x.img'], { cwd: work.path });
      expect(result.code).toBe(3);
      expect(result.stderr).toMatch(/^etch: ETCH_BAD_VERSION: /);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(await readdir(work.path)).toEqual(['bad.etch']);
    } finally {
      await work.remove();
    }
  });

  it('an interrupt exits 130 and leaves no image', async () => {
    const work = await createTempDir('etch-apply-abort-');
    try {
      const controller = new AbortController();
      controller.abort();
      const result = await etch(['apply', dir.join('small.etch'), '-o', 'x.img'], {
        cwd: work.path,
        signal: controller.signal,
      });
      expect(result.code).toBe(130);
      expect(result.stderr).toContain('ETCH_ABORTED');
      expect(await readdir(work.path)).toEqual([]);
    } finally {
      await work.remove();
    }
  });

  it('etch help lists apply', async () => {
    const result = await etch(['help']);
    expect(result.stdout).toMatch(/^ {2}apply +write a \.etch onto a disk image/m);
  });
});

describe('parseBytes', () => {
  it.each([
    ['8G', 8 * 1024 ** 3],
    ['512M', 512 * MIB],
    ['512m', 512 * MIB],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['64K', 65_536],
    ['2T', 2 * 1024 ** 4],
    ['1GB', 1e9],
    ['4096', 4096],
    ['4096B', 4096],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseBytes(text)).toBe(bytes);
  });

  it.each(['', 'G', '8X', '-1G', '8 G B', '1e3', '9999999999P'])('%j is not a size', (text) => {
    expect(parseBytes(text)).toBeUndefined();
  });
});
