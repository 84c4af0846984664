import { silentLogger, throwIfAborted, untilAborted, type Logger, ignoreRejection } from '@etch/format';
import type { StoreImage } from './store.js';
import {
  RegistryClient,
  formatPlatform,
  hostPlatform,
  openImageSource,
  toPlatform,
  type ImageSource,
  type Platform,
  type ResolvedImage,
} from '@etch/registry';

/** An image resolved for the device and ready for the engine store, with what the summary shows. */
export interface PreloadImage {
  /** What the caller asked for (`alpine:3.20`, `oci:./app:v1`). */
  spec: string;
  resolved: ResolvedImage;
  store: StoreImage;
}

/** Options for {@link resolvePreloadImages}. */
export interface ResolvePreloadOptions {
  /** The device's platform. Required: a preload for the build host's platform is almost never what is wanted. */
  platform: Platform | string;
  /** The registry client (credentials, insecure registries, retries) used for registry references. */
  client: RegistryClient;
  signal?: AbortSignal;
  logger?: Logger;
  /**
   * Download layers into the client's cache as soon as each image is resolved, this many at a time (default 3;
   * 0 turns it off). Needs a client with a cache; without one layers stream straight from the registry.
   */
  prefetch?: number;
  onPrefetchProgress?: (event: PrefetchProgress) => void;
}

/** Progress of a layer downloaded ahead of time into the cache. */
export interface PrefetchProgress {
  phase: 'download';
  digest: string;
  bytes: number;
  total: number;
}

/**
 * Downloads layers into the registry client's cache ahead of the engine store, a few at a time, while the
 * base image streams. A layer's `open` waits for its own download and then reads it from disk, so each blob
 * is fetched once, however many images share it.
 */
export class LayerPrefetcher {
  private readonly downloads = new Map<string, Promise<'cached' | 'downloaded'>>();
  private readonly queue: (() => Promise<void>)[] = [];
  private running = 0;

  constructor(
    private readonly concurrency: number,
    private readonly signal?: AbortSignal,
    private readonly onProgress?: (event: PrefetchProgress) => void,
  ) {}

  /** Queues every layer of `layers` not queued yet. */
  enqueue(source: ImageSource, layers: ResolvedImage['layers']): void {
    const prefetch = source.prefetch?.bind(source);
    if (prefetch === undefined) return;
    for (const layer of layers) {
      if (this.downloads.has(layer.digest)) continue;
      const done = new Promise<'cached' | 'downloaded'>((resolve, reject) => {
        this.queue.push(() =>
          prefetch(layer, {
            ...(this.signal ? { signal: this.signal } : {}),
            ...(this.onProgress ? { onProgress: (p) => this.onProgress?.({ phase: 'download', ...p }) } : {}),
          }).then(resolve, reject),
        );
      });
      // A failed download surfaces when its layer is opened; until then it must not count as unhandled.
      ignoreRejection(done, 'a failed download surfaces when its layer is opened');
      this.downloads.set(layer.digest, done);
    }
    this.pump();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const next = this.queue.shift() as () => Promise<void>;
      this.running += 1;
      void next().finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  }

  /** Resolves once the layer is in the cache, saying whether this run downloaded (and verified) it; undefined when never queued. */
  ready(digest: string): Promise<'cached' | 'downloaded' | undefined> {
    return this.downloads.get(digest) ?? Promise.resolve(undefined);
  }
}

function storeImageOf(source: ImageSource, image: ResolvedImage, prefetcher?: LayerPrefetcher): StoreImage {
  return {
    config: image.configBytes,
    configDigest: image.config.digest,
    layers: image.layers.map((layer) => ({
      digest: layer.digest,
      size: layer.size,
      open: async (signal?: AbortSignal) => {
        // A blob this run downloaded was verified on the way in: reading it back need not hash it again. One
        // cached by an earlier run is checked as it is read (a damaged entry is then removed, so the next run
        // downloads it again).
        // The download is shared and may be queued behind others: a reader that gives up must not wait for it.
        const state = prefetcher ? await untilAborted(prefetcher.ready(layer.digest), signal) : undefined;
        return source.openBlob(layer, { verifyCached: state !== 'downloaded', ...(signal ? { signal } : {}) });
      },
      // Every source checks what it streams (a download, a cached or a local blob), or checked this run's
      // download on its way into the cache: the store need not hash the blob again.
      verified: true,
    })),
    names: source.names(image),
    sourceRepository: source.sourceRepository ?? '',
  };
}

/**
 * Resolves image specs (registry references, `oci:`, `docker-archive:`) for one platform, in parallel, into
 * what the engine store writes: the verified config, layers that open verified blob streams, and the names
 * `docker pull` would record. Fails on the first image that cannot be resolved, naming it.
 */
export async function resolvePreloadImages(
  specs: readonly string[],
  options: ResolvePreloadOptions,
): Promise<PreloadImage[]> {
  const logger = options.logger ?? silentLogger;
  const platform = toPlatform(options.platform);
  throwIfAborted(options.signal);
  const concurrency = options.prefetch ?? 3;
  const prefetcher =
    options.client.cache && concurrency > 0
      ? new LayerPrefetcher(concurrency, options.signal, options.onPrefetchProgress)
      : undefined;
  return Promise.all(
    specs.map(async (spec) => {
      const source = openImageSource(spec, options.client);
      const resolved = await source.resolve({ platform, ...(options.signal ? { signal: options.signal } : {}) });
      logger.info('resolved image', {
        image: spec,
        digest: resolved.digest,
        platform: formatPlatform(resolved.platform),
        layers: resolved.layers.length,
      });
      prefetcher?.enqueue(source, resolved.layers);
      return { spec, resolved, store: storeImageOf(source, resolved, prefetcher) };
    }),
  );
}

/** The original API's credentials: a bearer token, or a user name and password, sent to every registry named. */
export type LegacyAuth = string | { username: string; password: string };

/**
 * The original dotetch API: resolves images and returns what `streamDockerAssets` (`@etch/core`) needs. `auth` applies
 * to every registry (as it did); credentials from docker's config.json are used when it is absent.
 * Pass `platform` (the device's); without it the build host's is used.
 */
export async function getManifestsForImages(
  images: readonly string[],
  auth?: LegacyAuth,
  options: {
    platform?: Platform | string;
    insecureRegistries?: readonly string[];
    signal?: AbortSignal;
    logger?: Logger;
  } = {},
): Promise<StoreImage[]> {
  const credentials =
    auth === undefined
      ? undefined
      : typeof auth === 'string'
        ? { registryToken: auth }
        : { username: auth.username, password: auth.password };
  const client = new RegistryClient({
    ...(credentials ? { credentials: async () => ({ credentials, source: 'getManifestsForImages auth' }) } : {}),
    ...(options.insecureRegistries ? { insecureRegistries: options.insecureRegistries } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  const resolved = await resolvePreloadImages(images, {
    platform: options.platform ?? hostPlatform(),
    client,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  return resolved.map((r) => r.store);
}
