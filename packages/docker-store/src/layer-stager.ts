import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack } from 'tar-stream';
import { silentLogger, type Logger } from '@etch/format';
import { extractTar, promisePacker, whenPackerIdle, type EntryHeader, type TarHeader } from '@etch/tar';
import { parseConfig } from './image-config.js';
import { cacheIdFor, chainIds } from './ids.js';
import type { ConvertedLayer, StoreEntry } from './layer-converter.js';
import { convertBlob } from './layer-source.js';
import { paths } from './layout.js';
import type { LayerProgress, StoreImage, StoreLayer } from './store.js';

/** Options for {@link stageLayers}. */
export interface StageOptions {
  /** A directory for the converted layers; created here, removed by {@link LayerStage.close}. */
  dir: string;
  /**
   * Most bytes the directory holds at once (default 4 GiB). A layer that would not fit is abandoned and
   * converted when it is due instead; space frees as staged layers are written out.
   */
  maxBytes?: number;
  /** The engine's data root inside the partition; must be the one the store is written with. */
  root?: string;
  signal?: AbortSignal;
  /** Per layer while it is converted ahead: compressed bytes read, state `converting`. */
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
  layer: StoreLayer;
  image: number;
  index: number;
}

interface Slot {
  state: 'pending' | 'running' | 'inline';
  done?: Promise<StagedLayer | undefined>;
}

const DEFAULT_MAX_BYTES = 4 * 1024 ** 3;
const BLOCK = 512;

/** Thrown inside a staging run to abandon a layer that outgrew the spool; never leaves the stager. */
class OverBudget extends Error {}

const tarBytes = (header: EntryHeader) => BLOCK * 3 + Math.ceil((header.size ?? 0) / BLOCK) * BLOCK + Buffer.byteLength(header.name);

/** The header the converter produced, read back from the spool (only the fields it sets). */
function entryHeaderOf(header: TarHeader): EntryHeader {
  const entry: EntryHeader = { name: header.name, type: header.type, mode: header.mode & 0o7777, uid: header.uid, gid: header.gid, mtime: header.mtime };
  if (header.type === 'file') entry.size = header.size;
  if (header.type === 'symlink' || header.type === 'link') entry.linkname = header.linkname;
  if (header.type === 'character-device') Object.assign(entry, { devmajor: header.devmajor, devminor: header.devminor });
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
  private readonly plan: PlannedLayer[] = [];
  private readonly slots = new Map<string, Slot>();
  private readonly maxBytes: number;
  private readonly logger: Logger;
  private spooled = 0;
  private wake: (() => void) | undefined;
  private settledNow: (() => void) | undefined;
  private readonly settledPromise: Promise<void>;
  private readonly running: Promise<void>;
  /** Aborted by the caller's signal or by close(), which must not wait for a long conversion to finish. */
  private readonly stopping = new AbortController();
  private readonly signal: AbortSignal;

  constructor(
    images: readonly StoreImage[],
    private readonly options: StageOptions,
  ) {
    this.root = (options.root ?? 'docker').replace(/^\/+|\/+$/g, '');
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.logger = options.logger ?? silentLogger;
    this.signal = options.signal ? AbortSignal.any([options.signal, this.stopping.signal]) : this.stopping.signal;
    this.settledPromise = new Promise((resolve) => (this.settledNow = resolve));
    try {
      images.forEach((image, imageIndex) => {
        const chain = chainIds(parseConfig(image, imageIndex).diffIds);
        image.layers.forEach((layer, index) => {
          const chainId = chain[index] as string;
          if (this.slots.has(chainId)) return;
          this.slots.set(chainId, { state: 'pending' });
          this.plan.push({ chainId, layer, image: imageIndex, index });
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
    if (slot.state === 'pending') slot.state = 'inline';
    if (slot.state === 'inline') return undefined;
    return slot.done;
  }

  /**
   * What the layer with blob `digest` holds, when it was staged (for counting): its tar entries and
   * regular-file bytes. Meaningful once {@link settled} resolved; undefined for a layer left to inline.
   */
  async counts(digest: string): Promise<{ entries: number; bytes: number } | undefined> {
    const planned = this.plan.find((p) => p.layer.digest === digest);
    const slot = planned && this.slots.get(planned.chainId);
    const staged = slot?.state === 'running' ? await (slot.done as Promise<StagedLayer | undefined>).catch(() => undefined) : undefined;
    return staged && { entries: staged.converted.entries, bytes: staged.fileBytes };
  }

  /** The staged layer's entries, as the converter produced them. */
  async *entries(staged: StagedLayer): AsyncGenerator<StoreEntry> {
    const { signal } = this.options;
    const input = createReadStream(staged.file, { highWaterMark: 1024 * 1024 });
    for await (const { header, body } of extractTar(input, signal ? { signal } : {})) {
      yield header.type === 'file' ? { header: entryHeaderOf(header), content: body } : { header: entryHeaderOf(header) };
    }
  }

  /** Removes a staged layer once written, making room for the next ones. */
  async release(staged: StagedLayer): Promise<void> {
    await rm(staged.file, { force: true });
    this.spooled -= staged.spooled;
    this.wake?.();
  }

  /** Stops staging, waits for the layer in progress, and removes the directory. */
  async close(): Promise<void> {
    for (const slot of this.slots.values()) if (slot.state === 'pending') slot.state = 'inline';
    this.stopping.abort();
    this.wake?.();
    await this.running;
    await Promise.allSettled([...this.slots.values()].map((s) => s.done));
    await rm(this.options.dir, { recursive: true, force: true });
  }

  private async run(): Promise<void> {
    try {
      await mkdir(this.options.dir, { recursive: true });
      for (const planned of this.plan) {
        const slot = this.slots.get(planned.chainId) as Slot;
        while (slot.state === 'pending' && this.spooled >= this.maxBytes) {
          this.settledNow?.();
          await new Promise<void>((resolve) => (this.wake = resolve));
        }
        if (slot.state !== 'pending' || this.signal.aborted) continue;
        slot.state = 'running';
        slot.done = this.stage(planned);
        // A failure also surfaces when the store takes this layer; staging stops here, the rest goes inline.
        const staged = await slot.done.catch((err: unknown) => {
          if (!this.signal.aborted) this.options.onFailure?.(err);
          return null;
        });
        if (staged === null) break;
      }
    } catch (err) {
      this.logger.debug('layer staging stopped', { error: (err as Error).message });
    } finally {
      for (const slot of this.slots.values()) if (slot.state === 'pending') slot.state = 'inline';
      this.settledNow?.();
    }
  }

  private async stage({ chainId, layer, image, index }: PlannedLayer): Promise<StagedLayer | undefined> {
    const { signal } = this;
    const file = join(this.options.dir, `${chainId.replace(':', '-')}.tar`);
    const cacheId = cacheIdFor(chainId);
    const diffPrefix = `${this.root}/${paths.diff(cacheId)}`;
    const onBytes = (bytes: number) => this.options.onProgress?.({ phase: 'layer', image, layer: index, digest: layer.digest, bytes, total: layer.size, state: 'converting' });
    const pack = tarPack();
    const writing = pipeline(pack as unknown as NodeJS.ReadableStream, createWriteStream(file), { signal });
    writing.catch(() => {});
    let converted: ConvertedLayer | undefined;
    let spooled = BLOCK * 2;
    let fileBytes = 0;
    try {
      const write = promisePacker(pack, undefined, { signal });
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
      if (!pack.destroying) pack.destroy();
      await writing.catch(() => {});
      await rm(file, { force: true });
      if (err instanceof OverBudget) {
        this.logger.debug('layer does not fit the staging directory; it is converted when due', { digest: layer.digest });
        return undefined;
      }
      throw err;
    }
    this.spooled += spooled;
    this.logger.debug('layer staged', { digest: layer.digest, bytes: spooled });
    return { chainId, file, converted: converted as ConvertedLayer, fileBytes, spooled };
  }
}
