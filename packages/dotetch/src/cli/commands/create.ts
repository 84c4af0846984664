import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  defaultCacheDir as baseImageCacheDir,
  openBaseImage,
  specKind,
  type BaseImageSourceInfo,
} from '@etch/baseimage';
import {
  createEtch,
  writeEtchFile,
  type CreateEtchOptions,
  type CreateEtchResult,
  type InjectSource,
} from '@etch/core';
import { resolvePreloadImages, type PreloadImage } from '@etch/docker-store';
import { baseImageContainer, parsePartition, ignoreRejection } from '@etch/format';
import { BufferPool } from '@etch/disk';
import { formatPlatform, parsePlatform, type Platform, type RegistryClient } from '@etch/registry';
import { etchOptionsFor, preloadImagesOption, tagSupervisor } from '@etch/serve/etch-options';
import type { Compression } from '@etch/tar';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import { checkImageSpecs, checkInjectFolders, checkOutputFile, checkPartitions } from '../checks.js';
import type { Command, CliContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { count, formatBytes, formatSeconds } from '../format-bytes.js';
import { createJson, jsonText } from '../json.js';
import { createProgressDisplay, progressModeFor, type ProgressDisplay } from '../progress.js';
import { convertedLayerCacheFor, registryCacheFor } from '../registry-cache.js';
import { minRateFor, registryClientFor, registryFlags, registryHelp } from '../registry-options.js';
import { baseRepositoriesFor, planPreload, splashSource, type PreloadPlan } from './create-preload.js';
import { stageFor } from './stage-dir.js';

const help = helpPage({
  usage: ['etch create --base SOURCE [--inject PART:DIR[:DEST]]... [preload options] -o OUT.etch'],
  description: `Write a .etch: a base OS image, files for its partitions, and container images preloaded into the
engine store of its data partition as docker pull would leave them. Every input is checked before the
first byte is written; the output appears only when complete (Ctrl-C or a failure leaves nothing).`,
  sections: [
    [
      'Options',
      `  --base SOURCE               the base OS image: a raw image file (.img, .raw, .wic, …), a .zip holding one,
                              a compressed image (.img.gz, .img.xz, .img.zst), an http(s) URL of any of
                              these, or eci:REGISTRY/REPO[:TAG|@VERSION_OR_RANGE] (an edge-containers
                              artifact)
  --base-mode extract|passthrough
                              a zipped image goes into the .etch unzipped (extract, the default: flashers
                              and tools see a raw image) or as the zip itself (passthrough)
  --offline                   use cached base images without asking the server whether they are fresh
  --inject PART:DIR[:DEST]    copy the contents of folder DIR into partition PART (1-based; MBR logical
                              from 5), under DEST (default: the partition root). Repeatable.
  -o, --output OUT            the .etch to write (atomically); "-" writes to stdout (not a terminal)
  --compress gzip|zstd        compress the whole .etch (flashers detect it)`,
    ],
    [
      'Preloading (the engine store of the data partition)',
      `  --target-state FILE         a balena target state (fleet state JSON): its release images are preloaded
                              and the supervisor's apps.json generated from it
  --apps-json FILE            an apps.json to write as is (validated); its images are preloaded
  --supervisor-version V      the base OS's supervisor version: picks the apps.json format (required with
                              --target-state and --supervisor)
  --pin-device                pin the device to the target state's release (supervisor >= 7)
  --supervisor IMAGE          preload the supervisor image too, tagged balena_supervisor:vV
  --image REF                 one more image: a registry reference, oci:PATH[:TAG] or
                              docker-archive:PATH[:REF]. Repeatable.
  --platform os/arch[/var]    the device's platform (linux/arm64, linux/arm/v7 …); required when preloading
  --data-partition N          the partition holding the engine's data root /docker (default 6, balenaOS MBR)
  --repositories FILE         the base OS's own repositories.json to merge with (default: read from the
                              data partition of a raw base image; required for a zipped one)
  --ignore-base-repositories  do not merge: repositories.json lists only the preloaded images
  --splash FILE               a PNG for the boot splash (splash/balena-logo.png in the boot partition)
  --boot-partition N          the boot partition (default 1)
${registryHelp}
  --cache-dir DIR             keep downloaded base images, layers and manifests here (default
                              $XDG_CACHE_HOME/etch, else ~/.cache/etch); a rebuild of the same images
                              needs no download. While the base image is written, layers are unpacked
                              ahead into DIR/oci/stage-* (at most 4 GiB or half the free space; removed at
                              the end, or by the next run if this one was killed). Unpacked layers are
                              kept in DIR/oci/converted (at most 8 GiB, least recently used out first),
                              so a rebuild neither downloads nor unpacks them again
  --no-cache                  download into a temporary folder removed afterwards; keep nothing`,
    ],
    ['Output', commonHelp('no progress and no summary')],
    [
      'Reproducible',
      `  The same inputs give a byte-identical .etch. Entries etch makes itself (the engine store's own files, the
  base image entry, apps.json) get the time SOURCE_DATE_EPOCH (seconds) from the environment, else
  1980-01-01T00:00:00Z; injected folders and image layers keep their own times.`,
    ],
  ],
  examples: [
    [
      'A balenaOS image preloaded with a fleet release, apps.json generated for its supervisor',
      'etch create --base balena.img --target-state state.json --supervisor-version 14.11.2 \\\n      --platform linux/arm64 -o device.etch',
    ],
    [
      'Any images, files for the boot partition, a splash screen',
      'etch create --base https://example.com/os.img.zip --image ghcr.io/acme/app:1.4 --platform linux/arm/v7 \\\n      --repositories os-repositories.json --inject 1:./cfg --splash logo.png -o out.etch',
    ],
    [
      'Stream it compressed to another machine',
      'etch create --base os.img --inject 1:./cfg --compress zstd -o - | ssh host "cat > os.etch"',
    ],
  ],
});

const flags = {
  ...commonFlags,
  base: { type: 'string' },
  'base-mode': { type: 'string' },
  offline: { type: 'boolean' },
  inject: { type: 'string', multiple: true },
  output: { type: 'string', short: 'o' },
  compress: { type: 'string' },
  'target-state': { type: 'string' },
  'apps-json': { type: 'string' },
  'supervisor-version': { type: 'string' },
  'pin-device': { type: 'boolean' },
  supervisor: { type: 'string' },
  image: { type: 'string', multiple: true },
  platform: { type: 'string' },
  'data-partition': { type: 'string' },
  repositories: { type: 'string' },
  'ignore-base-repositories': { type: 'boolean' },
  splash: { type: 'string' },
  'boot-partition': { type: 'string' },
  ...registryFlags,
  'cache-dir': { type: 'string' },
  'no-cache': { type: 'boolean' },
} as const;

const fail = usageError;

/** Parses `PART:DIR[:DEST]`. */
export function parseInjectSpec(spec: string, cwd: string): InjectSource & { kind: 'directory' } {
  const [part, dir, dest, ...rest] = spec.split(':');
  if (part === undefined || dir === undefined || dir === '' || rest.length > 0) {
    throw fail(
      `--inject ${JSON.stringify(spec)} is not PART:LOCALDIR[:DEST] (for example 6:./files or 1:./cfg:/boot-extra).`,
    );
  }
  let partition: number;
  try {
    partition = parsePartition(part);
  } catch {
    throw fail(
      `--inject ${JSON.stringify(spec)}: the partition must be a number from 1 (MBR logical partitions start at 5).`,
    );
  }
  return { kind: 'directory', partition, path: resolve(cwd, dir), dest: dest ?? '' };
}

function partitionFlag(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  try {
    return parsePartition(value);
  } catch {
    throw fail(`${flag} ${JSON.stringify(value)} is not a partition number (1-based; MBR logical from 5).`);
  }
}

/** The summary for people: what was written, partition by partition, image by image. */
function humanSummary(result: CreateEtchResult, output: string, preloads: readonly PreloadImage[]): string {
  const rows: string[][] = [['base image', result.baseImage.name, formatBytes(result.baseImage.size)]];
  for (const [partition, summary] of Object.entries(result.partitions))
    rows.push([`partition ${partition}`, count(summary.entries, 'entry', 'entries'), formatBytes(summary.bytes)]);
  result.images.forEach((image, i) => {
    const preload = preloads[i];
    rows.push([
      'image',
      preload?.spec ?? image.imageId,
      formatBytes(image.size),
      image.imageId.slice(7, 19),
      preload ? formatPlatform(preload.resolved.platform) : '',
    ]);
  });
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  const lines = rows.map(
    (row) =>
      `  ${row
        .map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i] as number) : cell))
        .join('  ')
        .trimEnd()}`,
  );
  return `wrote ${output} (${formatBytes(result.bytesWritten)}) in ${formatSeconds(result.durationMs)}\n${lines.join('\n')}\n`;
}

/** Resolves the images of a plan and tags the supervisor: a typo fails in seconds. */
async function resolvePlan(
  plan: PreloadPlan,
  platform: Platform,
  client: RegistryClient,
  context: CliContext,
  display: ProgressDisplay,
): Promise<PreloadImage[]> {
  const preloads = await resolvePreloadImages(plan.images, {
    platform,
    client,
    signal: context.signal,
    logger: context.logger,
    onPrefetchProgress: display.onProgress,
  });
  display.nameImages(preloads.map((p) => ({ name: p.spec, layers: p.resolved.layers.map((l) => l.digest) })));
  tagSupervisor(preloads, plan);
  return preloads;
}

export const createCommand: Command = {
  name: 'create',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() => parseArgs({ args, allowPositionals: true, options: flags }));
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (positionals.length > 0)
      throw fail(`unexpected argument ${JSON.stringify(positionals[0])} (the base image goes after --base).`);
    if (!values.base) throw fail('--base is required: the base OS image to start from.');
    if (!values.output) throw fail('-o/--output is required: the .etch to write, or - for stdout.');
    const compress = values.compress ?? 'none';
    if (!['none', 'gzip', 'zstd'].includes(compress))
      throw fail(`--compress must be gzip or zstd, not ${JSON.stringify(compress)}.`);
    const toStdout = values.output === '-';
    if (toStdout && values.json) throw fail('--json and -o - both use stdout; choose one.');
    if (toStdout && context.stdout.isTTY)
      throw fail('-o - writes the binary .etch to stdout, which is a terminal; redirect it (> out.etch) or pipe it.');
    if (values.repositories !== undefined && values['ignore-base-repositories'])
      throw fail('--repositories and --ignore-base-repositories contradict each other; choose one.');
    if (values['cache-dir'] !== undefined && values['no-cache'])
      throw fail('--cache-dir and --no-cache contradict each other; choose one.');
    // Checked before anything starts; a URL base downloads at this rate too, not only registry pulls.
    const minRate = minRateFor(values);

    const baseMode = values['base-mode'] ?? 'extract';
    if (baseMode !== 'extract' && baseMode !== 'passthrough')
      throw fail(`--base-mode must be extract or passthrough, not ${JSON.stringify(baseMode)}.`);
    const baseKind = specKind(values.base);
    const basePath = baseKind === 'file' ? resolve(context.cwd, values.base) : values.base;
    // Only a raw image file on this machine can be read for its partition table, repositories.json and apps.json.
    const rawLocalBase = baseKind === 'file' && baseImageContainer(basename(basePath)) === 'raw' ? basePath : undefined;
    const dataPartition = partitionFlag(values['data-partition'], '--data-partition', 6);
    const bootPartition = partitionFlag(values['boot-partition'], '--boot-partition', 1);
    const injectSpecs = values.inject ?? [];
    const folders = injectSpecs.map((spec) => ({ spec, ...parseInjectSpec(spec, context.cwd) }));
    const inject: InjectSource[] = folders.map(({ spec: _spec, ...source }) => source);
    if (values.splash !== undefined)
      inject.push(await splashSource(resolve(context.cwd, values.splash), bootPartition));
    const plan = await planPreload(values, context, rawLocalBase, dataPartition, fail);
    const preloading = plan.images.length > 0;
    if (
      !preloading &&
      (values.platform !== undefined ||
        values['data-partition'] !== undefined ||
        values.repositories !== undefined ||
        values['ignore-base-repositories'])
    ) {
      throw fail(
        '--platform, --data-partition, --repositories and --ignore-base-repositories only apply when preloading images.',
      );
    }
    if (preloading && values.platform === undefined) {
      throw fail(
        "--platform is required when preloading: name the device's platform (linux/arm64, linux/arm/v7, linux/amd64 …); preloading the wrong architecture gives a device that cannot run its images.",
      );
    }
    const platform = values.platform !== undefined ? parsePlatform(values.platform) : undefined;
    // Everything that can be checked here is, before the first byte: a typo must not cost a base image's write.
    await checkImageSpecs(plan.images);
    await checkInjectFolders(folders);
    const output = resolve(context.cwd, values.output);
    if (!toStdout) await checkOutputFile(output, values.output, '-o');
    if (rawLocalBase !== undefined)
      await checkPartitions(
        rawLocalBase,
        [
          ...folders.map(({ spec, partition }) => ({ partition, flag: `--inject ${spec}` })),
          ...(values.splash !== undefined
            ? [{ partition: bootPartition, flag: `--splash (boot partition ${bootPartition})` }]
            : []),
          ...(preloading ? [{ partition: dataPartition, flag: `--data-partition ${dataPartition}` }] : []),
        ],
        context.logger,
      );
    const baseRepositories = preloading
      ? await baseRepositoriesFor(values, rawLocalBase, dataPartition, context.cwd, fail)
      : undefined;

    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    // Without a persistent cache, layers still go through a spool, so they download while the base image streams.
    const spool = preloading && values['no-cache'] ? await mkdtemp(join(tmpdir(), 'etch-spool-')) : undefined;
    const layerCache = spool ?? registryCacheFor(context, values);
    const client = preloading || baseKind === 'eci' ? registryClientFor(context, values, layerCache) : undefined;
    let preloads: PreloadImage[] = [];
    let baseSource: BaseImageSourceInfo | undefined;
    let result: CreateEtchResult;
    // The base image's read buffers come back from the output file once written (not through stdout).
    // 1 MiB chunks: a quarter of the system calls and thread-pool round trips of the default 256 KiB for the
    // same copy (1 GiB base image: 0.85 → 0.6 s of CPU); eight idle buffers cover what is in flight.
    const bufferPool = toStdout ? undefined : new BufferPool(1024 * 1024, 8);
    // Resolution and downloads stop when the run does, whichever way it ends.
    const resolution = new AbortController();
    const resolutionSignal = AbortSignal.any([context.signal, resolution.signal]);
    try {
      // A file is written under a temporary name, so the images resolve while its base image streams (a
      // failure stops the run at once and removes it). On stdout nothing may go out before every image is
      // known to exist.
      const resolving =
        client && preloading
          ? resolvePlan(plan, platform as Platform, client, { ...context, signal: resolutionSignal }, display)
          : Promise.resolve([]);
      // Its failure is reported by the run it stops (or below, for stdout), even if something else fails first.
      ignoreRejection(resolving, 'reported by the run it stops, or awaited below for stdout');
      if (toStdout) await resolving;
      const stage =
        preloading && layerCache !== undefined
          ? {
              ...(await stageFor(layerCache, context.logger)),
              // Not with --no-cache: the layer cache is then a spool removed at the end.
              ...(spool === undefined ? { cache: convertedLayerCacheFor(layerCache, context.logger) } : {}),
            }
          : undefined;
      const images = preloading
        ? resolving.then((resolved) => {
            preloads = resolved;
            return preloadImagesOption(resolved, {
              dataPartition,
              ...(baseRepositories ? { baseRepositories } : {}),
              ...(stage ? { stage } : {}),
            });
          })
        : undefined;
      const options: Omit<CreateEtchOptions, 'output'> = {
        ...etchOptionsFor({
          base: async () => {
            const opened = await openBaseImage(basePath, {
              mode: baseMode,
              ...(values['no-cache']
                ? { cache: false }
                : {
                    cacheDir:
                      values['cache-dir'] !== undefined
                        ? resolve(context.cwd, values['cache-dir'])
                        : baseImageCacheDir(context.env),
                  }),
              ...(values.offline ? { offline: true } : {}),
              ...(client ? { registry: client } : {}),
              ...(minRate ? { minRate } : {}),
              ...(platform ? { platform: formatPlatform(platform) } : {}),
              ...(bufferPool ? { bufferPool } : {}),
              signal: context.signal,
              logger: context.logger,
            });
            baseSource = opened.source;
            return opened;
          },
          inject,
          ...(images ? { images } : {}),
          dataPartition,
          ...(plan.appsJson !== undefined ? { appsJson: plan.appsJson } : {}),
          compression: compress as Compression,
          sourceDateEpoch: context.env['SOURCE_DATE_EPOCH'],
          logger: context.logger,
        }),
        signal: context.signal,
        // A file is flushed to disk after the last entry (that can take a while); stdout is not.
        onProgress: (event) => display.onProgress(event.phase === 'finalize' && !toStdout ? { phase: 'sync' } : event),
      };
      result = toStdout
        ? await createEtch({ ...options, output: context.stdout })
        : await writeEtchFile(output, { ...options, ...(bufferPool ? { bufferPool } : {}) });
      display.partitionTotals(result.partitions);
    } finally {
      resolution.abort();
      display.finish();
      await client?.close();
      if (spool !== undefined) await rm(spool, { recursive: true, force: true });
    }
    if (values.json) {
      context.stdout.write(
        jsonText(
          createJson(result, {
            output: toStdout ? '-' : output,
            ...(baseSource ? { baseSource } : {}),
            container: baseImageContainer(result.baseImage.name) ?? 'raw',
            preloads,
            dataPartition,
            ...(plan.appsJson !== undefined ? { appsJson: `inject/${dataPartition}/apps.json` } : {}),
          }),
        ),
      );
    } else if (!values.quiet) {
      // Beside a .etch on stdout, the summary is for the person watching: stderr.
      (toStdout ? context.stderr : context.stdout).write(
        humanSummary(result, toStdout ? 'stdout' : values.output, preloads),
      );
    }
    return EXIT.ok;
  },
};
