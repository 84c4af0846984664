import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { applyEtch, type ApplyOptions, type ApplyResult } from '@etch/apply';
import { EtchError } from '@etch/format';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes, parseBytes } from '../format-bytes.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';

const usage = `Usage: etch apply FILE.etch --output DISK.img|/dev/sdX [options]

  Writes the base image of FILE.etch ("-" reads stdin) onto a disk image file or a block device, then every
  inject/<n>/ entry into partition n (ext2/3/4 with owners, modes, links, devices and xattrs; FAT files and
  folders), growing the last partition when the entries do not fit.
  -o, --output TARGET   a disk image file (written atomically, replaced if it exists) or a block device
  --size SIZE           make the disk at least SIZE (8G, 512M, 1.5GiB; K/M/G/T are powers of 1024) and grow
                        the last partition to fill it
  --verify              read everything back after writing
  --force               write to a block device even when it is mounted or holds the running system
  --temp-dir DIR        where entries are staged before they are written (default: the OS temp folder)
  --json                print a summary as JSON on stdout
  -q, --quiet           no progress output
  -v, --verbose         debug logging on stderr`;

function humanSummary(result: ApplyResult, output: string): string {
  const verified = result.verified ? ', verified' : '';
  const lines = [
    `etch: wrote ${output} (${formatBytes(result.diskSize)}) in ${(result.durationMs / 1000).toFixed(1)} s${verified}`,
  ];
  lines.push(`  base image  ${result.baseImage.name} (${formatBytes(result.baseImage.size)})`);
  for (const [partition, summary] of Object.entries(result.partitions)) {
    const grown = summary.grown ? `, grown to ${formatBytes(summary.size)}` : '';
    lines.push(
      `  partition ${partition} (${summary.filesystem}): ${summary.entries} entries, ${formatBytes(summary.bytes)}${grown}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Opens the `.etch` to apply: a file, or stdin for `-`. */
async function openInput(file: string, context: CliContext): Promise<Readable> {
  if (file === '-') {
    if (context.stdin === undefined) throw usageError('"-" reads the .etch from stdin, but there is none here.', usage);
    if (context.stdin.isTTY)
      throw usageError(
        '"-" reads the .etch from stdin, which is a terminal; pipe the file in (… | etch apply - -o disk.img).',
        usage,
      );
    return context.stdin;
  }
  const path = resolve(context.cwd, file);
  const input = createReadStream(path);
  try {
    await new Promise<void>((ok, fail) => input.once('open', () => ok()).once('error', fail));
  } catch (cause) {
    throw new EtchError('ETCH_IO', `Cannot read ${path}: ${(cause as Error).message}.`, { cause, details: { path } });
  }
  return input;
}

export const applyCommand: Command = {
  name: 'apply',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () =>
        parseArgs({
          args,
          allowPositionals: true,
          options: {
            ...helpFlag,
            output: { type: 'string', short: 'o' },
            size: { type: 'string' },
            verify: { type: 'boolean' },
            force: { type: 'boolean' },
            'temp-dir': { type: 'string' },
            json: { type: 'boolean' },
            quiet: { type: 'boolean', short: 'q' },
            verbose: { type: 'boolean', short: 'v' },
          },
        }),
      usage,
    );
    if (values.help) {
      context.stderr.write(`${usage}\n`);
      return EXIT.ok;
    }
    if (positionals.length !== 1)
      throw usageError(
        positionals.length === 0
          ? 'Give the .etch file to apply ("-" for stdin).'
          : `Unexpected argument ${JSON.stringify(positionals[1])}.`,
        usage,
      );
    if (!values.output)
      throw usageError('-o/--output is required: the disk image file or block device to write.', usage);
    if (values.output === '-')
      throw usageError(
        '--output must be a disk image file or a block device; a disk cannot be written to stdout.',
        usage,
      );
    let size: number | undefined;
    if (values.size !== undefined) {
      size = parseBytes(values.size);
      if (size === undefined || size === 0)
        throw usageError(
          `--size ${JSON.stringify(values.size)} is not a size (for example 8G, 512M or 1.5GiB).`,
          usage,
        );
    }

    const input = await openInput(positionals[0] as string, context);
    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    const output = resolve(context.cwd, values.output);
    const options: ApplyOptions = {
      output,
      ...(size !== undefined ? { size } : {}),
      verify: Boolean(values.verify),
      force: Boolean(values.force),
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
    if (values.json) {
      context.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else if (!values.quiet) {
      context.stderr.write(humanSummary(result, values.output));
    }
    return EXIT.ok;
  },
};
