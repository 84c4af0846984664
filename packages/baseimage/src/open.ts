import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtchError, abortError, isEtchError, silentLogger, throwIfAborted, type Logger } from '@etch/format';
import { findZipImage, readZipImage } from '@etch/disk';
import { RegistryClient } from '@etch/registry';
import { HttpClient } from '@etch/registry/http';
import { ImageCache, cacheKey, defaultCacheDir, type CacheEntry, type CacheRecord } from './cache.js';
import { parseEciSpec, planEci } from './eci.js';
import {
  HttpRangeReader,
  downloadToFile,
  probe,
  rangedBody,
  servesRanges,
  toTarget,
  type Probe,
  type Target,
} from './http.js';
import { openLocalImage } from './local.js';
import { classifyName, lastComponent, redactUrl, acceptedExtensions } from './names.js';
import type { OpenedSource } from './opened.js';
import type { BaseImageSourceInfo, BaseMode, OpenBaseImageOptions, OpenedBaseImage } from './types.js';
import { finallyDo, sizeChecked, toReadable } from './verify.js';
import { openZipReader } from './zip.js';

/** The kind of spec a string is. */
export type SpecKind = 'file' | 'url' | 'eci';

/** `eci:…` is an ECI, `http(s)://…` a URL, anything else (and `file:` URLs) a local path. */
export function specKind(spec: string): SpecKind {
  if (spec.startsWith('eci:')) return 'eci';
  if (/^https?:\/\//i.test(spec)) return 'url';
  return 'file';
}

interface Context {
  mode: BaseMode;
  logger: Logger;
  signal?: AbortSignal;
  onProgress?: OpenBaseImageOptions['onProgress'];
  cache: ImageCache | undefined;
  offline: boolean;
  /** Things to release when the stream closes (HTTP clients, temp files), in reverse order. */
  cleanups: (() => void | Promise<void>)[];
}

function fromCache(cache: ImageCache, entry: CacheEntry, extra: Partial<BaseImageSourceInfo> = {}): OpenedSource {
  return {
    name: entry.name,
    size: entry.size,
    bytes: cache.read(entry),
    info: {
      kind: entry.kind,
      fromCache: true,
      digest: `sha256:${entry.sha256}`,
      ...(entry.resolvedVersion ? { resolvedVersion: entry.resolvedVersion } : {}),
      ...(entry.manifestDigest ? { manifestDigest: entry.manifestDigest } : {}),
      ...(entry.etag ? { etag: entry.etag } : {}),
      ...(entry.lastModified ? { lastModified: entry.lastModified } : {}),
      ...extra,
    },
  };
}

function offlineMiss(spec: string, cache: ImageCache | undefined): EtchError {
  return new EtchError(
    'ETCH_NOT_FOUND',
    cache
      ? `${spec} is not in the cache ${cache.dir}; run once without --offline to fetch it.`
      : `${spec} needs the network, and --offline was given with the cache turned off.`,
    { details: { spec } },
  );
}

async function tempPath(ctx: Context): Promise<string> {
  if (ctx.cache) {
    await mkdir(join(ctx.cache.dir, 'tmp'), { recursive: true });
    const path = join(ctx.cache.dir, 'tmp', `${process.pid}-${randomUUID()}-download`);
    ctx.cleanups.push(() => rm(path, { force: true }));
    return path;
  }
  const dir = await mkdtemp(join(tmpdir(), 'etch-download-'));
  ctx.cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'download');
}

/** Opens a URL whose name and size are known from `found` (no cache involved). */
async function fetchUrl(http: HttpClient, target: Target, found: Probe, ctx: Context): Promise<OpenedSource> {
  const candidates = [
    decodeURIComponent(lastComponent(target.url.pathname)),
    decodeURIComponent(lastComponent(found.finalUrl.pathname)),
    found.dispositionName ?? '',
  ];
  const given = candidates.find((n) => n !== '' && classifyName(n) !== undefined);
  if (given === undefined) {
    throw new EtchError('ETCH_USAGE', `${target.display} does not name a base image (${acceptedExtensions()}).`, {
      details: { url: target.display },
    });
  }
  const kind = classifyName(given)!;
  const validator = found.etag && !found.etag.startsWith('W/') ? found.etag : found.lastModified;
  const ranged = {
    ...(validator ? { validator } : {}),
    ...(found.size !== undefined ? { total: found.size } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  };
  const urlInfo = {
    kind: 'url' as const,
    ...(found.etag ? { etag: found.etag } : {}),
    ...(found.lastModified ? { lastModified: found.lastModified } : {}),
  };
  const what = `The base image ${target.display}`;
  if (found.size !== undefined && kind.kind === 'raw') {
    return { name: kind.name, size: found.size, bytes: rangedBody(http, target, 0, found.size, ranged), info: urlInfo };
  }
  if (found.size !== undefined && kind.kind === 'zip' && (await servesRanges(http, target, found.size, ctx.signal))) {
    const zip = await openZipReader(new HttpRangeReader(http, target, ranged), found.size, what);
    ctx.cleanups.push(() => zip.close());
    const image = await findZipImage(zip, what);
    if (ctx.mode === 'passthrough') {
      zip.close();
      return {
        name: kind.name,
        size: found.size,
        bytes: rangedBody(http, target, 0, found.size, ranged),
        info: { ...urlInfo, entryName: image.entry.fileName },
      };
    }
    ctx.logger.debug('reading the zip in place with HTTP ranges', { url: target.display, entry: image.entry.fileName });
    return {
      name: image.name,
      size: image.entry.uncompressedSize,
      bytes: readZipImage(zip, image.entry, what),
      info: { ...urlInfo, entryName: image.entry.fileName },
    };
  }
  // Compressed images (their size must be learnt from the whole file), zips from servers without ranges,
  // and servers that do not say the size: download first, then read locally.
  ctx.logger.info('downloading the base image before reading it', {
    url: target.display,
    reason:
      kind.kind === 'compressed' ? 'compressed' : found.size === undefined ? 'no Content-Length' : 'no range support',
  });
  const path = await tempPath(ctx);
  await downloadToFile(http, target, path, found, {
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
  });
  const local = await openLocalImage(path, {
    mode: ctx.mode,
    name: given,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
  });
  return { ...local, info: { ...local.info, ...urlInfo } };
}

interface Planned {
  opened: OpenedSource;
  record?: CacheRecord;
}

async function planUrl(spec: string, ctx: Context, options: OpenBaseImageOptions): Promise<Planned> {
  const target = toTarget(spec);
  // Keyed by the whole URL (hashed: its query may hold a signature), shown and stored without secrets.
  const keyFields = {
    source: 'url',
    url: target.display,
    urlSha256: createHash('sha256').update(target.url.toString()).digest('hex'),
    mode: ctx.mode,
  };
  const entry = ctx.cache ? await ctx.cache.get(cacheKey(keyFields)) : undefined;
  if (ctx.offline) {
    if (entry && ctx.cache) return { opened: fromCache(ctx.cache, entry) };
    throw offlineMiss(target.display, ctx.cache);
  }
  const http = new HttpClient({
    logger: ctx.logger,
    userAgent: 'etch-baseimage',
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
    ...(options.retries !== undefined ? { retry: { attempts: options.retries } } : {}),
    ...(options.minRate ? { minRate: options.minRate } : {}),
  });
  ctx.cleanups.push(() => http.close());
  let found: Probe | 'not-modified';
  if (entry && ctx.cache && (entry.etag || entry.lastModified)) {
    try {
      found = await probe(http, target, ctx.signal, {
        ...(entry.etag ? { etag: entry.etag } : {}),
        ...(entry.lastModified ? { lastModified: entry.lastModified } : {}),
      });
    } catch (error) {
      if (!isEtchError(error, 'ETCH_NETWORK') || error.details.statusCode !== undefined) throw error;
      ctx.logger.warn('cannot revalidate the cached base image; using the cached copy', {
        url: target.display,
        error: error.message,
      });
      return { opened: fromCache(ctx.cache, entry) };
    }
    const unchanged =
      found === 'not-modified' ||
      (entry.etag !== undefined && found.etag === entry.etag) ||
      (entry.etag === undefined &&
        found.etag === undefined &&
        entry.lastModified !== undefined &&
        found.lastModified === entry.lastModified);
    if (unchanged) {
      ctx.logger.debug('cached base image is fresh', { url: target.display });
      return { opened: fromCache(ctx.cache, entry) };
    }
    ctx.logger.info('the base image changed on the server; fetching it again', { url: target.display });
  } else {
    found = await probe(http, target, ctx.signal);
  }
  if (found === 'not-modified')
    throw new EtchError('ETCH_NETWORK', `${target.display} answered 304 to a request that was not conditional.`);
  const opened = await fetchUrl(http, target, found, ctx);
  const record: CacheRecord = {
    keyFields,
    spec: target.display,
    kind: 'url',
    mode: ctx.mode,
    name: opened.name,
    size: opened.size,
    ...(found.etag ? { etag: found.etag } : {}),
    ...(found.lastModified ? { lastModified: found.lastModified } : {}),
  };
  return { opened, record };
}

async function planRegistry(spec: string, ctx: Context, options: OpenBaseImageOptions): Promise<Planned> {
  const parsed = parseEciSpec(spec);
  if (ctx.offline) {
    const entry = ctx.cache ? (await ctx.cache.list()).find((e) => e.spec === spec) : undefined;
    if (entry && ctx.cache) return { opened: fromCache(ctx.cache, entry) };
    throw offlineMiss(spec, ctx.cache);
  }
  let client = options.registry;
  if (client === undefined) {
    const own = new RegistryClient({ logger: ctx.logger, ...(options.minRate ? { minRate: options.minRate } : {}) });
    ctx.cleanups.push(() => own.close());
    client = own;
  }
  const plan = await planEci(parsed, {
    client,
    logger: ctx.logger,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ...(options.platform ? { platform: options.platform } : {}),
    ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
  });
  const entry = ctx.cache ? await ctx.cache.get(cacheKey(plan.keyFields)) : undefined;
  const versionInfo = {
    ...(plan.resolvedVersion ? { resolvedVersion: plan.resolvedVersion } : {}),
    manifestDigest: plan.manifestDigest,
  };
  if (entry && ctx.cache) return { opened: fromCache(ctx.cache, entry, versionInfo) };
  const opened = await plan.open();
  return {
    opened,
    record: {
      keyFields: plan.keyFields,
      spec,
      kind: 'eci',
      mode: ctx.mode,
      name: opened.name,
      size: opened.size,
      ...versionInfo,
    },
  };
}

/**
 * Opens a base image for a `.etch` from a spec:
 * - a local file: a raw image (`.img .raw .bin .dsk .iso .wic .sdcard .rpi-sdimg .hddimg …`), a `.zip`
 *   holding one, or a raw image compressed with gzip, xz or zstd (`.img.gz`, `.img.xz`, `.img.zst`);
 * - an `http(s)://` URL of any of these (zips are read in place with HTTP ranges when the server allows);
 * - `eci:REGISTRY/REPO:TAG`, `eci:REGISTRY/REPO@VERSION_OR_RANGE` or `eci:REGISTRY/REPO@sha256:…`: the root
 *   disk of an edge-containers image in an OCI registry.
 *
 * URL and ECI sources go through the cache (see {@link ImageCache}). The size is known when this resolves;
 * the stream is checked against it (and against CRC-32, sha256 or the registry digest where the source has one).
 *
 * @example
 * ```ts
 * const base = await openBaseImage('https://example.com/balena.img.zip', { signal });
 * await createEtch({ base, … });   // base is { name, size, stream }
 * logger.info('base image', { fromCache: base.source.fromCache, version: base.source.resolvedVersion });
 * ```
 * @throws EtchError `ETCH_USAGE` (unknown kind, bad spec), `ETCH_NOT_FOUND`, `ETCH_IO`, `ETCH_NETWORK`,
 * `ETCH_AUTH_FAILED`, `ETCH_BAD_ARCHIVE`, `ETCH_UNSUPPORTED_COMPRESSION`, `ETCH_UNSUPPORTED_MANIFEST`, `ETCH_ABORTED`.
 */
export async function openBaseImage(spec: string, options: OpenBaseImageOptions = {}): Promise<OpenedBaseImage> {
  const { signal } = options;
  throwIfAborted(signal);
  const mode = options.mode ?? 'extract';
  if (mode !== 'extract' && mode !== 'passthrough')
    throw new EtchError('ETCH_USAGE', `The base mode must be extract or passthrough, not ${JSON.stringify(mode)}.`);
  const kind = specKind(spec);
  const useCache = kind !== 'file' && options.cache !== false;
  const ctx: Context = {
    mode,
    logger: options.logger ?? silentLogger,
    ...(signal ? { signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    cache: useCache ? new ImageCache(options.cacheDir ?? defaultCacheDir(), options.logger ?? silentLogger) : undefined,
    offline: Boolean(options.offline),
    cleanups: [],
  };
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    for (const step of ctx.cleanups.reverse())
      await Promise.resolve()
        .then(step)
        .catch(() => undefined);
  };
  let planned: Planned;
  const display = kind === 'url' ? redactUrl(spec) : spec;
  try {
    if (kind === 'eci') planned = await planRegistry(spec, ctx, options);
    else if (kind === 'url') planned = await planUrl(spec, ctx, options);
    else {
      const path = spec.startsWith('file:') ? fileURLToPath(spec) : spec;
      planned = {
        opened: await openLocalImage(path, {
          mode,
          ...(signal ? { signal } : {}),
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
          ...(options.bufferPool ? { bufferPool: options.bufferPool } : {}),
        }),
      };
    }
  } catch (error) {
    await cleanup();
    if (signal?.aborted) throw abortError(signal);
    throw error;
  }
  const { opened, record } = planned;
  if (opened.close) ctx.cleanups.unshift(opened.close);
  const checked = sizeChecked(opened.bytes, opened.size, {
    what: `The base image ${display}`,
    ...(signal ? { signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(opened.wrapError ? { wrapError: opened.wrapError } : {}),
  });
  const delivered = record && ctx.cache ? ctx.cache.store(checked, record) : checked;
  const stream = toReadable(finallyDo(delivered, cleanup));
  const onAbort = () => stream.destroy(abortError(signal));
  signal?.addEventListener('abort', onAbort, { once: true });
  stream.once('close', () => {
    signal?.removeEventListener('abort', onAbort);
    void cleanup();
  });
  return {
    name: opened.name,
    size: opened.size,
    stream,
    source: { spec: display, mode, fromCache: false, ...opened.info },
  };
}

/** Lists the cache entries (newest first). */
export function listCache(cacheDir: string = defaultCacheDir()): Promise<CacheEntry[]> {
  return new ImageCache(cacheDir).list();
}

/** Removes the cache's own files (and its directory when that leaves it empty); returns what was removed. */
export function cleanCache(cacheDir: string = defaultCacheDir()): Promise<{ entries: number; bytes: number }> {
  return new ImageCache(cacheDir).clean();
}
