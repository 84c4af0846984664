import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { baseImageFromFile, createEtch, writeEtchFile, type CreateEtchResult, type InjectSource } from '@etch/core';
import { parsePartition } from '@etch/format';
import type { Compression } from '@etch/tar';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { Command, CliContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';

const usage = `Usage: etch create --base FILE [--inject PART:LOCALDIR[:DEST]]... -o OUT.etch [options]

  --base FILE                 base OS image: a raw image (.img, .raw, .wic, …) or a .zip holding one
  --inject PART:DIR[:DEST]    copy local folder DIR into partition PART (1-based; MBR logical from 5),
                              under DEST (default: the partition root). Repeatable.
  -o, --output OUT            the .etch to write (atomically); "-" writes to stdout
  --compress gzip|zstd        compress the whole .etch (flashers detect it)
  --json                      print a summary as JSON on stdout
  -q, --quiet                 no progress output
  -v, --verbose               debug logging on stderr`;

/** Parses `PART:DIR[:DEST]`. */
export function parseInjectSpec(spec: string, cwd: string): InjectSource {
  const [part, dir, dest, ...rest] = spec.split(':');
  if (part === undefined || dir === undefined || dir === '' || rest.length > 0) {
    throw usageError(`--inject ${JSON.stringify(spec)} is not PART:LOCALDIR[:DEST] (for example 6:./files or 1:./cfg:/boot-extra).`, usage);
  }
  let partition: number;
  try {
    partition = parsePartition(part);
  } catch {
    throw usageError(`--inject ${JSON.stringify(spec)}: the partition must be a number from 1 (MBR logical partitions start at 5).`, usage);
  }
  return { kind: 'directory', partition, path: resolve(cwd, dir), dest: dest ?? '' };
}

function humanSummary(result: CreateEtchResult, output: string): string {
  const lines = [`etch: wrote ${output} (${formatBytes(result.bytesWritten)}) in ${(result.durationMs / 1000).toFixed(1)} s`];
  lines.push(`  base image  ${result.baseImage.name} (${formatBytes(result.baseImage.size)})`);
  for (const [partition, summary] of Object.entries(result.partitions)) {
    lines.push(`  partition ${partition}: ${summary.entries} entries, ${formatBytes(summary.bytes)}`);
  }
  return `${lines.join('\n')}\n`;
}

export const createCommand: Command = {
  name: 'create',
  summary: 'write a .etch from a base image and files to inject',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () =>
        parseArgs({
          args,
          allowPositionals: true,
          options: {
            ...helpFlag,
            base: { type: 'string' },
            inject: { type: 'string', multiple: true },
            output: { type: 'string', short: 'o' },
            compress: { type: 'string' },
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
    if (positionals.length > 0) throw usageError(`Unexpected argument ${JSON.stringify(positionals[0])}.`, usage);
    if (!values.base) throw usageError('--base is required.', usage);
    if (!values.output) throw usageError('-o/--output is required.', usage);
    const compress = values.compress ?? 'none';
    if (!['none', 'gzip', 'zstd'].includes(compress)) throw usageError(`--compress must be gzip or zstd, not ${JSON.stringify(compress)}.`, usage);
    const toStdout = values.output === '-';
    if (toStdout && values.json) throw usageError('--json and -o - both use stdout; choose one.', usage);

    const inject = (values.inject ?? []).map((spec) => parseInjectSpec(spec, context.cwd));
    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    const options = {
      base: () => baseImageFromFile(resolve(context.cwd, values.base as string)),
      inject,
      compression: compress as Compression,
      signal: context.signal,
      onProgress: display.onProgress,
      logger: context.logger,
    };
    const output = resolve(context.cwd, values.output);
    let result: CreateEtchResult;
    try {
      result = toStdout ? await createEtch({ ...options, output: context.stdout }) : await writeEtchFile(output, options);
    } finally {
      display.finish();
    }
    if (values.json) {
      context.stdout.write(`${JSON.stringify({ output: toStdout ? '-' : output, ...result }, null, 2)}\n`);
    } else if (!values.quiet) {
      context.stderr.write(humanSummary(result, toStdout ? 'stdout' : values.output));
    }
    return EXIT.ok;
  },
};
