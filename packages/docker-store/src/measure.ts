import { throwIfAborted } from '@etch/format';
import { decompressAuto, extractTar } from '@etch/tar';
import type { LayerStage } from './layer-stager.js';
import type { StoreImage } from './store.js';

/** What the engine store of some images adds to a partition: an upper estimate, for `requirements.json`. */
export interface StoreMeasure {
  /** Bytes of regular-file content. */
  bytes: number;
  /** Entries (inodes). */
  entries: number;
}

// Per layer the store adds its layerdb and overlay2 metadata (about a dozen entries, a few hundred bytes
// each, plus a tar-split of roughly this many bytes per layer entry); per image a config and distribution
// files; once, the store's skeleton. Generous on purpose: a flasher grows by this before injecting.
const PER_LAYER = { entries: 16, bytes: 4096 };
const TAR_SPLIT_BYTES_PER_ENTRY = 160;
const PER_IMAGE = { entries: 8, bytes: 4096 };
const SKELETON = { entries: 32, bytes: 65_536 };

/** Options for {@link measureStore}. */
export interface MeasureStoreOptions {
  signal?: AbortSignal;
  /** Layers staged for these images: their counts come from the staging, only the others are read. */
  stage?: LayerStage;
}

/**
 * Counts what each distinct layer's `diff/` will hold (from its staging, or by reading it once more:
 * decompressing it, not converting it), then adds the store's own files. Meant to run while the base image
 * streams, with layers already local.
 */
export async function measureStore(
  images: readonly StoreImage[],
  options: MeasureStoreOptions = {},
): Promise<StoreMeasure> {
  const total: StoreMeasure = { bytes: SKELETON.bytes, entries: SKELETON.entries };
  const seen = new Set<string>();
  await options.stage?.settled();
  for (const image of images) {
    total.bytes += image.config.length + PER_IMAGE.bytes;
    total.entries += PER_IMAGE.entries;
    for (const layer of image.layers) {
      if (seen.has(layer.digest)) continue;
      seen.add(layer.digest);
      throwIfAborted(options.signal);
      const staged = await options.stage?.counts(layer.digest);
      if (staged !== undefined) {
        total.entries += staged.entries + PER_LAYER.entries;
        total.bytes += staged.bytes + PER_LAYER.bytes + staged.entries * TAR_SPLIT_BYTES_PER_ENTRY;
        continue;
      }
      const { stream } = await decompressAuto(await layer.open(options.signal), options.signal);
      let entries = 0;
      for await (const { header } of extractTar(stream, options.signal ? { signal: options.signal } : {})) {
        entries += 1;
        if (header.type === 'file' || header.type === 'contiguous-file') total.bytes += header.size;
      }
      total.entries += entries + PER_LAYER.entries;
      total.bytes += PER_LAYER.bytes + entries * TAR_SPLIT_BYTES_PER_ENTRY;
    }
  }
  return total;
}
