/**
 * The conventions people bring from docker, skopeo and crane, through the real `etch` binary: help and
 * results on stdout, progress and errors on stderr, short usage errors, the common flags on every command,
 * one versioned JSON shape per object, exit codes, and every input checked before the first byte.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { craftTar, createTempDir, finishOciLayout, putLayoutBlob, type TempDir } from '@etch/test-utils';
import { freePort, makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { etchBin, runBinary } from './binary.test.helper.js';
import { runCli } from './in-process.test.helper.js';

const sample = fileURLToPath(new URL('../../../../examples/sample/', import.meta.url));
const app = `oci:${sample}app:v1`;
let dir: TempDir;

/** Through the real binary: where streams and exit codes are the point. */
const etch = (args: string[], input?: string | Buffer) =>
  runBinary(args, { cwd: dir.path, env: { XDG_CACHE_HOME: dir.join('xdg') }, ...(input ? { input } : {}) });
/** In this process (the same `main` the binary runs): for what a command prints, where a process adds nothing. */
const etchIn = (args: string[]) => runCli(args, { cwd: dir.path, env: { XDG_CACHE_HOME: dir.join('xdg') } });

/** The commands `etch --help` lists. */
function commandsIn(help: string): string[] {
  const section = help.split('\nCommands:\n')[1]?.split('\n\n')[0] ?? '';
  return [...section.matchAll(/^ {2}(\S+) /gm)].map((match) => match[1] as string);
}

/** A usage error as every command prints it: one line, then where to read more; nothing on stdout. */
function expectUsageError(
  result: { code: number; stdout: string; stderr: string },
  words: RegExp,
  command?: string,
): void {
  expect(result.code, result.stderr).toBe(2);
  expect(result.stdout).toBe('');
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^etch: ETCH_USAGE: /);
  expect(lines[0]).toMatch(words);
  expect(lines.slice(1)).toEqual([
    command ? `Run 'etch ${command} --help' for usage.` : "Run 'etch --help' for the list of commands.",
  ]);
}

beforeAll(async () => {
  dir = await createTempDir('etch-conventions-');
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 4 });
  await mkdir(dir.join('boot'));
  await writeFile(dir.join('boot', 'config.json'), '{}');
  const created = await runCli(
    ['create', '--base', 'base.img', '--inject', '1:boot', '--image', app, '--platform', 'linux/arm64', '-o', 'a.etch'],
    { cwd: dir.path, env: { XDG_CACHE_HOME: dir.join('xdg') } },
  );
  expect(created.code, created.stderr).toBe(0);
});
afterAll(() => dir?.remove());

describe('help', () => {
  it('goes to stdout: the command list, and each command page with examples', async () => {
    const top = await etch(['--help']);
    expect(top).toMatchObject({ code: 0, stderr: '' });
    expect(top.stdout).toMatch(/^Usage: etch COMMAND/);
    const listed = commandsIn(top.stdout);
    expect(listed).toEqual(expect.arrayContaining(['create', 'inspect', 'apply', 'manifest', 'cache']));
    for (const command of listed) {
      const page = command === 'create' ? await etch(['help', command]) : await etchIn(['help', command]);
      expect(page.code, page.stderr).toBe(0);
      expect(page.stderr, command).toBe('');
      expect(page.stdout, command).toMatch(new RegExp(`^Usage: etch ${command} `));
      expect(page.stdout, command).toMatch(/\nExamples:\n {2}# .+\n {2}etch /);
      expect((await runCli([command, '--help'], { cwd: dir.path })).stdout, command).toBe(page.stdout);
      for (const line of page.stdout.split('\n')) expect(line.length, `${command}: ${line}`).toBeLessThanOrEqual(110);
      expect(page.stdout, `${command}: an empty section`).not.toMatch(/\n\n\n/);
    }
  });

  it('of every command lists -q, -v and --help, which it takes, and --json but for serve (a JSON log)', async () => {
    const listed = commandsIn((await etchIn(['--help'])).stdout);
    const pages = [...listed.filter((name) => name !== 'eci'), 'eci push', 'eci pull'];
    for (const command of pages) {
      const common = command === 'serve' ? ['-q', '-v'] : ['--json', '-q', '-v'];
      const result = await etch([...command.split(' '), ...common, '--help']);
      expect(result.code, `${command}: ${result.stderr}`).toBe(0);
      expect(result.stdout, command).toMatch(new RegExp(`^Usage: etch ${command} `));
      for (const option of ['-q, --quiet', '-v, --verbose', '-h, --help', ...(command === 'serve' ? [] : ['--json'])])
        expect(result.stdout, `etch ${command} --help lists ${option}`).toMatch(new RegExp(`^ {2}${option} `, 'm'));
    }
  });

  it('aligns every option description, and tells how loopback registries are reached', async () => {
    const create = (await runCli(['help', 'create'], { cwd: dir.path })).stdout;
    // Where each option's description starts: after the option and a run of two or more spaces.
    const starts = create
      .split('\n')
      .map((line) => /^( {2}-\S(?:.*?\S)? {2,})\S/.exec(line)?.[1]?.length)
      .filter((column) => column !== undefined);
    expect(new Set(starts), 'description columns of create --help').toEqual(new Set([30]));
    expect(create).toMatch(/^ {2}--insecure-registry HOST {4}allow plain HTTP/m);
    const manifest = (await runCli(['help', 'manifest'], { cwd: dir.path })).stdout;
    expect(manifest).not.toMatch(/always/);
    expect(manifest).toMatch(/over HTTPS; loopback ones[\s\S]*?over plain HTTP when HTTPS fails/);
  });
});

describe('usage errors', () => {
  it('print one line and a hint to the command help, exit 2, and nothing on stdout', async () => {
    expectUsageError(await etch(['create', '--bogus']), /unknown option --bogus$/, 'create');
    expectUsageError(await etch(['inspect']), /give the \.etch file/, 'inspect');
    expectUsageError(await etch(['frobnicate']), /unknown command "frobnicate"/);
    expectUsageError(await etch(['help', 'frobnicate']), /unknown command "frobnicate"/);
  });

  it('come with a versioned JSON error on stdout with --json', async () => {
    const result = await etch(['create', '--json']);
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout)).toEqual({
      schemaVersion: 1,
      error: { code: 'ETCH_USAGE', message: '--base is required: the base OS image to start from.', exitCode: 2 },
    });
  });
});

describe('results', () => {
  it('of inspect, manifest and cache ls go to stdout, so they can be piped', async () => {
    const inspected = await etch(['inspect', 'a.etch']);
    expect(inspected).toMatchObject({ code: 0, stderr: '' });
    expect(inspected.stdout).toMatch(/^ {2}base image {3}base\.img/m);
    const manifest = await etch(['manifest', app, '--platform', 'linux/arm64']);
    expect(manifest).toMatchObject({ code: 0, stderr: '' });
    expect(manifest.stdout).toMatch(/^ {2}digest {6}sha256:[0-9a-f]{64}$/m);
    const cache = await etch(['cache', 'ls']);
    expect(cache).toMatchObject({ code: 0, stderr: '' });
    expect(cache.stdout).toContain(dir.join('xdg', 'etch'));
  });

  it('every command takes --json, -q and -v: -q prints the least, -v adds debug lines on stderr only', async () => {
    expect(await etch(['inspect', 'a.etch', '-q'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const verbose = await etch(['inspect', 'a.etch', '-v', '--json']);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(JSON.parse(verbose.stdout)).toMatchObject({ schemaVersion: 1 });
    const digest = await etch(['manifest', app, '--platform', 'linux/arm64', '-q']);
    expect(digest).toMatchObject({ code: 0, stderr: '' });
    expect(digest.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(await etch(['cache', 'ls', '-q'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const cache = await etch(['cache', 'ls', '--json', '-v']);
    expect(JSON.parse(cache.stdout)).toMatchObject({ schemaVersion: 1, baseImages: [] });
  });

  it('manifest --raw prints the manifest byte for byte: its sha256 is the digest', async () => {
    const raw = await etch(['manifest', app, '--platform', 'linux/arm64', '--raw']);
    expect(raw.code, raw.stderr).toBe(0);
    const digest = (await etchIn(['manifest', app, '--platform', 'linux/arm64', '-q'])).stdout.trim();
    expect(`sha256:${createHash('sha256').update(raw.stdoutBuffer).digest('hex')}`).toBe(digest);
    expect(raw.stdoutBuffer.equals(await readFile(`${sample}app/blobs/sha256/${digest.slice(7)}`))).toBe(true);
  });
});

describe('the demo (pnpm demo)', () => {
  it('says what it did in words: "1 entry", the layer\'s image, and the upper estimate explained', async () => {
    const created = await etch([
      'create',
      '--base',
      `${sample}balena-sample.img`,
      '--inject',
      `1:${sample}boot`,
      '--inject',
      `6:${sample}data:/sample`,
      '--image',
      app,
      '--platform',
      'linux/arm64',
      '--no-cache',
      '-o',
      'demo.etch',
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^ {2}partition 1 +1 entry +97 B$/m);
    expect(created.stdout).not.toMatch(/announced|1 entries/);
    // Progress (not a terminal here): one line per step, the layer named with its image, no jargon.
    expect(created.stderr).toMatch(new RegExp(`^etch: writing layer sha256:[0-9a-f]{12} of ${app} \\(\\d+ B\\)$`, 'm'));
    expect(created.stderr).toMatch(/^etch: syncing to disk$/m);
    expect(created.stderr).not.toMatch(/ahead|converting/);
    const inspected = await etch(['inspect', 'demo.etch']);
    expect(inspected.code, inspected.stderr).toBe(0);
    expect(inspected.stdout).toMatch(/^ {2}partition 1 {2}1 entry, 97 B \(1 file\)$/m);
    expect(inspected.stdout).toMatch(
      /^ {2}partition 6 {2}35 entries, [\d.]+ KiB \(21 folders, 13 files, 1 symlink\)$/m,
    );
    expect(inspected.stdout).toMatch(/requirements\.json: an upper estimate, so above what is written/);
    expect(inspected.stdout).not.toMatch(/announced|1 entries/);
  });
});

describe('--json', () => {
  it('describes an image with the same fields in create, inspect and manifest', async () => {
    const created = JSON.parse(
      (
        await runCli(
          ['create', '--base', 'base.img', '--image', app, '--platform', 'linux/arm64', '-o', 'b.etch', '--json'],
          { cwd: dir.path, env: { XDG_CACHE_HOME: dir.join('xdg') } },
        )
      ).stdout,
    );
    const inspected = JSON.parse((await etchIn(['inspect', 'b.etch', '--json'])).stdout);
    const manifest = JSON.parse((await etchIn(['manifest', app, '--platform', 'linux/arm64', '--json'])).stdout);
    for (const document of [created, inspected, manifest]) expect(document.schemaVersion).toBe(1);
    const [made] = created.images;
    const [found] = inspected.images;
    expect(made).toMatchObject({
      reference: app,
      tags: ['etch/sample-app:v1'],
      partition: 6,
      platform: 'linux/arm64',
      digest: manifest.image.digest,
      imageId: manifest.image.imageId,
    });
    for (const field of ['imageId', 'tags', 'digests', 'partition', 'unpackedSize'])
      expect(found[field], `inspect's image.${field}`).toEqual(made[field]);
    expect(found.preloaded).toBe(true);
    expect(made.layers.map((l: { digest: string }) => l.digest)).toEqual(
      manifest.image.layers.map((l: { digest: string }) => l.digest),
    );
    expect(created.partitions.map((p: { number: number }) => p.number)).toEqual(
      inspected.partitions.map((p: { number: number }) => p.number),
    );
  });
});

describe('inspect', () => {
  it('reads the .etch from stdin with "-"', async () => {
    const result = await etch(['inspect', '-', '--json'], await readFile(dir.join('a.etch')));
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ file: '-', baseImage: { name: 'base.img' } });
  });

  it('names the folder it was given instead of reporting EISDIR', async () => {
    const result = await etch(['inspect', 'boot']);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('etch: ETCH_IO: Cannot read boot: it is a folder, not a .etch file.');
  });

  it('refuses inject entries for a partition the base image lacks, or for its extended partition (exit 3)', async () => {
    for (const partition of [99, 4]) {
      const file = `p${partition}.etch`;
      await writeFile(
        dir.join(file),
        await craftTar([
          { name: 'VERSION', content: '1.0' },
          { name: 'base.img', content: await readFile(dir.join('base.img')) },
          { name: `inject/${partition}/x`, content: 'x' },
        ]),
      );
      // The binary for the first: exit code 3 as a process sees it.
      const result = partition === 99 ? await etch(['inspect', file]) : await etchIn(['inspect', file]);
      expect(result.code, result.stderr).toBe(3);
      expect(result.stderr).toMatch(
        partition === 99
          ? /^etch: ETCH_BAD_ENTRY: inject\/99\/x: The disk image has no partition 99 \(it has: 1, 2, 3, 5, 6\)/
          : /^etch: ETCH_BAD_ENTRY: inject\/4\/x: Partition 4 is the MBR extended partition/,
      );
    }
  });
});

/** An OCI layout in `dir/name` holding one linux/amd64 image, tag v1, of one uncompressed layer of `entries`. */
async function ociLayout(name: string, entries: Parameters<typeof craftTar>[0]): Promise<string> {
  const layout = dir.join(name);
  return finishOciLayout(layout, [await putLayoutBlob(layout, await craftTar(entries))]);
}

describe('exit codes', () => {
  it('an image the format cannot carry (a layer writing out of itself) fails with 1, not 3 ("not a valid .etch")', async () => {
    const layout = await ociLayout('escape-layout', [{ name: '../escape', content: 'x' }]);
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--image',
      `oci:${layout}:v1`,
      '--platform',
      'linux/amd64',
      '--cache-dir',
      'escape-cache',
      '-o',
      'escape.etch',
    ]);
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toMatch(/^etch: ETCH_UNSAFE_PATH: .*\.\.\/escape/m);
    expect((await readdir(dir.path)).filter((name) => name.includes('escape.etch'))).toEqual([]);
  });

  it('a folder to inject with what create cannot take from one (a FIFO) fails with 1, not 3 ("not a valid .etch")', async () => {
    await mkdir(dir.join('odd'));
    await run('mkfifo', [dir.join('odd', 'pipe')]);
    const result = await etch(['create', '--base', 'base.img', '--inject', '6:odd', '-o', 'odd.etch']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^etch: ETCH_BAD_ENTRY: .*pipe is a socket, FIFO or device file/m);
    expect(await readdir(dir.path)).not.toContain('odd.etch');
  });
});

describe('etch create checks every input before the first byte', () => {
  it.each([
    [['--inject', '6:missing'], /--inject 6:missing: .*missing does not exist/],
    [['--inject', '6:base.img'], /--inject 6:base\.img: .*base\.img is not a folder/],
    [['--inject', '99:boot'], /--inject 99:boot: The disk image has no partition 99 \(it has: 1, 2, 3, 5, 6\)/],
    [['--inject', '4:boot'], /--inject 4:boot: Partition 4 is the MBR extended partition/],
    [['--image', 'Bad/UPPER:1', '--platform', 'linux/arm64'], /Invalid image reference "Bad\/UPPER:1"/],
    [['--image', app, '--platform', 'linux/arm64', '--data-partition', '7'], /--data-partition 7: .*no partition 7/],
  ])('%j', async (extra, message) => {
    const result = await etch(['create', '--base', 'base.img', ...extra, '-o', 'early.etch']);
    expectUsageError(result, message, 'create');
    expect(result.stderr).not.toContain('writing base image');
    expect((await readdir(dir.path)).filter((name) => name.includes('early.etch'))).toEqual([]);
  });

  it('an output that is a folder, or in a folder that does not exist, named as given', async () => {
    expectUsageError(await etch(['create', '--base', 'base.img', '-o', 'boot']), /-o boot is a folder/, 'create');
    expectUsageError(
      await etch(['create', '--base', 'base.img', '-o', 'nowhere/x.etch']),
      new RegExp(`-o nowhere/x\\.etch: the folder ${dir.join('nowhere')} does not exist`),
      'create',
    );
  });

  it('an output folder that cannot be written (a read-only filesystem), named as given', async () => {
    if (process.getuid?.() !== 0) throw new Error('This test mounts a read-only filesystem: run it as root.');
    await mkdir(dir.join('ro'));
    await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', dir.join('ro')]);
    try {
      const result = await etch(['create', '--base', 'base.img', '-o', 'ro/x.etch']);
      expect(result).toMatchObject({ code: 1, stdout: '' });
      expect(result.stderr.trim()).toBe(`etch: ETCH_IO: -o ro/x.etch: cannot write into ${dir.join('ro')} (EROFS).`);
    } finally {
      await run('umount', [dir.join('ro')]);
    }
  });

  it('removes the partial file a killed run left, and only once its writer is gone', async () => {
    await writeFile(dir.join('huge.img'), '');
    await truncate(dir.join('huge.img'), 32 * 1024 ** 3);
    await mkdir(dir.join('out'));
    const child = spawn(process.execPath, [etchBin, 'create', '--base', 'huge.img', '-o', 'out/k.etch', '-q'], {
      cwd: dir.path,
      stdio: 'ignore',
    });
    const partials = async () => (await readdir(dir.join('out'))).filter((n) => n.endsWith('.partial'));
    while ((await partials()).length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));
    const [left] = await partials();
    expect(left).toMatch(new RegExp(`^\\.k\\.etch\\..+-${child.pid}-[0-9a-f]{12}\\.partial$`));
    const next = await etchIn(['create', '--base', 'base.img', '-o', 'out/k.etch', '-q']);
    expect(next.code, next.stderr).toBe(0);
    expect(await readdir(dir.join('out'))).toEqual(['k.etch']);
    expect((await stat(dir.join('out', 'k.etch'))).size).toBeGreaterThan(0);
  });
});

describe('registries that cannot be reached', () => {
  it('fail at once on a refused connection, on stderr with exit 1', async () => {
    const port = await freePort();
    const started = Date.now();
    const inProcess = await etchIn(['manifest', `127.0.0.1:${port}/etch/x:1`]);
    expect(Date.now() - started, 'a refused loopback registry should fail in well under a second').toBeLessThan(1500);
    expect(inProcess.stderr).toMatch(/ECONNREFUSED.*Nothing accepts connections there/);
    expect(inProcess.stderr, 'without -v, no debug line').not.toContain('HTTPS failed');
    const result = await etch(['manifest', `127.0.0.1:${port}/etch/x:1`, '-v']);
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr, '-v adds the debug lines, on stderr').toMatch(/^etch: HTTPS failed; trying plain HTTP/m);
    expect(result.stderr).not.toContain('retrying');
    expect(result.stderr).not.toContain('undefined');
  });

  it('fail at once on a name that does not resolve: no retries', async () => {
    const result = await etch(['manifest', 'registry.etch.invalid/etch/x:1', '-v']);
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toMatch(
      /^etch: ETCH_NETWORK: .*ENOTFOUND.*The name registry\.etch\.invalid does not resolve/m,
    );
    expect(result.stderr).not.toContain('retrying');
  });

  it('advise only flags that exist', async () => {
    const help = (await runCli(['help', 'manifest'], { cwd: dir.path })).stdout;
    for (const reference of ['registry.etch.invalid/x:1', `127.0.0.1:${await freePort()}/x:1`]) {
      const result = await runCli(['manifest', reference], { cwd: dir.path });
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).not.toMatch(/ CA\b|pass that CA/);
      for (const [flag] of result.stderr.matchAll(/--[a-z][a-z-]+/g)) expect(help, flag).toContain(flag);
    }
  });
});

describe('the binary', () => {
  // Its shebang carries V8 flags for memory (see bin/etch.js). One that a Node.js release no longer knows would
  // stop node before etch runs, and most tests start the binary through node, without the shebang.
  it('starts as a program, through its shebang and the Node flags in it', async () => {
    const result = await run(etchBin, ['--version']);
    expect(result.stdout.trim(), 'etch --version run as a program').toMatch(/^\d+\.\d+\.\d+/);
  });
});
