import { randomBytes } from 'node:crypto';
import { readdir, realpath, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, join, sep } from 'node:path';
import { imagesOfTargetState, parseTargetState } from '@etch/balena';
import {
  openBaseImage,
  parseEciSpec,
  specKind,
  type OpenBaseImageOptions,
  type OpenedBaseImage,
} from '@etch/baseimage';
import type { CreateEtchOptions, InjectSource } from '@etch/core';
import { findPartition, isProcessRunning, openReadAt, readPartitionFile, readPartitionTable } from '@etch/disk';
import {
  parseRepositories,
  readBaseRepositories,
  resolvePreloadImages,
  type PreloadImage,
  type RepositoriesJson,
  type ConvertedLayerCache,
  type StagePool,
} from '@etch/docker-store';
import {
  EtchError,
  baseImageContainer,
  ignoreRejection,
  isEtchError,
  silentLogger,
  throwIfAborted,
  untilAborted,
  type Logger,
} from '@etch/format';
import { formatPlatform, parsePlatform, parseReference, type RegistryClient } from '@etch/registry';
import type { Dispatcher } from 'undici';
import type { AllowList } from './allow-list.js';
import { appsJsonText, etchOptionsFor, preloadImagesOption, preloadOrder, tagSupervisor } from './etch-options.js';
import type { EtchRequest } from './request.js';

/** What {@link planEtch} needs from the server. */
export interface PlanContext {
  /** Where `file:NAME` bases live; absent: `file:` bases are refused. */
  baseDir?: string;
  /** Where base images, layers and manifests are cached (`<cacheDir>/oci` for the registry). */
  cacheDir: string;
  /** The registry client (its cache, mirrors and dispatcher). */
  client: RegistryClient;
  /** Hosts that may be contacted. */
  allow: AllowList;
  /** Registries with a configured mirror: allowed because the operator chose the mirror. */
  mirrored: ReadonlySet<string>;
  /** The dispatcher URL bases are fetched through. */
  dispatcher: Dispatcher;
  /** `SOURCE_DATE_EPOCH` as `etch create` reads it, so that both give the same bytes. */
  sourceDateEpoch?: string;
  signal: AbortSignal;
  logger?: Logger;
  /**
   * Makes sure a URL or ECI base image is in the cache before the request streams it, downloading it once
   * however many requests want it at the same time (see {@link sharedBaseWarmer}). Absent: each request
   * downloads what the cache does not hold.
   */
  /** Shares layer conversions between concurrent requests; absent: each request converts its own. */
  stagePool?: StagePool;
  /** Keeps converted layers between requests; absent: each request converts its layers. */
  layerCache?: ConvertedLayerCache;
  warmBase?: (key: string, open: () => Promise<OpenedBaseImage>, signal: AbortSignal) => Promise<void>;
}

/**
 * Single flight for base images: the first request for a URL or ECI base downloads it whole into the cache
 * (under `signal`, the server's, not the request's: others may be waiting for it); requests that arrive
 * meanwhile wait for that download instead of starting their own, and give up waiting when their own signal
 * fires. Each then opens the base from the cache. A failed download fails every waiter with its error.
 */
export function sharedBaseWarmer(
  signal: AbortSignal,
): (key: string, open: () => Promise<OpenedBaseImage>, waiter: AbortSignal) => Promise<void> {
  const pending = new Map<string, Promise<void>>();
  return async (key, open, waiter) => {
    let download = pending.get(key);
    if (download === undefined) {
      download = (async () => {
        const opened = await open();
        for await (const _ of opened.stream) throwIfAborted(signal);
      })().finally(() => pending.delete(key));
      ignoreRejection(download, 'every waiter awaits it below and reports its failure');
      pending.set(key, download);
    }
    await untilAborted(download, waiter);
  };
}

/** A request made ready to stream: the options of `createEtch` and what to call the download. */
export interface EtchPlan {
  options: Omit<CreateEtchOptions, 'output' | 'signal'>;
  /** The download's file name: the base image's name with `.etch` (and `.gz`/`.zst`). */
  fileName: string;
  /** The images to preload, resolved. */
  preloads: PreloadImage[];
}

/** A 4xx-worthy problem with the request, naming the field at fault. */
export function requestError(field: string, message: string, cause?: unknown): EtchError {
  return new EtchError('ETCH_USAGE', `${field}: ${message}`, { ...(cause ? { cause } : {}), details: { field } });
}

const DOCKER_HUB = 'docker.io';

/**
 * Stage directories are named as `etch create` names its own (`stage-<host>-<pid>-<random>`), so that either
 * removes those a killed process of this host left, and `etch cache clean` removes any.
 */
export function stagePrefix(): string {
  return `stage-${hostname().replace(/[^A-Za-z0-9.-]/g, '_')}-`;
}

/** Removes the stage directories that killed processes of this host left in `<cacheDir>/oci`. */
export async function removeStaleStages(cacheDir: string): Promise<void> {
  const dir = join(cacheDir, 'oci');
  const prefix = stagePrefix();
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (Number.isSafeInteger(pid) && pid > 0 && !isProcessRunning(pid))
      await rm(join(dir, name), { recursive: true, force: true });
  }
}

/** Refuses a registry the allow-list does not name (nor its mirror configuration). */
function checkRegistry(registry: string, field: string, context: PlanContext): void {
  if (context.mirrored.has(registry)) return;
  const apiHost = registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
  if (context.allow.allowsHost(registry) || context.allow.allowsHost(apiHost)) return;
  throw new EtchError('ETCH_DENIED', `${field}: the registry ${registry} is not on the server's allow-list.`, {
    details: { field, host: registry },
  });
}

/** The path of `file:NAME` inside the base directory: a plain name, never `..`, a path or a link out of it. */
async function baseFile(name: string, context: PlanContext): Promise<string> {
  if (context.baseDir === undefined)
    throw new EtchError('ETCH_DENIED', 'base: this server has no --base-dir, so file: bases are refused.', {
      details: { field: 'base' },
    });
  if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name) || name.startsWith('.'))
    throw new EtchError(
      'ETCH_UNSAFE_PATH',
      `base: ${JSON.stringify(name)} is not a plain file name in the base directory.`,
      {
        details: { field: 'base' },
      },
    );
  const dir = await realpath(context.baseDir);
  let path: string;
  try {
    path = await realpath(join(dir, name));
  } catch (cause) {
    throw new EtchError('ETCH_NOT_FOUND', `base: there is no base image ${JSON.stringify(name)}.`, {
      cause,
      details: { field: 'base' },
    });
  }
  if (!path.startsWith(dir + sep) || !(await stat(path)).isFile())
    throw new EtchError('ETCH_UNSAFE_PATH', `base: ${JSON.stringify(name)} leads out of the base directory.`, {
      details: { field: 'base' },
    });
  return path;
}

/** The base spec as `openBaseImage` takes it, checked against the base directory and the allow-list. */
async function baseSpec(base: string, context: PlanContext): Promise<{ spec: string; rawFile?: string }> {
  if (base.startsWith('file:')) {
    const path = await baseFile(base.slice(5), context);
    return { spec: path, ...(baseImageContainer(basename(path)) === 'raw' ? { rawFile: path } : {}) };
  }
  const kind = specKind(base);
  if (kind === 'eci') {
    let registry: string;
    try {
      registry = parseEciSpec(base).repository.registry;
    } catch (cause) {
      throw requestError(
        'base',
        `${JSON.stringify(base)} is not an eci:REGISTRY/REPO[:TAG|@VERSION] reference.`,
        cause,
      );
    }
    checkRegistry(registry, 'base', context);
    return { spec: base };
  }
  if (kind === 'url') {
    let url: URL;
    try {
      url = new URL(base);
    } catch (cause) {
      throw requestError('base', 'not a URL.', cause);
    }
    if (url.username || url.password) throw requestError('base', 'a URL with credentials in it is not accepted.');
    if (!context.allow.allows(url.hostname, url.port || (url.protocol === 'https:' ? '443' : '80')))
      throw new EtchError('ETCH_DENIED', `base: ${url.host} is not on the server's allow-list.`, {
        details: { field: 'base', host: url.host },
      });
    return { spec: url.href };
  }
  throw requestError('base', 'must be file:NAME, eci:REF or an http(s) URL.');
}

function checkImage(spec: string, field: string, context: PlanContext): void {
  if (/^(oci|docker-archive):/.test(spec))
    throw requestError(field, 'only registry references are accepted (no oci: or docker-archive: paths).');
  let registry: string;
  try {
    registry = parseReference(spec).registry;
  } catch (cause) {
    throw requestError(field, `${JSON.stringify(spec)} is not an image reference.`, cause);
  }
  checkRegistry(registry, field, context);
}

/** Every partition a request writes to exists in a raw base image (as `etch create` checks): 400 naming the field. */
async function checkPartitions(
  baseImage: string,
  wanted: readonly { partition: number; field: string }[],
): Promise<void> {
  if (wanted.length === 0) return;
  const disk = await openReadAt(baseImage);
  try {
    let table;
    try {
      table = await readPartitionTable(disk.read);
    } catch (error) {
      if (isEtchError(error, 'ETCH_BAD_DISK_IMAGE')) return; // no table readable here: nothing to check against
      throw error;
    }
    for (const { partition, field } of wanted) {
      try {
        findPartition(table, partition);
      } catch (error) {
        if (!isEtchError(error, 'ETCH_BAD_DISK_IMAGE')) throw error;
        throw requestError(field, error.message, error);
      }
    }
  } finally {
    await disk.close();
  }
}

/** Runs `step`, turning an error from a parser into a 400 naming `field`. */
async function about<T>(field: string, step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (isEtchError(error) && (error.code === 'ETCH_USAGE' || error.code === 'ETCH_UNSUPPORTED'))
      throw requestError(field, error.message, error);
    throw error;
  }
}

/** The download's name: `balena.img` → `balena.etch`, `os.img.zip` → `os.etch`, plus `.gz`/`.zst`. */
function fileNameFor(base: string, compression: string): string {
  const last =
    base
      .replace(/^file:/, '')
      .replace(/[?#].*$/, '')
      .split(/[/:@]/)
      .filter(Boolean)
      .pop() ?? 'image';
  const stem = last.replace(/(\.(img|raw|bin|wic|sdcard|iso))?(\.(zip|gz|xz|zst))?$/i, '') || 'image';
  const safe = stem.replace(/[^A-Za-z0-9._-]/g, '_');
  return `${safe}.etch${compression === 'gzip' ? '.gz' : compression === 'zstd' ? '.zst' : ''}`;
}

/**
 * Checks a request and resolves everything `createEtch` needs, in the same way `etch create` does for the same
 * choices, so that the bytes are the same: the base image, the apps.json of a target state merged with the one
 * the base OS ships, the base OS's repositories.json, images resolved for the platform. Nothing is streamed
 * yet, so every failure here becomes an error status before any byte.
 */
export async function planEtch(request: EtchRequest, context: PlanContext): Promise<EtchPlan> {
  const logger = context.logger ?? silentLogger;
  const { spec, rawFile } = await baseSpec(request.base, context);
  const dataPartition = request.dataPartition ?? 6;
  const images = request.images ?? [];
  images.forEach((image, i) => checkImage(image, `images/${i}`, context));
  if (request.supervisor !== undefined) checkImage(request.supervisor, 'supervisor', context);
  if (request.pinDevice && request.targetState === undefined)
    throw requestError('pinDevice', 'pins the release of targetState; give one.');
  if (
    (request.targetState !== undefined || request.supervisor !== undefined) &&
    request.supervisorVersion === undefined
  )
    throw requestError('supervisorVersion', 'is required with targetState and supervisor.');
  if (request.repositories !== undefined && request.ignoreBaseRepositories)
    throw requestError('repositories', 'contradicts ignoreBaseRepositories; give one.');

  let appsJson: string | undefined;
  let releaseImages: string[] = [];
  if (request.targetState !== undefined) {
    const state = await about('targetState', () => parseTargetState(request.targetState));
    releaseImages = imagesOfTargetState(state);
    releaseImages.forEach((image, i) => checkImage(image, `targetState (image ${i})`, context));
    const existing = rawFile !== undefined ? await readPartitionFile(rawFile, dataPartition, '/apps.json') : undefined;
    appsJson = await about('targetState', () =>
      appsJsonText(state, {
        supervisorVersion: request.supervisorVersion as string,
        pinDevice: Boolean(request.pinDevice),
        ...(existing !== undefined ? { existing } : {}),
      }),
    );
  }
  const order = await about('supervisorVersion', () =>
    preloadOrder({
      releaseImages,
      images,
      ...(request.supervisor !== undefined
        ? { supervisor: request.supervisor, supervisorVersion: request.supervisorVersion }
        : {}),
    }),
  );
  const plan = order.images;
  const preloading = plan.length > 0;
  if (preloading && request.platform === undefined)
    throw requestError('platform', "is required when preloading: the device's platform (linux/arm64 …).");
  const platform =
    request.platform !== undefined
      ? await about('platform', () => parsePlatform(request.platform as string))
      : undefined;

  let baseRepositories: RepositoriesJson | undefined;
  if (preloading && !request.ignoreBaseRepositories) {
    if (request.repositories !== undefined)
      baseRepositories = await about('repositories', () =>
        parseRepositories(JSON.stringify(request.repositories), 'repositories'),
      );
    else if (rawFile !== undefined)
      baseRepositories = await readBaseRepositories(rawFile, { partition: dataPartition });
    else
      throw requestError(
        'repositories',
        'the base image is not a raw image file on the server, so its repositories.json cannot be read: give repositories or ignoreBaseRepositories.',
      );
  }

  if (rawFile !== undefined)
    await checkPartitions(rawFile, [
      ...(request.inject ?? []).map((file, i) => ({ partition: file.partition, field: `inject/${i}/partition` })),
      ...(preloading ? [{ partition: dataPartition, field: 'dataPartition' }] : []),
    ]);
  const inject: InjectSource[] = [];
  for (const [i, file] of (request.inject ?? []).entries()) {
    const content = Buffer.from(file.content, file.encoding ?? 'utf8');
    if (file.path.startsWith('/') || file.path.split('/').includes('..'))
      throw new EtchError('ETCH_UNSAFE_PATH', `inject/${i}/path: ${JSON.stringify(file.path)} leaves its partition.`, {
        details: { field: `inject/${i}/path` },
      });
    inject.push({
      kind: 'entries',
      partition: file.partition,
      entries: [{ header: { name: file.path, type: 'file', size: content.length, mode: file.mode ?? 0o644 }, content }],
    });
  }

  // Resolved before the first byte: an unknown image or a registry that is down is an error status, not a
  // truncated download.
  const preloads = preloading
    ? await resolvePreloadImages(plan, {
        platform: platform as NonNullable<typeof platform>,
        client: context.client,
        signal: context.signal,
        logger,
      })
    : [];
  tagSupervisor(preloads, order);
  const baseOptions: OpenBaseImageOptions = {
    mode: request.baseMode ?? 'extract',
    cacheDir: context.cacheDir,
    registry: context.client,
    dispatcher: context.dispatcher,
    ...(platform ? { platform: formatPlatform(platform) } : {}),
    logger,
  };
  // A URL or ECI base is in the cache before the status goes out: one download for concurrent requests, and
  // a base that cannot be fetched is an error status, not a truncated download.
  if (rawFile === undefined && !request.base.startsWith('file:') && context.warmBase)
    await context.warmBase(
      `${spec}\0${baseOptions.mode}\0${baseOptions.platform ?? ''}`,
      () => openBaseImage(spec, baseOptions),
      context.signal,
    );
  const layerCache = join(context.cacheDir, 'oci');
  const compression = request.compression ?? 'none';
  return {
    fileName: fileNameFor(request.base, compression),
    preloads,
    options: etchOptionsFor({
      base: () => openBaseImage(spec, { ...baseOptions, signal: context.signal }),
      inject,
      ...(preloading
        ? {
            images: preloadImagesOption(preloads, {
              dataPartition,
              ...(baseRepositories ? { baseRepositories } : {}),
              stage: {
                dir: join(layerCache, `${stagePrefix()}${process.pid}-${randomBytes(4).toString('hex')}`),
                maxBytes: 1024 ** 3,
                ...(context.stagePool ? { pool: context.stagePool } : {}),
                ...(context.layerCache ? { cache: context.layerCache } : {}),
              },
            }),
          }
        : {}),
      dataPartition,
      ...(appsJson !== undefined ? { appsJson } : {}),
      compression,
      sourceDateEpoch: context.sourceDateEpoch,
      logger,
    }),
  };
}
