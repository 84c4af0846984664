import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  EtchError,
  ignoreRejection,
  isEtchError,
  normalizeRelativePath,
  silentLogger,
  throwIfAborted,
  toEtchError,
  type Logger,
} from '@etch/format';
import {
  formatPlatform,
  hostPlatform,
  offeredPlatforms,
  parseReference,
  platformRank,
  pullScope,
  selectFromIndex,
  toPlatform,
  withTarget,
  type Descriptor,
  type FetchedManifest,
  type ImageReference,
  type RegistryClient,
} from '@etch/registry';
import { contentRangeStart, discard, header } from '@etch/registry/http';
import { decompressAuto, extractTar } from '@etch/tar';
import { EciAnnotation, EciMediaType, chooseEciManifest, layersOf, unclosableBlob } from './eci.js';
import type { EciRole } from './eci-push.js';

/** How the ECI was stored, as lf-edge's "differentiation specification" classifies it. */
export type EciShape =
  /** Layers of lf-edge media types, each a file. */
  | 'artifacts'
  /** Standard layers annotated with `org.lfedge.eci.*`, each a tar (gzip or not) of its file. */
  | 'legacy'
  /** A standard image whose config labels `org.lfedge.eci.artifact.*` name files inside its layers. */
  | 'labels';

/** Progress of a pull: the bytes of one blob downloaded and verified so far. */
export interface EciPullProgress {
  /** The file being written (for a legacy layer, the layer's title). */
  name: string;
  bytes: number;
  total: number;
}

/** Options of {@link pullEci}. */
export interface PullEciOptions {
  /** Where the files go (created when missing). */
  dir: string;
  /** `os/arch[/variant]` for an index of ECIs. Default: the only entry, else this host's platform. */
  platform?: string;
  signal?: AbortSignal;
  onProgress?: (progress: EciPullProgress) => void;
  logger?: Logger;
}

/** A file {@link pullEci} wrote, or found already there. */
export interface EciPulledFile {
  /** Its ECI file name, relative to `dir` (`kernel`, `disk-root-os.img`, `config.json`). */
  name: string;
  /** The absolute or `dir`-relative path it is at. */
  path: string;
  role: EciRole | 'unknown';
  size: number;
  /** The blob it came from (for legacy and labelled files, the layer holding it). */
  blob: string;
  /** `existed`: a file with exactly the blob's bytes was already there and was kept. */
  how: 'downloaded' | 'existed';
}

/** What {@link pullEci} wrote. */
export interface PullEciResult {
  /** `registry/repository:tag` or `@digest`. */
  reference: string;
  /** The manifest read (the platform's, when the reference is an index). */
  manifestDigest: string;
  /** The platform chosen from an index, if the reference is one. */
  platform?: string;
  shape: EciShape;
  files: EciPulledFile[];
}

interface PullContext {
  client: RegistryClient;
  ref: ImageReference;
  options: PullEciOptions;
  logger: Logger;
  what: string;
  /** Temporary files to remove when the pull fails. */
  temps: Set<string>;
  files: EciPulledFile[];
}

const ECI_TYPE_PREFIX = 'application/vnd.lfedge.';

function roleOf(layer: Descriptor): EciRole | 'unknown' {
  const role = layer.annotations?.[EciAnnotation.ROLE];
  const type = layer.annotations?.[EciAnnotation.MEDIA_TYPE] ?? layer.mediaType;
  if (role === 'kernel' || role === 'initrd' || role === 'disk-root' || role === 'disk-additional') return role;
  if (type.startsWith(EciMediaType.DISK_PREFIX)) return 'disk-root';
  if (type.startsWith('application/vnd.lfedge.eci.kernel.')) return 'kernel';
  if (type.startsWith('application/vnd.lfedge.eci.initrd.')) return 'initrd';
  if (type === EciMediaType.OTHER || role === '') return 'other';
  return 'unknown';
}

/**
 * A file name inside the pull directory, as a manifest or a tar gives it: relative, no `..`, no NUL, not a
 * directory itself. A name that would leave the directory is refused, not rewritten.
 */
function safeName(name: string, what: string): string {
  let normal: string;
  try {
    normal = normalizeRelativePath(name.replace(/^\.\//, ''), name);
  } catch (cause) {
    throw new EtchError(
      'ETCH_UNSAFE_PATH',
      `${what}: the file name ${JSON.stringify(name)} would leave the pull directory; nothing is written for it.`,
      {
        cause,
        details: { entryName: name },
      },
    );
  }
  if (normal === '' || name.includes('\\'))
    throw new EtchError('ETCH_UNSAFE_PATH', `${what}: ${JSON.stringify(name)} is not a file name.`, {
      details: { entryName: name },
    });
  return normal;
}

/** The file name of an artifact layer: its title, else one made from its role and digest. */
function artifactName(layer: Descriptor, what: string): string {
  const title = layer.annotations?.[EciAnnotation.TITLE];
  if (title !== undefined && title !== '') return safeName(title, what);
  const role = roleOf(layer);
  const short = layer.digest.slice(layer.digest.indexOf(':') + 1, layer.digest.indexOf(':') + 13);
  if (role === 'kernel' || role === 'initrd') return role;
  if (role === 'disk-root' || role === 'disk-additional') {
    const type = (layer.annotations?.[EciAnnotation.MEDIA_TYPE] ?? layer.mediaType).slice(
      EciMediaType.DISK_PREFIX.length,
    );
    return `${role}-${short}.${type || 'img'}`;
  }
  return `file-${short}`;
}

function tempBeside(path: string): string {
  return join(dirname(path), `.${posix.basename(path)}.${randomBytes(4).toString('hex')}.etch-partial`);
}

/** Whether `path` already holds exactly the blob (its size, then its digest). */
async function holdsBlob(path: string, blob: Descriptor, signal?: AbortSignal): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile() || info.size !== blob.size || !blob.digest.startsWith('sha256:')) return false;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, signal ? { signal } : {}) as AsyncIterable<Buffer>)
    hash.update(chunk);
  return `sha256:${hash.digest('hex')}` === blob.digest;
}

/**
 * Makes the folders of `path` inside the pull directory, refusing any that exists as something other than a
 * folder (a symlink there would carry the file out of the directory).
 */
async function makeParents(ctx: PullContext, path: string): Promise<void> {
  const root = ctx.options.dir;
  const parts = relative(root, dirname(path))
    .split(sep)
    .filter((p) => p !== '');
  let at = root;
  for (const part of parts) {
    at = join(at, part);
    const info = await lstat(at).catch(() => undefined);
    if (info === undefined) await mkdir(at);
    else if (!info.isDirectory() || info.isSymbolicLink())
      throw new EtchError(
        'ETCH_UNSAFE_PATH',
        `${ctx.what}: ${at} is not a folder (a symlink or a file), so nothing is written through it.`,
        { details: { path: at } },
      );
  }
}

async function writeStream(
  ctx: PullContext,
  path: string,
  bytes: AsyncIterable<Uint8Array> | Readable,
): Promise<string> {
  await makeParents(ctx, path);
  const temp = tempBeside(path);
  ctx.temps.add(temp);
  await pipeline(
    bytes instanceof Readable ? bytes : Readable.from(bytes),
    createWriteStream(temp, { flags: 'wx' }),
    ctx.options.signal ? { signal: ctx.options.signal } : {},
  );
  return temp;
}

async function commit(ctx: PullContext, temp: string, path: string): Promise<void> {
  await rename(temp, path);
  ctx.temps.delete(temp);
}

function progressFor(ctx: PullContext, name: string) {
  const onProgress = ctx.options.onProgress;
  return onProgress
    ? { onProgress: (p: { bytes: number; total: number }) => onProgress({ name, bytes: p.bytes, total: p.total }) }
    : {};
}

/** The name an artifact's bytes are written under until verified; kept by a failed or interrupted pull. */
function partialOf(path: string): string {
  return join(dirname(path), `.${posix.basename(path)}.etch-partial`);
}

/** The size of a partial download worth continuing (some bytes, fewer than the blob), else 0. */
async function partialSize(partial: string, layer: Descriptor): Promise<number> {
  if (!layer.digest.startsWith('sha256:')) return 0;
  const info = await stat(partial).catch(() => undefined);
  return info?.isFile() && info.size > 0 && info.size < layer.size ? info.size : 0;
}

/**
 * Continues a partial download left by an earlier pull: the bytes there are hashed, the rest is asked for with
 * `Range` and appended, and the whole is checked against the blob's digest. Returns false when the registry
 * does not serve the range (the caller downloads it all again). A cut while appending is tried again from what
 * reached the disk, as often as the client's retry policy allows.
 */
async function resumePartial(ctx: PullContext, layer: Descriptor, partial: string, name: string): Promise<boolean> {
  const signal = ctx.options.signal;
  const what = `${ctx.what}: resuming ${name}`;
  for (let attempt = 1; ; attempt += 1) {
    const offset = await partialSize(partial, layer);
    if (offset === 0) return false;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(partial, signal ? { signal } : {}) as AsyncIterable<Buffer>)
      hash.update(chunk);
    const response = await ctx.client.request(
      ctx.ref.registry,
      `${ctx.ref.repository}/blobs/${layer.digest}`,
      [pullScope(ctx.ref.repository)],
      { headers: { range: `bytes=${offset}-` }, ...(signal ? { signal } : {}) },
      what,
    );
    if (response.status !== 206 || contentRangeStart(header(response.headers, 'content-range')) !== offset) {
      discard(response);
      ctx.logger.info('the registry does not serve a range of the blob; downloading it whole', {
        digest: layer.digest,
        status: response.status,
      });
      return false;
    }
    ctx.logger.info('resuming an ECI file', { name, offset, size: layer.size });
    let bytes = offset;
    const onProgress = ctx.options.onProgress;
    async function* counted(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const chunk of body) {
        bytes += chunk.length;
        if (bytes > layer.size) break;
        hash.update(chunk);
        onProgress?.({ name, bytes, total: layer.size });
        yield chunk;
      }
    }
    try {
      await pipeline(
        Readable.from(counted(response.body as AsyncIterable<Buffer>)),
        createWriteStream(partial, { flags: 'a' }),
        signal ? { signal } : {},
      );
    } catch (error) {
      if (signal?.aborted || attempt >= ctx.client.http.retry.attempts) throw toEtchError(error, { signal });
      await ctx.client.http.backOff(attempt, signal);
      continue;
    } finally {
      discard(response);
    }
    const digest = `sha256:${hash.digest('hex')}`;
    if (bytes !== layer.size || digest !== layer.digest) {
      await rm(partial, { force: true });
      throw new EtchError(
        bytes !== layer.size ? 'ETCH_SIZE_MISMATCH' : 'ETCH_DIGEST_MISMATCH',
        `${what}: the partial file and the rest from the registry make ${bytes} bytes hashing to ${digest}, not ${layer.size} bytes of ${layer.digest}. The partial file was removed; pull again.`,
        { details: { digest: layer.digest, actual: digest } },
      );
    }
    return true;
  }
}

/**
 * An artifact layer: the blob is the file. Kept when the file is already there with the same bytes; continued
 * from where an interrupted pull stopped (its `.NAME.etch-partial`); else downloaded under that partial name.
 */
async function pullArtifact(ctx: PullContext, layer: Descriptor, name: string): Promise<void> {
  const path = join(ctx.options.dir, name);
  const signal = ctx.options.signal;
  const base = { name, path, role: roleOf(layer), size: layer.size, blob: layer.digest };
  if (await holdsBlob(path, layer, signal)) {
    ctx.files.push({ ...base, how: 'existed' });
    return;
  }
  await makeParents(ctx, path);
  const partial = partialOf(path);
  if (!(await resumePartial(ctx, layer, partial, name))) {
    try {
      await pipeline(
        Readable.from(
          ctx.client.openBlob(ctx.ref, layer, { ...(signal ? { signal } : {}), ...progressFor(ctx, name) }),
        ),
        createWriteStream(partial),
        signal ? { signal } : {},
      );
    } catch (error) {
      // Bytes that failed their digest are not worth continuing; a cut or an interrupt leaves them for next time.
      if (isEtchError(error, 'ETCH_DIGEST_MISMATCH') || isEtchError(error, 'ETCH_SIZE_MISMATCH'))
        await rm(partial, { force: true });
      throw error;
    }
  }
  await rename(partial, path);
  ctx.files.push({ ...base, how: 'downloaded' });
}

/**
 * Reads a tar layer (gzip, zstd or plain) through to the end of its blob, so its digest is checked, handing each
 * entry to `onEntry`. The blob is read to its end after the tar's end too: only then is its digest known.
 */
async function readTarLayer(
  ctx: PullContext,
  layer: Descriptor,
  name: string,
  onEntry: (path: string, entry: { type: string; size: number; body: Readable }) => Promise<void>,
): Promise<void> {
  const signal = ctx.options.signal;
  const blob = ctx.client.openBlob(ctx.ref, layer, { ...(signal ? { signal } : {}), ...progressFor(ctx, name) });
  const { shared, next, error: blobError } = unclosableBlob(blob);
  let stream: Readable | undefined;
  try {
    try {
      stream = (await decompressAuto(shared, signal)).stream;
      for await (const { header, body } of extractTar(stream, signal ? { signal } : {})) {
        throwIfAborted(signal);
        await onEntry(header.name, { type: header.type, size: header.size, body });
      }
    } catch (error) {
      if (blobError() !== undefined) throw toEtchError(blobError(), { signal });
      if (isEtchError(error)) throw error;
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `${ctx.what}: the layer ${layer.digest} is not a readable tar: ${(error as Error).message}.`,
        { cause: error, details: { digest: layer.digest } },
      );
    } finally {
      stream?.destroy();
    }
    if (blobError() !== undefined) throw toEtchError(blobError(), { signal });
    // The rest of the blob (gzip trailer, padding after the tar's end): only its end proves the digest.
    for (;;) if ((await next()).done) break;
  } finally {
    await ignoreRejection(blob.return(undefined), 'the blob is closed after it was read or after a failure');
  }
}

/** A legacy layer: a tar of the file(s); each regular file is written under its (checked) name. */
async function pullLegacy(ctx: PullContext, layer: Descriptor, title: string): Promise<void> {
  const written: { temp: string; path: string; name: string; size: number }[] = [];
  await readTarLayer(ctx, layer, title, async (entryName, entry) => {
    if (entry.type === 'directory') return;
    const name = safeName(entryName, `${ctx.what}, layer ${layer.digest}`);
    if (entry.type !== 'file') {
      ctx.logger.warn('ECI layer entry that is not a regular file skipped', { entryName: name, type: entry.type });
      entry.body.resume();
      return;
    }
    const path = join(ctx.options.dir, name);
    written.push({ temp: await writeStream(ctx, path, entry.body), path, name, size: entry.size });
  });
  // Renamed into place only now that the blob's digest was checked.
  for (const file of written) {
    await commit(ctx, file.temp, file.path);
    ctx.files.push({
      name: file.name,
      path: file.path,
      role: roleOf(layer),
      size: file.size,
      blob: layer.digest,
      how: 'downloaded',
    });
  }
}

/** `org.lfedge.eci.artifact.<what>` → the file name lf-edge gives it. */
function labelledName(key: string, path: string): [EciRole, string] | undefined {
  const base = posix.basename(path);
  if (key === `${EciAnnotation.ARTIFACT_LABEL_PREFIX}kernel`) return ['kernel', 'kernel'];
  if (key === `${EciAnnotation.ARTIFACT_LABEL_PREFIX}initrd`) return ['initrd', 'initrd'];
  if (key === EciAnnotation.ROOT_LABEL)
    return ['disk-root', base.startsWith('disk-root-') ? base : `disk-root-${base}`];
  const disk = new RegExp(`^${EciAnnotation.ARTIFACT_LABEL_PREFIX.replaceAll('.', '\\.')}disk-(\\d+)$`).exec(key);
  if (disk) return ['disk-additional', base.startsWith(`disk-${disk[1]}-`) ? base : `disk-${disk[1]}-${base}`];
  if (key === EciAnnotation.OTHER_LABEL || /^org\.lfedge\.eci\.other-\d+$/.test(key)) return ['other', base];
  return undefined;
}

/**
 * A standard image whose config labels name files inside its layers: the layers are read bottom to top, as
 * they apply, so the file a later layer replaces or whites out is the one that counts.
 */
async function pullLabelled(
  ctx: PullContext,
  layers: readonly Descriptor[],
  labels: Record<string, unknown>,
): Promise<void> {
  const wanted = new Map<string, { name: string; role: EciRole }>();
  for (const [key, value] of Object.entries(labels)) {
    if (typeof value !== 'string') continue;
    const named = labelledName(key, value);
    if (!named) continue;
    const inImage = safeName(value.replace(/^\/+/, ''), `${ctx.what}, label ${key}`);
    wanted.set(inImage, { role: named[0], name: safeName(named[1], `${ctx.what}, label ${key}`) });
  }
  const found = new Map<string, { temp: string; size: number; blob: string }>();
  const drop = async (path: string) => {
    const had = found.get(path);
    if (!had) return;
    found.delete(path);
    ctx.temps.delete(had.temp);
    await rm(had.temp, { force: true });
  };
  for (const layer of layers) {
    await readTarLayer(ctx, layer, `layer ${layer.digest}`, async (entryName, entry) => {
      const path = entryName.replace(/^\.?\/+/, '').replace(/\/+$/, '');
      const base = posix.basename(path);
      const dir = posix.dirname(path);
      if (base === '.wh..wh..opq') {
        for (const key of [...found.keys()]) if (dir === '.' || key.startsWith(`${dir}/`)) await drop(key);
        return;
      }
      if (base.startsWith('.wh.')) {
        await drop(posix.join(dir, base.slice(4)));
        return;
      }
      const want = wanted.get(path);
      if (!want) return;
      await drop(path);
      if (entry.type !== 'file') return;
      const temp = await writeStream(ctx, join(ctx.options.dir, want.name), entry.body);
      found.set(path, { temp, size: entry.size, blob: layer.digest });
    });
  }
  for (const [path, want] of wanted) {
    const file = found.get(path);
    if (!file)
      throw new EtchError('ETCH_NOT_FOUND', `${ctx.what}: its label names /${path}, which is in none of its layers.`, {
        details: { entryName: path },
      });
    const target = join(ctx.options.dir, want.name);
    await commit(ctx, file.temp, target);
    ctx.files.push({
      name: want.name,
      path: target,
      role: want.role,
      size: file.size,
      blob: file.blob,
      how: 'downloaded',
    });
  }
}

async function chooseManifest(
  ctx: PullContext,
  top: FetchedManifest,
): Promise<{ manifest: FetchedManifest; platform?: string }> {
  const { manifest, chosen } = await chooseEciManifest(ctx.ref, top, ctx.what, {
    client: ctx.client,
    ...(ctx.options.platform !== undefined ? { platform: ctx.options.platform } : {}),
    ...(ctx.options.signal ? { signal: ctx.options.signal } : {}),
    ambiguous: (index) => {
      ctx.logger.info("ECI index without a platform asked for: choosing this host's", {
        offered: offeredPlatforms(index).join(', '),
      });
      return selectFromIndex(index, hostPlatform(), ctx.what);
    },
  });
  return { manifest, ...(chosen?.platform ? { platform: formatPlatform(chosen.platform) } : {}) };
}

function isConfigOfEci(config: Descriptor | undefined): boolean {
  return (
    config !== undefined &&
    (config.mediaType === EciMediaType.CONFIG || config.annotations?.[EciAnnotation.MEDIA_TYPE] === EciMediaType.CONFIG)
  );
}

/**
 * Pulls an ECI's files into a directory, each under its ECI file name (`kernel`, `initrd`, `disk-root-<name>`,
 * `disk-<i>-<name>`, `config.json`, other files by title). Reads the three shapes lf-edge defines: artifact media
 * types, legacy tar layers with `org.lfedge.eci.*` annotations, and standard images whose config labels name the
 * files' paths. Every blob is verified against its digest before its file takes its final name (files are written
 * to temporary names first, so a failed pull leaves nothing half-written under an ECI name); a file already there
 * with the blob's exact bytes is kept; a download cut mid-way resumes, and an artifact file an interrupted pull
 * left as `.NAME.etch-partial` is continued with `Range`. Names that would leave `dir` (absolute, `..`) are refused.
 * A plain OCI image is refused with `ETCH_UNSUPPORTED_MANIFEST`.
 *
 * @example
 * ```ts
 * const client = new RegistryClient();
 * const pulled = await pullEci(client, 'registry.local:5000/eci/os:2.58.4', { dir: 'out', platform: 'linux/arm64' });
 * for (const file of pulled.files) console.log(file.name, file.size);
 * ```
 */
export async function pullEci(
  client: RegistryClient,
  reference: string | ImageReference,
  options: PullEciOptions,
): Promise<PullEciResult> {
  throwIfAborted(options.signal);
  let ref = typeof reference === 'string' ? parseReference(reference.replace(/^eci:(\/\/)?/, '')) : reference;
  if (ref.tag === undefined && ref.digest === undefined) ref = withTarget(ref, { tag: 'latest' });
  const display = `${ref.fullName}${ref.digest ? `@${ref.digest}` : `:${ref.tag}`}`;
  const ctx: PullContext = {
    client,
    ref,
    options: { ...options, dir: resolve(options.dir) },
    logger: options.logger ?? silentLogger,
    what: `The ECI ${display}`,
    temps: new Set(),
    files: [],
  };
  const call = options.signal ? { signal: options.signal } : {};
  try {
    await mkdir(ctx.options.dir, { recursive: true });
    const top = await client.getManifest(ref, call);
    const { manifest, platform } = await chooseManifest(ctx, top);
    const layers = layersOf(manifest.json, ctx.what);
    const config = manifest.json['config'] as Descriptor | undefined;
    if (options.platform !== undefined && platform === undefined && config?.mediaType === EciMediaType.OCI_CONFIG)
      await checkPlatform(ctx, config, options.platform);
    const isArtifact = (l: Descriptor) => l.mediaType.startsWith(ECI_TYPE_PREFIX);
    const isAnnotated = (l: Descriptor) =>
      l.annotations?.[EciAnnotation.ROLE] !== undefined || l.annotations?.[EciAnnotation.MEDIA_TYPE] !== undefined;
    let shape: EciShape;
    if (layers.some(isArtifact)) shape = 'artifacts';
    else if (layers.some(isAnnotated)) shape = 'legacy';
    else shape = 'labels';

    if (shape === 'labels') {
      const labels =
        config && !isConfigOfEci(config) && config.size > 2
          ? labelsOfConfig(await client.fetchBlob(ref, config, call), ctx.what)
          : {};
      if (!Object.keys(labels).some((key) => labelledName(key, '/x') !== undefined))
        throw new EtchError(
          'ETCH_UNSUPPORTED_MANIFEST',
          `${ctx.what} is a plain OCI image, not an ECI: no layer has an lf-edge media type (${ECI_TYPE_PREFIX}…), none is annotated ${EciAnnotation.ROLE}, and its config has no ${EciAnnotation.ARTIFACT_LABEL_PREFIX}* label.`,
          { details: { reference: display } },
        );
      await pullLabelled(ctx, layers, labels);
    } else {
      const names = new Set<string>();
      for (const layer of layers) {
        throwIfAborted(options.signal);
        if (isArtifact(layer)) {
          const name = artifactName(layer, ctx.what);
          if (names.has(name))
            throw new EtchError('ETCH_BAD_MANIFEST', `${ctx.what} has two layers named ${name}.`, {
              details: { entryName: name },
            });
          names.add(name);
          await pullArtifact(ctx, layer, name);
        } else if (isAnnotated(layer)) {
          await pullLegacy(ctx, layer, layer.annotations?.[EciAnnotation.TITLE] ?? layer.digest);
        } else ctx.logger.warn('ECI layer without lf-edge type or annotations skipped', { digest: layer.digest });
      }
    }
    if (config && isConfigOfEci(config)) {
      const bytes = await client.fetchBlob(ref, config, call);
      const path = join(ctx.options.dir, 'config.json');
      const temp = await writeStream(ctx, path, Readable.from([bytes]));
      await commit(ctx, temp, path);
      ctx.files.push({
        name: 'config.json',
        path,
        role: 'config',
        size: bytes.length,
        blob: config.digest,
        how: 'downloaded',
      });
    }
    return {
      reference: display,
      manifestDigest: manifest.digest,
      ...(platform !== undefined ? { platform } : {}),
      shape,
      files: ctx.files,
    };
  } catch (error) {
    // fs, zlib and abort errors become EtchErrors here, at the package boundary.
    throw toEtchError(error, { signal: options.signal, message: (m) => `${ctx.what}: ${m}` });
  } finally {
    for (const temp of ctx.temps) await rm(temp, { force: true });
  }
}

/** A single manifest (no index) asked for with a platform: its image config must be of that platform. */
async function checkPlatform(ctx: PullContext, config: Descriptor, wanted: string): Promise<void> {
  const bytes = await ctx.client.fetchBlob(ctx.ref, config, ctx.options.signal ? { signal: ctx.options.signal } : {});
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    return; // not an image config after all: nothing says what platform it is for
  }
  const json = (parsed ?? {}) as { os?: unknown; architecture?: unknown; variant?: unknown };
  if (typeof json.os !== 'string' || typeof json.architecture !== 'string') return;
  const offered = {
    os: json.os,
    architecture: json.architecture,
    ...(typeof json.variant === 'string' ? { variant: json.variant } : {}),
  };
  if (platformRank(toPlatform(wanted), offered) === undefined)
    throw new EtchError(
      'ETCH_PLATFORM_NOT_FOUND',
      `${ctx.what} is for ${formatPlatform(offered)}, not ${wanted}; it is a single ECI, not an index of several.`,
      { details: { platform: wanted, available: [formatPlatform(offered)] } },
    );
}

function labelsOfConfig(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    throw new EtchError('ETCH_BAD_MANIFEST', `${what}: its image config is not JSON.`, { cause });
  }
  const labels = (value as { config?: { Labels?: unknown } } | null)?.config?.Labels;
  return labels !== null && typeof labels === 'object' && !Array.isArray(labels)
    ? (labels as Record<string, unknown>)
    : {};
}
