/**
 * What `etch apply` refuses before it writes, and how it asks before overwriting a drive: through the real
 * binary, with a loop device as the drive and a tmux pane as the terminal it asks on.
 */
import { open, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { etchBin, runBinary } from '../binary.test.helper.js';
import { runCli } from '../in-process.test.helper.js';
import { Terminal } from '../terminal.test.helper.js';

let dir: TempDir;
let loop: string;

const etch = (args: string[]) => runBinary(args, { cwd: dir.path });

/** The first sector of a device or file: zeros until a disk image is written there. */
async function firstSector(path: string): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const sector = Buffer.alloc(512);
    await handle.read(sector, 0, 512, 0);
    return sector;
  } finally {
    await handle.close();
  }
}

const hasBootSignature = (sector: Buffer) => sector.readUInt16LE(510) === 0xaa55;

/** A usage error as every command prints it: one line, then the hint, nothing on stdout. */
function expectUsageError(result: { code: number; stdout: string; stderr: string }, words: RegExp): void {
  expect(result.code, result.stderr).toBe(2);
  expect(result.stdout).toBe('');
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^etch: ETCH_USAGE: /);
  expect(lines[0]).toMatch(words);
  expect(lines.slice(1)).toEqual(["Run 'etch apply --help' for usage."]);
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('These tests attach a loop device: they must run as root.');
  dir = await createTempDir('etch-apply-safety-');
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 4 });
  const created = await runCli(['create', '--base', 'base.img', '-o', 'small.etch', '-q'], { cwd: dir.path });
  expect(created.code, created.stderr).toBe(0);
  await writeFile(dir.join('drive.bin'), '');
  await truncate(dir.join('drive.bin'), 64 * 1024 * 1024);
  loop = (await run('losetup', ['--find', '--show', dir.join('drive.bin')])).stdout.trim();
});
afterAll(async () => {
  if (loop) await run('losetup', ['-d', loop], { allowFailure: true });
  await dir?.remove();
});

describe('etch apply refuses, before writing anything', () => {
  it('to overwrite the .etch it reads', async () => {
    const before = await stat(dir.join('small.etch'));
    expectUsageError(await etch(['apply', 'small.etch', '-o', 'small.etch']), /is the \.etch being read/);
    const after = await stat(dir.join('small.etch'));
    expect([after.size, after.mtimeMs]).toEqual([before.size, before.mtimeMs]);
  });

  it('to create a file under /dev where no drive is', async () => {
    const missing = `/dev/etch-test-no-such-drive-${process.pid}`;
    expectUsageError(await etch(['apply', 'small.etch', '-o', missing]), /does not exist: there is no such drive/);
    expect(await stat(missing).catch(() => undefined)).toBeUndefined();
    expectUsageError(await etch(['apply', 'small.etch', '-o', '/dev/null']), /\/dev\/null is not a block device/);
  });

  it('a size smaller than the base image, naming both', async () => {
    expectUsageError(
      await etch(['apply', 'small.etch', '-o', 'small.img', '--size', '8M']),
      /--size 8M \(8\.0 MiB\) is smaller than the base image base\.img \(\d+\.\d MiB\)/,
    );
    expect(await readdir(dir.path)).not.toContain('small.img');
  });

  it('an output folder that does not exist, or a folder as the output, naming the path given', async () => {
    expectUsageError(
      await etch(['apply', 'small.etch', '-o', 'no-such-folder/disk.img']),
      new RegExp(`--output no-such-folder/disk\\.img: the folder ${dir.join('no-such-folder')} does not exist`),
    );
    expectUsageError(await etch(['apply', 'small.etch', '-o', '.']), /--output \. is a folder/);
  });
});

describe('etch apply onto a drive', () => {
  it('refuses without --yes when there is no terminal to ask on, and writes with it', async () => {
    const refused = await etch(['apply', 'small.etch', '-o', loop]);
    expectUsageError(refused, new RegExp(`${loop} \\(64\\.0 MiB, loop device for .*drive\\.bin\\) is a drive.*--yes`));
    expect(hasBootSignature(await firstSector(loop)), 'the drive must be untouched').toBe(false);

    const written = await etch(['apply', 'small.etch', '-o', loop, '--yes', '-q']);
    expect(written.code, written.stderr).toBe(0);
    expect(hasBootSignature(await firstSector(loop))).toBe(true);
    // Put the drive back as it was for the next test.
    await run('dd', ['if=/dev/zero', `of=${loop}`, 'bs=1M', 'count=1', 'conv=fsync', 'status=none']);
  });

  it('shows the drive and asks on a terminal: "n" leaves it alone, "y" writes it', async () => {
    for (const answer of ['n', 'y']) {
      const terminal = await Terminal.start([process.execPath, etchBin, 'apply', 'small.etch', '-o', loop], {
        width: 120,
        height: 30,
        cwd: dir.path,
      });
      try {
        const question = await terminal.waitFor(
          (lines) => lines.some((line) => line.includes('Write it? [y/N]')),
          'the question',
        );
        expect(question.join('\n')).toContain(
          `${loop} (64.0 MiB, loop device for ${dir.join('drive.bin')}) will be overwritten`,
        );
        await terminal.send(answer, 'Enter');
        const { code, lines } = await terminal.exit();
        if (answer === 'n') {
          expect(code, lines.join('\n')).toBe(1);
          expect(lines.join('\n')).toContain('etch: not confirmed; nothing was written.');
          expect(hasBootSignature(await firstSector(loop)), 'the drive must be untouched').toBe(false);
        } else {
          expect(code, lines.join('\n')).toBe(0);
          expect(lines.join('\n')).toMatch(new RegExp(`wrote ${loop} \\(64\\.0 MiB\\)`));
          expect(hasBootSignature(await firstSector(loop))).toBe(true);
        }
      } finally {
        await terminal.close();
      }
    }
  });
});
