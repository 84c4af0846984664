import { DEFAULT_ENTRY_TIME, EtchError, silentLogger, throwIfAborted, type Logger } from '@etch/format';
import { parseConfig } from './image-config.js';
import { assertDigest, cacheIdFor, chainIds, hexOf, linkIdFor } from './ids.js';
import type { ConvertedLayer, StoreEntry } from './layer-converter.js';
import { convertBlob, unreadable } from './layer-source.js';
import type { LayerStage } from './layer-stager.js';
import type { SplicedTar, TarPack } from '@etch/tar';
import type { BufferPool } from '@etch/disk';
import { DIR_MODES, paths } from './layout.js';
import { mergeRepositories, serializeRepositories, type ImageName, type RepositoriesJson } from './repositories.js';

/** A layer to preload: its compressed blob and how to open it. */
export interface StoreLayer {
  /** Digest of the compressed blob (the manifest's layer digest). */
  digest: string;
  /** Size of the compressed blob, as the manifest declares it; checked against the bytes read. */
  size: number;
  /**
   * Opens the compressed blob. The bytes are hashed here and must match `digest` (unless `verified`). Honour
   * the signal: a stage's `close()` waits for the layer it is converting.
   */
  open(signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /**
   * The blob `open` gives is checked against `digest` already: its stream fails before its end unless its
   * bytes hash to it (or this run checked them when it stored them). The store then counts the bytes against
   * `size` without hashing them a second time. Default false.
   */
  verified?: boolean;
}

/** An image to preload, resolved for one platform. */
export interface StoreImage {
  /** The config blob exactly as the registry served it (its sha256 is the image ID). */
  config: Buffer;
  /** The manifest's config digest; checked against the bytes when given. */
  configDigest?: string;
  /** Layers in manifest order (bottom first); their uncompressed digests must be the config's diff_ids. */
  layers: readonly StoreLayer[];
  /** The names to record in repositories.json (familiar form). */
  names: readonly ImageName[];
  /** Full repository name recorded as the layers' source (`docker.io/library/alpine`). */
  sourceRepository: string;
}

/** Progress of one layer. */
export interface LayerProgress {
  phase: 'layer';
  image: number;
  layer: number;
  digest: string;
  /** Compressed bytes read so far. */
  bytes: number;
  total: number;
  /**
   * `converting`: ahead of time, into a {@link LayerStage}; `cached`: taken from a cache of converted layers
   * instead (no download, no conversion); `writing`: into the store.
   */
  state: 'converting' | 'cached' | 'writing' | 'done' | 'shared';
}

/** Options for {@link dockerStoreEntries}. */
export interface DockerStoreOptions {
  /** The data root inside the partition (`/var/lib/docker` is `<data partition>/docker` on balenaOS). */
  root?: string;
  /** The base OS's own repositories.json: merged, never dropped. */
  baseRepositories?: RepositoriesJson;
  /**
   * Layers converted ahead of time by {@link stageLayers} for these same images: a staged layer is copied out
   * of it, the others are converted as they come. The caller closes it.
   */
  stage?: LayerStage;
  /**
   * The pack the caller writes these entries to, and the `prefix` it gives their names: when it is the
   * stage's `namePrefix`, a staged layer is appended to the pack as it is ({@link LayerStage.appendTo})
   * instead of yielded entry by entry, and `onAppended` reports what it added (those entries are not yielded).
   * The store then writes to the pack itself: the caller must queue each yielded entry on the pack before it
   * asks for the next one (as a `for await` loop that awaits each write does). `bufferPool` lends the read
   * buffers, for an output that hands them back.
   */
  appendTo?: { pack: TarPack; prefix: string; onAppended?: (added: SplicedTar) => void; bufferPool?: BufferPool };
  /**
   * The mtime of the store's own files and directories (layer directories, layerdb, repositories.json…),
   * fixed so the same images give the same entries. Default `DEFAULT_ENTRY_TIME` from `@etch/format`.
   * Layer contents keep their own times.
   */
  mtime?: Date;
  signal?: AbortSignal;
  onProgress?: (event: LayerProgress) => void;
  logger?: Logger;
}

/** What was written, for summaries. */
export interface StoredImage {
  imageId: string;
  names: readonly ImageName[];
  layers: { chainId: string; diffId: string; cacheId: string; size: number }[];
  /** Σ layer sizes, what `docker images` shows. */
  size: number;
}

/**
 * Yields, in order, every entry a moby/balena-engine overlay2 data root needs to hold `images` as if
 * `docker pull` had stored them: layer contents and metadata, distribution metadata, image configs, and a
 * merged repositories.json (last, as the engine's commit point). Names are relative to the partition root.
 *
 * Each layer is streamed once (layers shared between images are written once), decompressed by magic
 * bytes, and verified twice: the compressed bytes against the manifest digest, the tar against the
 * config's diffID. A mismatch throws `ETCH_DIGEST_MISMATCH` before the store is complete.
 */
export async function* dockerStoreEntries(
  images: readonly StoreImage[],
  options: DockerStoreOptions = {},
): AsyncGenerator<StoreEntry, StoredImage[], undefined> {
  const { signal } = options;
  const logger = options.logger ?? silentLogger;
  const root = (options.root ?? 'docker').replace(/^\/+|\/+$/g, '');
  const at = (path: string) => (path === '' ? root : `${root}/${path}`);
  const now = options.mtime ?? DEFAULT_ENTRY_TIME;
  const parsed = images.map((image, index) => parseConfig(image, index));

  for (const [path, mode] of DIR_MODES) yield { header: { name: at(path), type: 'directory', mode, mtime: now } };

  const chains = parsed.map((p) => chainIds(p.diffIds));
  const progressOf =
    (image: number, index: number, layer: StoreLayer) => (bytes: number, state: LayerProgress['state']) =>
      options.onProgress?.({
        phase: 'layer',
        image,
        layer: index,
        digest: layer.digest,
        bytes,
        total: layer.size,
        state,
      });
  if (options.stage !== undefined && options.stage.root !== root) {
    throw new EtchError(
      'ETCH_USAGE',
      `The layers were staged for the data root "${options.stage.root}", not "${root}".`,
    );
  }
  const written = new Map<string, { cacheId: string; linkId: string; lower: string; size: number; diffId: string }>();
  const committed = new Set<string>();
  const diffIdByDigest = new Map<string, string>();
  const sources = new Map<string, Map<string, string>>(); // diffId → blob digest → source repository
  const stored: StoredImage[] = [];

  for (const [imageIndex, image] of images.entries()) {
    const { imageId, diffIds } = parsed[imageIndex] as { imageId: string; diffIds: string[] };
    const chain = chains[imageIndex] as string[];
    const layers: StoredImage['layers'] = [];
    for (const [layerIndex, layer] of image.layers.entries()) {
      throwIfAborted(signal);
      assertDigest(layer.digest, 'a layer digest');
      const chainId = chain[layerIndex] as string;
      const diffId = diffIds[layerIndex] as string;
      diffIdByDigest.set(layer.digest, diffId);
      const bySource = sources.get(diffId) ?? new Map<string, string>();
      bySource.set(`${layer.digest} ${image.sourceRepository}`, image.sourceRepository);
      sources.set(diffId, bySource);
      const progress = progressOf(imageIndex, layerIndex, layer);

      const existing = written.get(chainId);
      if (existing !== undefined) {
        progress(layer.size, 'shared');
        layers.push({ chainId, diffId, cacheId: existing.cacheId, size: existing.size });
        continue;
      }
      const cacheId = cacheIdFor(chainId);
      const linkId = linkIdFor(cacheId);
      const parent = layerIndex === 0 ? undefined : written.get(chain[layerIndex - 1] as string);
      const lower =
        parent === undefined ? '' : parent.lower === '' ? `l/${parent.linkId}` : `l/${parent.linkId}:${parent.lower}`;
      logger.debug('writing layer', { digest: layer.digest, chainId, cacheId });

      yield { header: { name: at(paths.layerDir(cacheId)), type: 'directory', mode: 0o710, mtime: now } };
      yield { header: { name: at(paths.diff(cacheId)), type: 'directory', mode: 0o755, mtime: now } };

      let result: ConvertedLayer | undefined;
      const staged = await options.stage?.take(chainId).catch((err: unknown) => {
        throw unreadable(layer, err);
      });
      if (staged !== undefined) {
        // Checked before a byte of it is written, unlike a layer converted while it streams.
        assertDiffId(layer, staged.converted, diffId);
        progress(layer.size, 'writing');
        try {
          const stage = options.stage as LayerStage;
          const { appendTo } = options;
          if (appendTo !== undefined && stage.namePrefix !== '' && trimSlashes(appendTo.prefix) === stage.namePrefix) {
            const added = await stage.appendTo(staged, appendTo.pack, appendTo.bufferPool);
            appendTo.onAppended?.(added);
          } else {
            yield* stage.entries(staged);
          }
        } finally {
          await (options.stage as LayerStage).release(staged);
        }
        result = staged.converted;
      } else {
        yield* convertBlob(
          layer,
          at(paths.diff(cacheId)),
          (n) => progress(n, 'writing'),
          (r) => (result = r),
          signal,
        );
      }
      const converted = result as ConvertedLayer;
      assertDiffId(layer, converted, diffId);

      const file = (name: string, content: string | Buffer, mode = 0o644) => ({
        header: { name: at(name), type: 'file' as const, mode, mtime: now },
        content,
      });
      yield file(`${paths.layerDir(cacheId)}/link`, linkId);
      if (parent !== undefined) {
        yield file(`${paths.layerDir(cacheId)}/lower`, lower);
        yield { header: { name: at(`${paths.layerDir(cacheId)}/work`), type: 'directory', mode: 0o700, mtime: now } };
        if (!committed.has(parent.cacheId)) {
          committed.add(parent.cacheId);
          yield file(`${paths.layerDir(parent.cacheId)}/committed`, '', 0o600);
        }
      }
      yield {
        header: {
          name: at(paths.link(linkId)),
          type: 'symlink',
          linkname: `../${cacheId}/diff`,
          mode: 0o777,
          mtime: now,
        },
      };

      const db = paths.layerdb(hexOf(chainId));
      yield { header: { name: at(db), type: 'directory', mode: 0o700, mtime: now } };
      yield file(`${db}/diff`, diffId);
      yield file(`${db}/size`, String(converted.size)); // no trailing newline: the engine's ParseInt rejects it
      yield file(`${db}/cache-id`, cacheId);
      if (layerIndex > 0) yield file(`${db}/parent`, chain[layerIndex - 1] as string);
      yield file(`${db}/tar-split.json.gz`, converted.tarSplit);

      written.set(chainId, { cacheId, linkId, lower, size: converted.size, diffId });
      layers.push({ chainId, diffId, cacheId, size: converted.size });
      progress(layer.size, 'done');
    }
    stored.push({ imageId, names: image.names, layers, size: layers.reduce((sum, l) => sum + l.size, 0) });
  }

  const file = (name: string, content: string | Buffer, mode = 0o644) => ({
    header: { name: at(name), type: 'file' as const, mode, mtime: now },
    content,
  });
  for (const [digest, diffId] of diffIdByDigest) yield file(paths.diffIdByDigest(hexOf(digest)), diffId);
  for (const [diffId, bySource] of sources) {
    const metadata = [...bySource.entries()].map(([key, source]) => ({
      Digest: key.split(' ')[0],
      SourceRepository: source,
      HMAC: '',
    }));
    yield file(paths.v2Metadata(hexOf(diffId)), JSON.stringify(metadata));
  }
  for (const [index, image] of images.entries()) {
    yield file(paths.imageConfig(hexOf((parsed[index] as { imageId: string }).imageId)), image.config, 0o600);
  }
  const repositories = mergeRepositories(
    options.baseRepositories,
    stored.flatMap((s) => s.names.map((name) => ({ name, imageId: s.imageId }))),
  );
  yield file(paths.repositories, serializeRepositories(repositories), 0o600);
  return stored;
}

const trimSlashes = (path: string) => path.replace(/^\/+|\/+$/g, '');

function assertDiffId(layer: StoreLayer, converted: ConvertedLayer, diffId: string): void {
  if (converted.diffId === diffId) return;
  throw new EtchError(
    'ETCH_DIGEST_MISMATCH',
    `Layer ${layer.digest} uncompresses to ${converted.diffId}, but the image config expects ${diffId}. The image is inconsistent; rebuild or re-push it.`,
    {
      details: { digest: diffId },
    },
  );
}
