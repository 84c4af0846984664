import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { applyEtch, type ApplyOptions, type ApplyResult } from '@etch/apply';
import { readEtch } from '@etch/tar';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import { checkOutputFile } from '../checks.js';
import type { CliContext, Command } from '../context.js';
import { confirm, describeDrive, isBlockDevice } from '../drive.js';
import { EXIT } from '../exit-codes.js';
import { count, formatBytes, formatSeconds, parseBytes } from '../format-bytes.js';
import { openEtchInput } from '../input.js';
import { applyJson, jsonText } from '../json.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';

const help = helpPage({
  usage: ['etch apply FILE.etch|- -o DISK.img|/dev/sdX [--size SIZE] [--verify] [--mount] [--yes] [--force]'],
  description: `Flash a .etch: write its base image onto a disk image file or a drive, then every inject/<n>/
entry into partition n (ext2/3/4 with owners, modes, links, devices and xattrs; FAT files and
folders), growing the last partition when the entries do not fit. FILE "-" reads stdin. A drive is
written only after you confirm (or with --yes); an image file appears only when complete.`,
  sections: [
    [
      'Options',
      `  -o, --output TARGET         a disk image file (written atomically, replaced if it exists) or a block
                              device (under /dev: only an existing block device)
  --size SIZE                 make the disk at least SIZE (8G, 512M, 1.5GiB; K/M/G/T are powers of 1024),
                              not less than the base image, and grow the last partition to fill it
  --verify                    read everything back after writing
  -y, --yes                   write a drive without asking (for scripts; there is no undo)
  --force                     write a drive even when it is mounted or holds the running system
  --temp-dir DIR              where entries are staged before they are written (default: the OS temp folder)
  --mount                     write ext partitions through a loop mount and bsdtar: several times faster,
                              root only, and the kernel reads the base image's filesystem (trust the base
                              image); needs the sizes the .etch announces (format 1.1), else uses debugfs`,
    ],
    ['Output', commonHelp('no progress and no summary')],
  ],
  examples: [
    ['Flash onto a drive: etch shows the drive and asks first', 'etch apply device.etch -o /dev/sdb'],
    ['An 8 GiB image file, read back afterwards', 'etch apply device.etch -o disk.img --size 8G --verify'],
    [
      'Straight from the build, in a script',
      'etch create --base os.img --inject 1:./cfg -o - | etch apply - -o /dev/sdb --yes',
    ],
  ],
});

function humanSummary(result: ApplyResult, output: string): string {
  const verified = result.verified ? ', verified' : '';
  const lines = [
    `wrote ${output} (${formatBytes(result.diskSize)}) in ${formatSeconds(result.durationMs)}${verified}`,
    `  base image   ${result.baseImage.name} (${formatBytes(result.baseImage.size)})`,
  ];
  for (const [partition, summary] of Object.entries(result.partitions)) {
    const grown = summary.grown ? `, grown to ${formatBytes(summary.size)}` : '';
    lines.push(
      `  partition ${partition} (${summary.filesystem}): ${count(summary.entries, 'entry', 'entries')}, ${formatBytes(summary.bytes)}${grown}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** The base image a `.etch` file starts with, read from its first entries only. */
async function peekBaseImage(path: string): Promise<{ name: string; container: string; size: number } | undefined> {
  const input = createReadStream(path);
  try {
    for await (const entry of readEtch(input)) if (entry.kind === 'base-image') return entry;
    return undefined;
  } finally {
    input.destroy();
  }
}

/** Where the disk goes, checked before anything is read or written. */
async function checkTarget(
  output: string,
  shown: string,
  input: { path?: string },
  values: { yes?: boolean },
  context: CliContext,
): Promise<'device' | 'file'> {
  const device = await isBlockDevice(output);
  if (!device && /^\/dev\/(?!shm\/)/.test(output)) {
    const exists = (await stat(output).catch(() => undefined)) !== undefined;
    throw usageError(
      exists
        ? `${shown} is not a block device; under /dev, --output must be a drive.`
        : `${shown} does not exist: there is no such drive (a disk image file cannot be created under /dev).`,
    );
  }
  if (input.path !== undefined) {
    const same = await Promise.all([realpath(input.path), realpath(output).catch(() => undefined)]);
    if (same[0] === same[1]) throw usageError(`--output ${shown} is the .etch being read; write the disk elsewhere.`);
  }
  if (!device) {
    await checkOutputFile(output, shown, '--output');
    return 'file';
  }
  if (!values.yes) {
    const drive = await describeDrive(output);
    const confirmed = await confirm(
      context,
      `etch: ${drive} will be overwritten: everything on it is lost.\nWrite it? [y/N] `,
      `${drive} is a drive: writing it destroys what it holds. Pass --yes to confirm (there is no terminal here to ask on).`,
    );
    if (!confirmed) throw new NotConfirmed(drive);
  }
  return 'device';
}

/** The answer was no: nothing happened, which is not an error worth a code. */
class NotConfirmed extends Error {}

export const applyCommand: Command = {
  name: 'apply',
  help,
  readsEtch: true,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() =>
      parseArgs({
        args,
        allowPositionals: true,
        options: {
          ...commonFlags,
          output: { type: 'string', short: 'o' },
          size: { type: 'string' },
          verify: { type: 'boolean' },
          yes: { type: 'boolean', short: 'y' },
          force: { type: 'boolean' },
          'temp-dir': { type: 'string' },
          mount: { type: 'boolean' },
        },
      }),
    );
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (positionals.length !== 1)
      throw usageError(
        positionals.length === 0
          ? 'give the .etch file to apply ("-" for stdin).'
          : `unexpected argument ${JSON.stringify(positionals[1])}.`,
      );
    if (!values.output) throw usageError('-o/--output is required: the disk image file or drive to write.');
    if (values.output === '-')
      throw usageError('--output must be a disk image file or a drive; a disk cannot be written to stdout.');
    let size: number | undefined;
    if (values.size !== undefined) {
      size = parseBytes(values.size);
      if (size === undefined || size === 0)
        throw usageError(`--size ${JSON.stringify(values.size)} is not a size (for example 8G, 512M or 1.5GiB).`);
    }
    const file = positionals[0] as string;
    const inputPath = file === '-' ? undefined : resolve(context.cwd, file);
    const output = resolve(context.cwd, values.output);

    // Checked before the first byte: the input can be read, the target is what it claims, the size fits.
    const input = await openEtchInput(file, context, 'apply');
    try {
      if (inputPath !== undefined && size !== undefined) {
        const base = await peekBaseImage(inputPath);
        if (base?.container === 'raw' && size < base.size)
          throw usageError(
            `--size ${values.size} (${formatBytes(size)}) is smaller than the base image ${base.name} (${formatBytes(base.size)}); a disk cannot be smaller than its image.`,
          );
      }
      try {
        await checkTarget(output, values.output, { ...(inputPath ? { path: inputPath } : {}) }, values, context);
      } catch (error) {
        if (!(error instanceof NotConfirmed)) throw error;
        context.stderr.write('etch: not confirmed; nothing was written.\n');
        return EXIT.failed;
      }
    } catch (error) {
      if (input !== context.stdin) input.destroy();
      throw error;
    }

    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    const options: ApplyOptions = {
      output,
      ...(size !== undefined ? { size } : {}),
      verify: Boolean(values.verify),
      force: Boolean(values.force),
      mount: Boolean(values.mount),
      ...(values['temp-dir'] !== undefined ? { tempDir: resolve(context.cwd, values['temp-dir']) } : {}),
      signal: context.signal,
      onProgress: display.onProgress,
      logger: context.logger,
    };
    let result: ApplyResult;
    try {
      result = await applyEtch(input, options);
    } finally {
      display.finish();
      // On failure the reader may not have consumed the file; stdin is the process's and stays open.
      if (input !== context.stdin) input.destroy();
    }
    if (values.json) context.stdout.write(jsonText(applyJson(result)));
    else if (!values.quiet) context.stdout.write(humanSummary(result, values.output));
    return EXIT.ok;
  },
};
