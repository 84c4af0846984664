import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { EtchError, isEtchError, silentLogger, type Logger, ignoreRejection } from '@etch/format';
import {
  createTarPack,
  extractTar,
  promisePacker,
  spliceTar,
  whenPackerIdle,
  type EntryHeader,
  type SplicedTar,
  type TarHeader,
  type TarPack,
} from '@etch/tar';
import { readFileChunks, type BufferPool } from '@etch/disk';
import { parseConfig } from './image-config.js';
import {
  crc32Hex,
  type CachedConversion,
  type ConvertedLayerCache,
  type ConvertedLayerKey,
} from './converted-cache.js';
import { StageFileSink } from './stage-file-sink.js';
import { cacheIdFor, chainIds } from './ids.js';
import type { ConvertedLayer, StoreEntry } from './layer-converter.js';
import { convertBlob } from './layer-source.js';
import { paths } from './layout.js';
import type { StagePool, StageLease } from './stage-pool.js';
import type { LayerProgress, StoreImage, StoreLayer } from './store.js';

/** Options for {@link stageLayers}. */
export interface StageOptions {
  /**
   * A directory for the converted layers: created here (it must not exist yet; its parent may not either),
   * removed by {@link LayerStage.close}. If it cannot be created or written (full disk), staging stops and
   * the store converts the layers itself; the run does not fail for it.
   */
  dir: string;
  /**
   * Most bytes the directory holds at once (default 4 GiB). A layer that does not fit beside those staged
   * before it waits until the store has written some out; one bigger than the whole budget is converted
   * when it is due.
   */
  maxBytes?: number;
  /** The engine's data root inside the partition; must be the one the store is written with. */
  root?: string;
  /**
   * Written before every name in the staged files, e.g. `inject/6`: the prefix the caller's pack gives the
   * store's entries. A staged layer can then be appended to that pack as it is ({@link LayerStage.appendTo}),
   * instead of read back entry by entry and packed a second time.
   */
  namePrefix?: string;
  /**
   * Share conversions with other stages through this pool (concurrent requests of `etch serve`): a layer
   * another stage is converting or holds is not converted again; the file lives in the pool's directory and
   * counts against this stage's `maxBytes` too.
   */
  pool?: StagePool;
  /**
   * Converted layers kept between runs: a layer found there (its CRC-32 checked) is linked into the stage
   * instead of downloaded and converted, with state `cached`; one converted here is added to it. A damaged
   * entry is removed and the layer converted from its blob.
   */
  cache?: ConvertedLayerCache;
  signal?: AbortSignal;
  /** Per layer while it is converted ahead: compressed bytes read, state `converting` (`cached` when restored). */
  onProgress?: (event: LayerProgress) => void;
  /**
   * Called once if a layer fails (corrupt blob, diffID, unsafe entry, download): the store would fail on it
   * anyway, so a caller can stop at once instead of after whatever streams first. Not called on abort.
   */
  onFailure?: (error: unknown) => void;
  logger?: Logger;
}

/** A layer converted ahead: its `diff/` entries in a tar file, and what converting it found out. */
export interface StagedLayer {
  chainId: string;
  file: string;
  converted: ConvertedLayer;
  /** Regular-file bytes among its entries, for requirements. */
  fileBytes: number;
  /** Bytes of the spooled file. */
  spooled: number;
}

interface PlannedLayer {
  chainId: string;
  diffId: string;
  layer: StoreLayer;
  image: number;
  index: number;
}

/** What one attempt at staging a layer came to: staged, abandoned for good, or to retry once space frees. */
type Attempt = StagedLayer | undefined | typeof RETRY;

interface Slot {
  state: 'pending' | 'running' | 'inline';
  /** The attempt in progress or finished (state `running`). */
  attempt?: Promise<Attempt>;
  /** The store is waiting for this layer: it must not be put back to wait for space. */
  wanted?: boolean;
}

const DEFAULT_MAX_BYTES = 4 * 1024 ** 3;
const BLOCK = 512;

/** Thrown inside a staging run to abandon a layer that outgrew the spool; never leaves the stager. */
class OverBudget extends Error {}

/** Writing the stage file failed (full disk, permissions): staging stops, the layers go inline. */
class StageUnwritable extends Error {}

const RETRY = Symbol('retry when staged layers have been written out');

const tarBytes = (header: EntryHeader) =>
  BLOCK * 3 + Math.ceil((header.size ?? 0) / BLOCK) * BLOCK + Buffer.byteLength(header.name);

/** The progress event of a layer taken from the cache of converted layers. */
function cachedEvent({ layer, image, index }: PlannedLayer): LayerProgress {
  return {
    phase: 'layer',
    image,
    layer: index,
    digest: layer.digest,
    bytes: layer.size,
    total: layer.size,
    state: 'cached',
  };
}

/** The header the converter produced, read back from the spool (only the fields it sets). */
function entryHeaderOf(header: TarHeader): EntryHeader {
  const entry: EntryHeader = {
    name: header.name,
    type: header.type,
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    mtime: header.mtime,
  };
  if (header.mtimeNanoseconds > 0) entry.mtimeNanoseconds = header.mtimeNanoseconds;
  if (header.type === 'file') entry.size = header.size;
  if (header.type === 'symlink' || header.type === 'link') entry.linkname = header.linkname;
  if (header.type === 'character-device' || header.type === 'block-device' || header.type === 'fifo')
    Object.assign(entry, { devmajor: header.devmajor, devminor: header.devminor });
  if (header.xattrs.size > 0) entry.xattrs = header.xattrs;
  return entry;
}

/**
 * Converts the distinct layers of `images` ahead of time, one after another in the order the store writes
 * them, into tar files in a bounded directory. Started while something else streams (the base image of a
 * `.etch`), it takes download, verification, decompression and conversion off the critical path: the store
 * then copies each staged layer out, or converts inline a layer that was not staged. Every check of the
 * inline path applies (blob digest and size, diffID, unsafe entries); a failure surfaces when the store
 * reaches that layer.
 */
export function stageLayers(images: readonly StoreImage[], options: StageOptions): LayerStage {
  return new LayerStage(images, options);
}

/** The running stager; see {@link stageLayers}. */
export class LayerStage {
  readonly root: string;
  /** See {@link StageOptions.namePrefix}; '' when none. */
  readonly namePrefix: string;
  private readonly plan: PlannedLayer[] = [];
  private readonly slots = new Map<string, Slot>();
  private readonly maxBytes: number;
  private readonly logger: Logger;
  private spooled = 0;
  private created = false;
  /** Settles once the directory is made (or could not be): a layer restored out of turn waits for it. */
  private dirCreated: Promise<void> = Promise.resolve();
  private wake: (() => void) | undefined;
  private settledNow: (() => void) | undefined;
  private readonly settledPromise: Promise<void>;
  private readonly running: Promise<void>;
  /** Aborted by the caller's signal or by close(), which must not wait for a long conversion to finish. */
  private readonly stopping = new AbortController();
  private readonly signal: AbortSignal;
  /** Layers this stage holds in its pool, released when written out or at close. */
  private readonly leases = new Map<StagedLayer, StageLease<StagedLayer>>();

  constructor(
    images: readonly StoreImage[],
    private readonly options: StageOptions,
  ) {
    this.root = (options.root ?? 'docker').replace(/^\/+|\/+$/g, '');
    this.namePrefix = (options.namePrefix ?? '').replace(/^\/+|\/+$/g, '');
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.logger = options.logger ?? silentLogger;
    this.signal = options.signal ? AbortSignal.any([options.signal, this.stopping.signal]) : this.stopping.signal;
    this.settledPromise = new Promise((resolve) => (this.settledNow = resolve));
    try {
      images.forEach((image, imageIndex) => {
        const { diffIds } = parseConfig(image, imageIndex);
        const chain = chainIds(diffIds);
        image.layers.forEach((layer, index) => {
          const chainId = chain[index] as string;
          if (this.slots.has(chainId)) return;
          this.slots.set(chainId, { state: 'pending' });
          this.plan.push({ chainId, diffId: diffIds[index] as string, layer, image: imageIndex, index });
        });
      });
    } catch {
      // A config the store will refuse: nothing is staged, and the store reports it with its own message.
      this.plan.length = 0;
      this.slots.clear();
    }
    this.running = this.run();
  }

  /** Resolves once every layer is staged or abandoned, or the stager waits for space (then the rest is inline). */
  settled(): Promise<void> {
    return this.settledPromise;
  }

  /**
   * The staged layer `chainId` (waiting for it if it is being converted), or undefined when it was not staged:
   * the caller converts it inline, and the stager will not touch it. Rejects with the layer's error.
   */
  async take(chainId: string): Promise<StagedLayer | undefined> {
    const slot = this.slots.get(chainId);
    if (slot === undefined) return undefined;
    if (slot.state === 'pending' && this.options.cache !== undefined && !this.signal.aborted) {
      // The store got here before the stager: a layer in the cache is still cheaper than converting it inline.
      const planned = this.plan.find((p) => p.chainId === chainId) as PlannedLayer;
      slot.state = 'running';
      slot.attempt = this.restoreOnly(planned);
    }
    if (slot.state === 'pending') slot.state = 'inline';
    if (slot.state === 'inline') return undefined;
    slot.wanted = true;
    try {
      const attempt = await slot.attempt;
      return attempt === RETRY ? undefined : attempt;
    } catch (err) {
      if (err instanceof StageUnwritable) return undefined;
      throw err;
    }
  }

  /**
   * What the layer with blob `digest` holds, when it was staged (for counting): its tar entries and
   * regular-file bytes. Meaningful once {@link settled} resolved; undefined for a layer left to inline.
   */
  async counts(digest: string): Promise<{ entries: number; bytes: number } | undefined> {
    const planned = this.plan.find((p) => p.layer.digest === digest);
    const slot = planned && this.slots.get(planned.chainId);
    const attempt =
      slot?.state === 'running' ? await (slot.attempt as Promise<Attempt>).catch(() => undefined) : undefined;
    return attempt && attempt !== RETRY ? { entries: attempt.converted.entries, bytes: attempt.fileBytes } : undefined;
  }

  /** The staged layer's entries, as the converter produced them (names relative to the partition). */
  async *entries(staged: StagedLayer): AsyncGenerator<StoreEntry> {
    const { signal } = this.options;
    const input = createReadStream(staged.file, { highWaterMark: 256 * 1024 });
    const inside = this.insideCheck(staged);
    const strip = this.namePrefix === '' ? 0 : this.namePrefix.length + 1;
    for await (const { header, body } of extractTar(input, signal ? { signal } : {})) {
      inside({ name: header.name, type: header.type, linkname: header.linkname });
      const entry = entryHeaderOf(header);
      entry.name = entry.name.slice(strip);
      if (header.type === 'link') entry.linkname = header.linkname.slice(strip);
      yield header.type === 'file' ? { header: entry, content: body } : { header: entry };
    }
  }

  /**
   * Appends the staged layer to `pack` byte for byte: the pack must give the store's entries this stage's
   * {@link namePrefix}. Each header is still read and kept inside the layer's own `diff/` (a stage file may
   * come from the cache of converted layers, a folder on disk). Chunks are read in buffers lent from `pool`
   * when given (for an output that hands them back, see `BufferPool`).
   * @throws EtchError `ETCH_UNSAFE_PATH` for an entry outside the layer, `ETCH_BAD_ARCHIVE` for a damaged file.
   */
  async appendTo(staged: StagedLayer, pack: TarPack, pool?: BufferPool): Promise<SplicedTar> {
    const { signal } = this.options;
    const input = pool
      ? readFileChunks(staged.file, pool, signal)
      : createReadStream(staged.file, { highWaterMark: 1024 * 1024 });
    try {
      return await spliceTar(pack, input, { check: this.insideCheck(staged), ...(signal ? { signal } : {}) });
    } catch (err) {
      if (isEtchError(err) && err.code !== 'ETCH_BAD_ARCHIVE') throw err;
      // Damage to a stage file (a cached one, most likely) or a failure to read it: name it and what to do.
      throw new EtchError(
        isEtchError(err) ? 'ETCH_BAD_ARCHIVE' : 'ETCH_IO',
        `The converted layer ${staged.file} could not be appended: ${(err as Error).message.replace(/\.?$/, '.')} Run \`etch cache clean\` and try again.`,
        { cause: err, details: { path: staged.file } },
      );
    }
  }

  /** Refuses an entry of a stage file that is not inside its layer's `diff/` (or links out of it). */
  private insideCheck(staged: StagedLayer): (entry: { name: string; type: string; linkname: string }) => void {
    const prefix = this.namePrefixOf(staged.chainId);
    const inside = (name: string) =>
      (name === prefix || name.startsWith(`${prefix}/`)) && !name.split('/').includes('..');
    return ({ name, type, linkname }) => {
      if (inside(name) && (type !== 'link' || inside(linkname))) return;
      throw new EtchError(
        'ETCH_UNSAFE_PATH',
        `The converted layer ${staged.file} holds ${JSON.stringify(name)}, outside its ${prefix}; it is not etch's. Run \`etch cache clean\`.`,
        { details: { entryName: name, path: staged.file } },
      );
    };
  }

  /** Removes a staged layer once written, making room for the next ones. */
  async release(staged: StagedLayer): Promise<void> {
    const lease = this.leases.get(staged);
    this.leases.delete(staged);
    if (lease !== undefined) await lease.release();
    else await rm(staged.file, { force: true });
    this.spooled -= staged.spooled;
    this.wake?.();
  }

  /** Stops staging, waits for the layer in progress, and removes the directory. */
  async close(): Promise<void> {
    for (const slot of this.slots.values()) if (slot.state === 'pending') slot.state = 'inline';
    this.stopping.abort();
    this.wake?.();
    await this.running;
    await Promise.allSettled([...this.slots.values()].map(async (s) => s.attempt));
    const leases = [...this.leases.values()];
    this.leases.clear();
    await Promise.all(leases.map(async (lease) => lease.release()));
    if (this.created) await rm(this.options.dir, { recursive: true, force: true });
  }

  private async run(): Promise<void> {
    try {
      this.dirCreated = (async () => {
        await mkdir(dirname(this.options.dir), { recursive: true });
        // Exclusively: close() removes the directory, so it must be this stage's own.
        await mkdir(this.options.dir);
        this.created = true;
      })();
      await this.dirCreated;
      for (const planned of this.plan) {
        const slot = this.slots.get(planned.chainId) as Slot;
        for (;;) {
          while (slot.state === 'pending' && this.spooled >= this.maxBytes) await this.roomFreed();
          if (slot.state !== 'pending' || this.signal.aborted) break;
          slot.state = 'running';
          slot.attempt = this.stage(planned);
          const attempt = await slot.attempt.catch((err: unknown) => {
            if (!(err instanceof StageUnwritable) && !this.signal.aborted) this.options.onFailure?.(err);
            return err as Error;
          });
          if (attempt instanceof Error) return; // staging stops; a layer fault also surfaces when the store takes it
          if (attempt !== RETRY || slot.wanted) break;
          // It did not fit beside layers staged before it: once the store has written some out, try again.
          slot.state = 'pending';
          slot.attempt = undefined;
          await this.roomFreed();
        }
      }
    } catch (err) {
      this.logger.debug('layer staging stopped', { error: (err as Error).message });
    } finally {
      for (const slot of this.slots.values()) if (slot.state === 'pending') slot.state = 'inline';
      this.settledNow?.();
    }
  }

  /** Waits for {@link release} (or close); until then nothing more can be staged, which counts as settled. */
  private async roomFreed(): Promise<void> {
    this.settledNow?.();
    await new Promise<void>((resolve) => (this.wake = resolve));
  }

  /** Where the entries of the layer `chainId` live in the partition: its `diff/`. */
  private diffPrefixOf(chainId: string): string {
    return `${this.root}/${paths.diff(cacheIdFor(chainId))}`;
  }

  /** The names of the layer `chainId` in its stage file: its `diff/` after {@link namePrefix}. */
  private namePrefixOf(chainId: string): string {
    const diff = this.diffPrefixOf(chainId);
    return this.namePrefix === '' ? diff : `${this.namePrefix}/${diff}`;
  }

  /**
   * The layer's conversion from the cache of converted layers into `file`, or undefined when it holds none (or
   * a damaged one, which it reports). A cache that cannot be read is warned about and counts as a miss: the
   * layer is converted from its blob. Rejects only when `signal` is aborted.
   */
  private async fromCache(
    cache: ConvertedLayerCache,
    planned: PlannedLayer,
    key: ConvertedLayerKey,
    file: string,
    signal: AbortSignal,
  ): Promise<CachedConversion | undefined> {
    try {
      return await cache.restore(key, file, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      this.logger.warn('cannot read the cache of converted layers; converting the layer', {
        digest: planned.layer.digest,
        error: (err as Error).message,
      });
      return undefined;
    }
  }

  /** The layer from the cache of converted layers into this stage's directory, or undefined (then inline). */
  private async restoreOnly(planned: PlannedLayer): Promise<Attempt> {
    const { cache } = this.options;
    if (cache === undefined) return undefined;
    const file = join(this.options.dir, `${planned.chainId.replace(':', '-')}.tar`);
    await ignoreRejection(this.dirCreated, 'a directory that cannot be made shows in this.created; run() reports it');
    if (!this.created) return undefined;
    const key = { diffId: planned.diffId, diffPrefix: this.namePrefixOf(planned.chainId) };
    let cached: CachedConversion | undefined;
    try {
      cached = await this.fromCache(cache, planned, key, file, this.signal);
    } catch (err) {
      // Aborted (the run, or close()): the store, if it still runs, converts the layer inline and meets the abort.
      if (this.signal.aborted) return undefined;
      throw err;
    }
    if (cached === undefined) return undefined;
    this.options.onProgress?.(cachedEvent(planned));
    this.spooled += cached.spooled;
    return { chainId: planned.chainId, file, ...cached };
  }

  private async stage(planned: PlannedLayer): Promise<Attempt> {
    const { pool } = this.options;
    const diffPrefix = this.diffPrefixOf(planned.chainId);
    try {
      let staged: StagedLayer;
      if (pool !== undefined) {
        // Everything that changes the converted bytes: the blob and the path prefix of its entries.
        const lease = await pool.acquire(
          `${planned.layer.digest}\0${this.namePrefixOf(planned.chainId)}`,
          async (file, signal) => this.convert(planned, diffPrefix, file, signal),
          this.signal,
        );
        staged = { ...lease.value, file: lease.file };
        this.leases.set(staged, lease);
      } else {
        const file = join(this.options.dir, `${planned.chainId.replace(':', '-')}.tar`);
        staged = await this.convert(planned, diffPrefix, file, this.signal);
      }
      this.spooled += staged.spooled;
      this.logger.debug('layer staged', { digest: planned.layer.digest, bytes: staged.spooled });
      return staged;
    } catch (err) {
      if (!(err instanceof OverBudget)) throw err;
      // Beside other staged layers it may fit later; alone it never will.
      if (this.spooled > 0) return RETRY;
      this.logger.debug('layer does not fit the staging directory; it is converted when due', {
        digest: planned.layer.digest,
      });
      return undefined;
    }
  }

  /**
   * Puts one layer into `file`: from the cache of converted layers when it holds it, else converted from its
   * blob (and then kept in that cache). On failure the file is removed and the error thrown.
   */
  private async convert(
    planned: PlannedLayer,
    diffPrefix: string,
    file: string,
    signal: AbortSignal,
  ): Promise<StagedLayer> {
    const { cache } = this.options;
    if (cache === undefined) return this.convertBlob(planned, diffPrefix, file, signal);
    const key = { diffId: planned.diffId, diffPrefix: this.namePrefixOf(planned.chainId) };
    const { chainId, layer } = planned;
    const cached = await this.fromCache(cache, planned, key, file, signal);
    if (cached !== undefined) {
      if (this.spooled + cached.spooled > this.maxBytes) {
        await rm(file, { force: true });
        throw new OverBudget();
      }
      this.options.onProgress?.(cachedEvent(planned));
      this.logger.debug('layer restored from the cache of converted layers', { digest: layer.digest });
      return { chainId, file, ...cached };
    }
    const checksum = { crc32: 0, bytes: 0 };
    const staged = await this.convertBlob(planned, diffPrefix, file, signal, checksum);
    await cache
      .store(key, file, staged, { bytes: checksum.bytes, crc32: crc32Hex(checksum.crc32) }, signal)
      .catch((err: unknown) => {
        // The layer is staged either way; an abort is the user's doing, not something to warn about.
        if (signal.aborted) return;
        this.logger.warn('cannot keep the converted layer in the cache', {
          digest: layer.digest,
          error: (err as Error).message,
        });
      });
    return staged;
  }

  /**
   * Converts one layer from its blob into `file`, adding the file's bytes to `checksum` when given; on failure
   * the file is removed and the error thrown.
   */
  private async convertBlob(
    { chainId, layer, image, index }: PlannedLayer,
    diffPrefix: string,
    file: string,
    signal: AbortSignal,
    checksum?: { crc32: number; bytes: number },
  ): Promise<StagedLayer> {
    const onBytes = (bytes: number) =>
      this.options.onProgress?.({
        phase: 'layer',
        image,
        layer: index,
        digest: layer.digest,
        bytes,
        total: layer.size,
        state: 'converting',
      });
    const pack = createTarPack();
    // The cache checks what it reads back against this CRC-32, taken on the way out instead of by a second read.
    const out = new StageFileSink(file, checksum);
    // A failure of the file itself (full disk, permissions), told apart from the teardown below.
    let fileError: unknown;
    let discarding = false;
    out.on('error', (err) => {
      if (!discarding) fileError ??= err;
    });
    const writing = pipeline([pack as unknown as NodeJS.ReadableStream, out], { signal });
    ignoreRejection(writing, 'awaited below; its failure is reported through fileError or the conversion');
    let converted: ConvertedLayer | undefined;
    let spooled = BLOCK * 2;
    let fileBytes = 0;
    try {
      const write = promisePacker(pack, this.namePrefix || undefined, { signal });
      for await (const { header, content } of convertBlob(layer, diffPrefix, onBytes, (r) => (converted = r), signal)) {
        spooled += tarBytes(header);
        if (this.spooled + spooled > this.maxBytes) throw new OverBudget();
        if (header.type === 'file') fileBytes += header.size ?? 0;
        await write(header, content);
      }
      await whenPackerIdle(pack);
      pack.finalize();
      await writing;
    } catch (err) {
      discarding = true;
      const unwritable = fileError;
      if (!pack.destroying) pack.destroy();
      await ignoreRejection(writing, 'the pack was destroyed on purpose; the conversion error is rethrown');
      await rm(file, { force: true });
      if (err instanceof OverBudget) throw err;
      if (unwritable !== undefined && !signal.aborted) {
        // The stage's own disk failed, not the layer: the store converts this layer and the rest inline.
        this.logger.debug('cannot write the staging directory; layers are converted when due', {
          error: (unwritable as Error).message,
        });
        throw new StageUnwritable((unwritable as Error).message, { cause: unwritable });
      }
      throw err;
    }
    return { chainId, file, converted: converted as ConvertedLayer, fileBytes, spooled };
  }
}
