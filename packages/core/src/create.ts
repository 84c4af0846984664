import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  EtchError,
  REQUIREMENTS_ENTRY_NAME,
  VERSION_1_0,
  VERSION_1_1,
  VERSION_1_2,
  VERSION_ENTRY_NAME,
  abortError,
  assertBaseImageName,
  assertPartition,
  entryTime,
  formatVersion,
  injectPath,
  isEtchError,
  serializeRequirements,
  silentLogger,
  throwIfAborted,
  type EtchRequirements,
  type Logger,
  ignoreRejection,
} from '@etch/format';
import {
  createCompressor,
  createTarPack,
  promisePacker,
  whenPackerIdle,
  type Compression,
  type SplicedTar,
} from '@etch/tar';
import type { BufferPool } from '@etch/disk';
import {
  dockerStoreEntries,
  stageLayers,
  type ConvertedLayerCache,
  type LayerProgress,
  type LayerStage,
  type RepositoriesJson,
  type StagePool,
  type StoreImage,
  type StoredImage,
} from '@etch/docker-store';
import type { BaseImage } from './base-image-file.js';
import { walkDirectory } from './directory-source.js';
import type { FileToInject } from './lifecycle.js';
import { ByteCounter, type ProgressListener } from './progress.js';
import { measureRequirements } from './requirements.js';

/** Files to put into one partition. */
export type InjectSource =
  /** A local folder, copied under `dest` (default: the partition root). */
  | { kind: 'directory'; partition: number; path: string; dest?: string }
  /** Entries given by the caller, names relative to the partition root. */
  | { kind: 'entries'; partition: number; entries: Iterable<FileToInject> | AsyncIterable<FileToInject> };

/** Container images to preload as the engine's store in one partition. */
export interface PreloadImages {
  /** The data partition (6 on balenaOS). */
  partition: number;
  /** Images resolved for the device's platform; shared layers are written once. */
  images: readonly StoreImage[];
  /** The base OS's own repositories.json, merged (never dropped). */
  baseRepositories?: RepositoriesJson;
  /** The engine's data root inside the partition (default `docker`). */
  root?: string;
  /**
   * Convert layers ahead, while the base image streams, into this directory (created, and removed when
   * done): download, verification and conversion then leave the critical path, and `requirements.json`
   * counts come from the conversion instead of a second read. At most `maxBytes` (default 4 GiB) on disk at
   * once; layers beyond that are converted when due. Without it each layer is converted as it is written.
   */
  stage?: {
    dir: string;
    maxBytes?: number;
    /** Share conversions with concurrent runs (see `StagePool` of `@etch/docker-store`). */
    pool?: StagePool;
    /**
     * Keep converted layers between runs (see `ConvertedLayerCache` of `@etch/docker-store`): a rebuild takes
     * them from there, with no download, decompression, hashing or conversion. The same `.etch` either way.
     */
    cache?: ConvertedLayerCache;
  };
}

/** Options for {@link createEtch}. */
export interface CreateEtchOptions {
  /** The base OS image, or a function that opens it (called once, when the base image is due). */
  base: BaseImage | (() => Promise<BaseImage>);
  /** Written after the base image, in this order. */
  inject?: readonly InjectSource[];
  /**
   * Written after the inject sources: the engine store that `docker pull` of these images would leave. May be
   * a promise (images still being resolved at a registry): it settles while the base image streams, its
   * layers are staged as soon as it does, and a rejection stops the run at once with its error.
   */
  images?: PreloadImages | Promise<PreloadImages>;
  /** Written last, after the engine store: files that describe it, such as the supervisor's `apps.json`. */
  afterImages?: readonly InjectSource[];
  /**
   * Write the format 1.1 `requirements.json` (bytes and entries per partition) after the base image, so a
   * streaming flasher can grow partitions before it injects. Counting walks directories and reads each image
   * layer once more, while the base image streams: use it with layers on local disk (a registry client with
   * a cache), as `etch create` does. Off by default; without it the file is format 1.0.
   */
  requirements?: boolean;
  /** Where the `.etch` goes. It is ended when the archive is complete, and destroyed on failure. */
  output: Writable;
  /** Compress the whole `.etch` (default `'none'`; flashers detect it by magic bytes). */
  compression?: Compression;
  /** Compression level (gzip 1–9, zstd 1–19). */
  compressionLevel?: number;
  /**
   * The mtime of every entry this run makes itself (the engine store's own files, a base image or an
   * injected entry without one), so that the same inputs give the same bytes. Default: `SOURCE_DATE_EPOCH`
   * from the environment, else `DEFAULT_ENTRY_TIME` (1980-01-01T00:00:00Z) from `@etch/format`.
   */
  entryTime?: Date;
  /**
   * Read staged image layers in buffers lent from this pool. Give it only with an output that hands each
   * chunk back once written (as `writeEtchFile` does with its own `bufferPool`); otherwise it only allocates.
   */
  bufferPool?: BufferPool;
  /** Cancels the run; the promise rejects with `ETCH_ABORTED` and the output is destroyed. */
  signal?: AbortSignal;
  /** Progress events. */
  onProgress?: ProgressListener;
  logger?: Logger;
}

/** Per-partition totals. */
export interface PartitionSummary {
  entries: number;
  /** Bytes of file content (not counting headers). */
  bytes: number;
}

/** What {@link createEtch} wrote. */
export interface CreateEtchResult {
  version: string;
  /** What `requirements.json` said, when it was written. */
  requirements?: EtchRequirements;
  baseImage: { name: string; size: number };
  partitions: Record<number, PartitionSummary>;
  compression: Compression;
  /** The preloaded images (empty without `images`). */
  images: StoredImage[];
  /** Bytes written to the output (after compression). */
  bytesWritten: number;
  durationMs: number;
}

/**
 * Writes a complete `.etch`: VERSION, the base image, then every inject source, then the end of archive.
 * Bytes flow with backpressure from the sources to `output`; nothing is held in memory.
 *
 * @example
 * ```ts
 * await createEtch({
 *   base: await baseImageFromFile('balena.img'),
 *   inject: [{ kind: 'directory', partition: 1, path: './boot-files' }],
 *   output: fs.createWriteStream('out.etch'),
 * })
 * ```
 */
export async function createEtch(options: CreateEtchOptions): Promise<CreateEtchResult> {
  const started = Date.now();
  const { signal, onProgress } = options;
  // Observed at once: images still resolving must not reject unhandled if this call fails before using them.
  const imagesSettling = options.images === undefined ? undefined : Promise.resolve(options.images);
  ignoreRejection(imagesSettling, 'awaited below, or irrelevant when the run fails first');
  const logger = options.logger ?? silentLogger;
  const compression = options.compression ?? 'none';
  const mtime = options.entryTime ?? entryTime(process.env['SOURCE_DATE_EPOCH']);
  throwIfAborted(signal);
  for (const source of options.inject ?? []) assertPartition(source.partition);
  if (options.images !== undefined && !isPromiseLike(options.images)) assertPartition(options.images.partition);

  const pack = createTarPack();
  const counter = new ByteCounter(() => {});
  const stages: NodeJS.ReadWriteStream[] =
    compression === 'none' ? [] : [createCompressor(compression, options.compressionLevel)];
  // tar-stream's pack is a streamx Readable; Node's pipeline drives it fine, its types just do not say so.
  const streams = [pack as unknown as NodeJS.ReadableStream, ...stages, counter, options.output];
  const piping = pipeline(streams, signal ? { signal } : {});
  // If the output fails first, the entry writers must stop too: destroying the pack makes them reject.
  piping.catch((err: unknown) => {
    if (!pack.destroying) pack.destroy(err as Error);
  });

  const partitions: Record<number, PartitionSummary> = {};
  // 1.2 when preloading: a layer may hold device nodes or FIFOs, and VERSION comes before any layer is read.
  const version = options.images !== undefined ? VERSION_1_2 : options.requirements ? VERSION_1_1 : VERSION_1_0;
  let requirements: EtchRequirements | undefined;
  let baseImage: { name: string; size: number } | undefined;
  let stored: StoredImage[] = [];
  let stage: LayerStage | undefined;
  let ended = false;
  // Work beside the base image (staging, counting) stops with the run, whichever way it ends.
  const beside = new AbortController();
  const besideSignal = signal ? AbortSignal.any([signal, beside.signal]) : beside.signal;
  let baseStream: Readable | undefined;
  let counted: ByteCounter | undefined;
  // The first failure of work running beside the base image (resolving images, staging layers): the reason
  // the run stopped, whatever writing the next entry then reported.
  let earlyFailure: unknown;
  const stopEarly = (err: unknown) => {
    earlyFailure ??= err;
    if (!pack.destroying) pack.destroy(err as Error);
  };
  try {
    const write = promisePacker(pack, undefined, { mtime, ...(signal ? { signal } : {}) });
    await write({ name: VERSION_ENTRY_NAME, mode: 0o644, mtime: new Date(0) }, formatVersion(version));
    const preloading =
      options.images === undefined
        ? undefined
        : (imagesSettling as Promise<PreloadImages>).then((images) => {
            assertPartition(images.partition);
            if (images.stage && !ended) {
              stage = stageLayers(images.images, {
                dir: images.stage.dir,
                ...(images.stage.maxBytes !== undefined ? { maxBytes: images.stage.maxBytes } : {}),
                ...(images.stage.pool ? { pool: images.stage.pool } : {}),
                ...(images.stage.cache ? { cache: images.stage.cache } : {}),
                ...(images.root !== undefined ? { root: images.root } : {}),
                // Staged with the names this pack gives them, so each is appended as it is (see the store's appendTo).
                namePrefix: partitionPrefix(images.partition),
                signal: besideSignal,
                onProgress: (event: LayerProgress) => onProgress?.(event),
                // The store would fail on that layer after the base image: fail now instead.
                onFailure: stopEarly,
                logger,
              });
            }
            return images;
          });
    preloading?.catch(stopEarly);
    // Counting runs while the base image streams; it is awaited only once the base image is written.
    const measuring = options.requirements
      ? (async () => measureRequirements({ ...options, images: await preloading, signal: besideSignal }, stage))()
      : undefined;
    ignoreRejection(measuring, 'awaited once the base image is written');

    const base = typeof options.base === 'function' ? await options.base() : options.base;
    baseStream = base.stream;
    assertBaseImageName(base.name);
    baseImage = { name: base.name, size: base.size };
    logger.info('writing base image', { name: base.name, size: base.size });
    onProgress?.({ phase: 'base-image', name: base.name, bytes: 0, total: base.size });
    // A stream stage, not an async iteration: iterating a byte stream joins whatever is buffered into a new
    // buffer, and the chunks must reach the output as they were read (see writeEtchFile's bufferPool).
    counted = new ByteCounter((bytes) =>
      onProgress?.({ phase: 'base-image', name: base.name, bytes, total: base.size }),
    );
    ignoreRejection(pipeline(base.stream, counted), 'a read error destroys the counter, which the packer reports');
    await write({ name: base.name, mode: 0o644, size: base.size }, counted);
    if (measuring) {
      requirements = await measuring;
      logger.info('requirements', { partitions: requirements.partitions });
      await write(
        { name: REQUIREMENTS_ENTRY_NAME, mode: 0o644, mtime: new Date(0) },
        serializeRequirements(requirements),
      );
    }

    // The image store reports per layer instead of per entry, so its entries are counted but not announced.
    const sources: (InjectSource & { quiet?: boolean })[] = [...(options.inject ?? [])];
    const preload = await preloading;
    if (preload) {
      const { partition, images, baseRepositories, root } = preload;
      // yield* hands over the generator's return value (what was stored) once its last entry is consumed.
      const store = async function* () {
        stored = yield* dockerStoreEntries(images, {
          ...(baseRepositories ? { baseRepositories } : {}),
          ...(root !== undefined ? { root } : {}),
          ...(stage ? { stage } : {}),
          appendTo: {
            pack,
            prefix: partitionPrefix(partition),
            ...(options.bufferPool ? { bufferPool: options.bufferPool } : {}),
            onAppended: ({ entries, fileBytes }: SplicedTar) => {
              const summary = (partitions[partition] ??= { entries: 0, bytes: 0 });
              summary.entries += entries;
              summary.bytes += fileBytes;
            },
          },
          ...(signal ? { signal } : {}),
          mtime,
          onProgress: (event: LayerProgress) => onProgress?.(event),
          logger,
        });
      };
      sources.push({ kind: 'entries', partition, entries: store(), quiet: true });
    }
    sources.push(...(options.afterImages ?? []));
    for (const source of sources) {
      const summary = (partitions[source.partition] ??= { entries: 0, bytes: 0 });
      const files =
        source.kind === 'directory'
          ? walkDirectory(source.path, source.dest ?? '', signal ? { signal } : {})
          : source.entries;
      const prefix = partitionPrefix(source.partition);
      const writeInto = promisePacker(pack, prefix, { mtime, ...(signal ? { signal } : {}) });
      logger.info('injecting', { partition: source.partition, kind: source.kind });
      for await (const { header, content } of files) {
        throwIfAborted(signal);
        await writeInto(header, content);
        summary.entries += 1;
        summary.bytes += contentBytes(header, content);
        if (!source.quiet)
          onProgress?.({
            phase: 'inject',
            partition: source.partition,
            path: header.name,
            entries: summary.entries,
            bytes: summary.bytes,
          });
      }
    }
    await whenPackerIdle(pack);
    pack.finalize();
    await piping;
  } catch (err) {
    const cause = earlyFailure ?? err;
    const error = signal?.aborted
      ? abortError(signal)
      : isEtchError(cause)
        ? cause
        : new EtchError('ETCH_IO', `Writing the .etch failed: ${(cause as Error).message}`, { cause });
    if (!pack.destroying) pack.destroy(error);
    // The base image may not have reached the pack yet (a failure beside it came first): close it here,
    // without an error of its own, which nobody may be listening for.
    counted?.destroy(error);
    baseStream?.destroy();
    options.output.destroy(error);
    await ignoreRejection(piping, 'the run already failed with the error thrown next');
    throw error;
  } finally {
    ended = true;
    beside.abort();
    // Leftovers of the stage must not turn a finished .etch (or the real error) into another failure.
    await stage
      ?.close()
      .catch((err: unknown) =>
        logger.warn('could not remove the staging directory', { error: (err as Error).message }),
      );
  }
  onProgress?.({ phase: 'finalize', bytesWritten: counter.bytes });
  return {
    version: formatVersion(version),
    ...(requirements ? { requirements } : {}),
    baseImage: baseImage,
    partitions,
    compression,
    images: stored,
    bytesWritten: counter.bytes,
    durationMs: Date.now() - started,
  };
}

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown }).then === 'function';
}

/** The prefix of a partition's entries in the archive, e.g. `inject/6`. */
function partitionPrefix(partition: number): string {
  return injectPath(partition, '/').replace(/\/$/, '');
}

function contentBytes({ type, size }: FileToInject['header'], content: FileToInject['content']): number {
  if (type !== undefined && type !== 'file') return 0;
  if (size !== undefined) return size;
  return typeof content === 'string' ? Buffer.byteLength(content) : content instanceof Uint8Array ? content.length : 0;
}
