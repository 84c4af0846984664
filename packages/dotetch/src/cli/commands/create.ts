import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { baseImageFromFile, createEtch, resolvePreloadImages, writeEtchFile, type CreateEtchResult, type InjectSource, type PreloadImage } from '@etch/core';
import { parseRepositories, readBaseRepositories, type RepositoriesJson } from '@etch/docker-store';
import { EtchError, baseImageContainer, parsePartition } from '@etch/format';
import { formatPlatform, parsePlatform, type Platform } from '@etch/registry';
import type { Compression } from '@etch/tar';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { Command, CliContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';
import { registryClientFor, registryFlags, registryUsage } from '../registry-options.js';

const usage = `Usage: etch create --base FILE [--inject PART:LOCALDIR[:DEST]]... [--image REF... --platform P] -o OUT.etch [options]

  --base FILE                 base OS image: a raw image (.img, .raw, .wic, …) or a .zip holding one
  --inject PART:DIR[:DEST]    copy local folder DIR into partition PART (1-based; MBR logical from 5),
                              under DEST (default: the partition root). Repeatable.
  --image REF                 preload a container image into the engine store of the data partition, as
                              docker pull would leave it: a registry reference, oci:PATH[:TAG] or
                              docker-archive:PATH[:REF]. Repeatable.
  --platform os/arch[/var]    the device's platform (linux/arm64, linux/arm/v7 …); required with --image
  --data-partition N          the partition holding the engine's data root /docker (default 6, balenaOS MBR)
  --repositories FILE         the base OS's own repositories.json to merge with (default: read from the
                              data partition of a raw base image; required for a zipped one)
  --ignore-base-repositories  do not merge: the .etch's repositories.json lists only the preloaded images
${registryUsage}
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

function humanSummary(result: CreateEtchResult, output: string, preloads: readonly PreloadImage[]): string {
  const lines = [`etch: wrote ${output} (${formatBytes(result.bytesWritten)}) in ${(result.durationMs / 1000).toFixed(1)} s`];
  lines.push(`  base image  ${result.baseImage.name} (${formatBytes(result.baseImage.size)})`);
  for (const [partition, summary] of Object.entries(result.partitions)) {
    lines.push(`  partition ${partition}: ${summary.entries} entries, ${formatBytes(summary.bytes)}`);
  }
  result.images.forEach((image, i) => {
    const preload = preloads[i];
    const size = image.layers.reduce((n, l) => n + l.size, 0);
    lines.push(`  image ${preload?.spec ?? image.imageId}  ${image.imageId.slice(7, 19)}  ${preload ? formatPlatform(preload.resolved.platform) : ''}  ${formatBytes(size)}`);
  });
  return `${lines.join('\n')}\n`;
}

/** The base OS's repositories.json to merge with, by the rules in the usage text. */
async function baseRepositoriesFor(values: { repositories?: string; 'ignore-base-repositories'?: boolean }, base: string, partition: number, cwd: string): Promise<RepositoriesJson | undefined> {
  if (values['ignore-base-repositories']) return undefined;
  if (values.repositories !== undefined) {
    const path = resolve(cwd, values.repositories);
    const text = await readFile(path).catch((cause: unknown) => {
      throw new EtchError('ETCH_IO', `Cannot read --repositories ${path}: ${(cause as Error).message}`, { cause, details: { path } });
    });
    return parseRepositories(text, path);
  }
  if (baseImageContainer(base) === 'zip') {
    throw usageError(
      'The base image is a zip, so its data partition cannot be read to keep the OS\'s own images (the supervisor) in repositories.json. Pass --repositories FILE (the OS\'s /var/lib/docker/image/overlay2/repositories.json) or --ignore-base-repositories.',
      usage,
    );
  }
  return readBaseRepositories(base, { partition });
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
            image: { type: 'string', multiple: true },
            platform: { type: 'string' },
            'data-partition': { type: 'string' },
            repositories: { type: 'string' },
            'ignore-base-repositories': { type: 'boolean' },
            ...registryFlags,
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
    const imageSpecs = values.image ?? [];
    let platform: Platform | undefined;
    if (values.platform !== undefined) platform = parsePlatform(values.platform);
    if (imageSpecs.length > 0 && platform === undefined) {
      throw usageError('--platform is required with --image: name the device\'s platform (linux/arm64, linux/arm/v7, linux/amd64 …); preloading the wrong architecture gives a device that cannot run its images.', usage);
    }
    if (imageSpecs.length === 0 && (values.platform !== undefined || values['data-partition'] !== undefined || values.repositories !== undefined || values['ignore-base-repositories'])) {
      throw usageError('--platform, --data-partition, --repositories and --ignore-base-repositories only apply with --image.', usage);
    }
    if (values.repositories !== undefined && values['ignore-base-repositories']) throw usageError('--repositories and --ignore-base-repositories contradict each other; choose one.', usage);
    let dataPartition = 6;
    if (values['data-partition'] !== undefined) {
      try {
        dataPartition = parsePartition(values['data-partition']);
      } catch {
        throw usageError(`--data-partition ${JSON.stringify(values['data-partition'])} is not a partition number (1-based; MBR logical from 5).`, usage);
      }
    }
    const basePath = resolve(context.cwd, values.base);
    const baseRepositories = imageSpecs.length > 0 ? await baseRepositoriesFor(values, basePath, dataPartition, context.cwd) : undefined;

    // Resolve every image (manifests, configs, platforms) before writing a byte: a typo fails in seconds.
    let preloads: PreloadImage[] = [];
    if (imageSpecs.length > 0) {
      const client = registryClientFor(context, values['insecure-registry']);
      context.signal.addEventListener('abort', () => void client.close(), { once: true });
      preloads = await resolvePreloadImages(imageSpecs, { platform: platform as Platform, client, signal: context.signal, logger: context.logger });
    }
    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    const options = {
      base: () => baseImageFromFile(basePath),
      inject,
      ...(preloads.length > 0 ? { images: { partition: dataPartition, images: preloads.map((p) => p.store), ...(baseRepositories ? { baseRepositories } : {}) } } : {}),
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
      const images = result.images.map((image, i) => ({ ...image, spec: preloads[i]?.spec, digest: preloads[i]?.resolved.digest, indexDigest: preloads[i]?.resolved.indexDigest, platform: preloads[i] ? formatPlatform(preloads[i].resolved.platform) : undefined }));
      context.stdout.write(`${JSON.stringify({ output: toStdout ? '-' : output, ...result, images }, null, 2)}\n`);
    } else if (!values.quiet) {
      context.stderr.write(humanSummary(result, toStdout ? 'stdout' : values.output, preloads));
    }
    return EXIT.ok;
  },
};
