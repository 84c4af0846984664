import { EtchError, throwIfAborted } from '@etch/format';
import {
  asImageIndex,
  asImageManifest,
  hostPlatform,
  isForeignLayerType,
  isIndexType,
  selectFromIndex,
  toPlatform,
  type BlobWrite,
  type Descriptor,
  type FetchedManifest,
  type ImageSource,
  type ImageTarget,
  type Platform,
} from '@etch/registry';
import { limiter } from './limit.js';

/** Progress of a copy: one event per blob as it lands. */
export interface CopyProgress {
  digest: string;
  size: number;
  how: BlobWrite | 'skipped';
}

/**
 * Bytes of one blob sent so far, as an upload goes: `digest` and `total` are absent for a layer being made
 * (`Image.addFiles`), whose digest is known only at its end.
 */
export interface BlobTransfer {
  digest?: string;
  bytes: number;
  total?: number;
}

/** Options of {@link copyImage}. */
export interface CopyOptions {
  /**
   * `all` (default) copies an index whole, every entry, so the copy has the same digest; a platform copies only
   * that platform's image manifest (its digest kept). A single image is copied as it is either way. A target
   * that holds one image (`docker-archive:`) gets the host's platform of an index by default.
   */
  platforms?: Platform | string;
  /** Tags to store the top document under (default: the target's own tag). */
  tags?: readonly string[];
  /** Blobs in flight at once (default 3). */
  concurrency?: number;
  signal?: AbortSignal;
  onBlob?: (progress: CopyProgress) => void;
  /** Called as an upload's bytes go out (after `onBlob` says where each blob went, only uploads move bytes). */
  onTransfer?: (progress: BlobTransfer) => void;
}

/** What a copy stored. */
export interface CopyResult {
  /** Digest of the top document stored (the index, or the image manifest). */
  digest: string;
  mediaType: string;
  /** Digests of the image manifests copied. */
  manifests: string[];
  blobs: { uploaded: number; mounted: number; existed: number; bytesUploaded: number };
}

/**
 * Copies an image from any {@link ImageSource} to any {@link ImageTarget}: blobs first (skipped when present,
 * mounted within one registry, else streamed through without touching disk), then manifests by digest, then
 * the top document under its tags — the exact bytes, so digests are kept. Foreign layers are not copied, as
 * their bytes live elsewhere. A source with no stored manifest (a `docker save` archive) gives its one image.
 *
 * @example
 * ```ts
 * const client = new RegistryClient();
 * await copyImage(openImageSource('oci:./out:v1', client), openImageTarget('ghcr.io/acme/app:v1', client));
 * ```
 */
export async function copyImage(
  source: ImageSource,
  target: ImageTarget,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const signal = options.signal;
  const call = signal ? { signal } : {};
  const tags = options.tags ?? (target.tag !== undefined ? [target.tag] : []);
  const result: CopyResult = {
    digest: '',
    mediaType: '',
    manifests: [],
    blobs: { uploaded: 0, mounted: 0, existed: 0, bytesUploaded: 0 },
  };
  const limit = limiter(options.concurrency ?? 3);
  const blobs = new Map<string, Promise<void>>();

  const copyBlob = (descriptor: Descriptor): Promise<void> => {
    let pending = blobs.get(descriptor.digest);
    if (!pending) {
      pending = limit(async () => {
        throwIfAborted(signal);
        if (isForeignLayerType(descriptor.mediaType) && descriptor.urls?.length) {
          options.onBlob?.({ digest: descriptor.digest, size: descriptor.size, how: 'skipped' });
          return;
        }
        const onTransfer = options.onTransfer;
        // The target hashes what it stores (a registry checks ?digest=, a layout hashes its file): a local source
        // need not hash the same bytes a second time.
        const how = await target.putBlob(
          descriptor,
          () => source.openBlob(descriptor, { ...call, verifyDigest: false }),
          {
            ...(source.origin ? { from: source.origin } : {}),
            ...(onTransfer
              ? { onProgress: (p) => onTransfer({ digest: descriptor.digest, bytes: p.bytes, total: descriptor.size }) }
              : {}),
            ...call,
          },
        );
        result.blobs[how] += 1;
        if (how === 'uploaded') result.blobs.bytesUploaded += descriptor.size;
        options.onBlob?.({ digest: descriptor.digest, size: descriptor.size, how });
      });
      blobs.set(descriptor.digest, pending);
    }
    return pending;
  };

  const copyManifest = async (document: FetchedManifest, tagsHere: readonly string[], depth = 0): Promise<void> => {
    if (depth > 4) throw new EtchError('ETCH_BAD_MANIFEST', `${source.description} nests indexes more than 4 deep.`);
    if (isIndexType(document.mediaType)) {
      const index = asImageIndex(document.json, source.description);
      const byDigest = source.manifestByDigest?.bind(source);
      if (!byDigest) throw new EtchError('ETCH_UNSUPPORTED', `${source.description} cannot read manifests by digest.`);
      // Entries go in parallel; the blob map makes a layer they share go up once.
      await Promise.all(index.manifests.map(async (entry) => copyManifest(await byDigest(entry, call), [], depth + 1)));
    } else {
      const manifest = asImageManifest(document.json, source.description);
      await Promise.all([copyBlob(manifest.config), ...manifest.layers.map(copyBlob)]);
      result.manifests.push(document.digest);
    }
    await target.putManifest({ bytes: document.bytes, mediaType: document.mediaType }, tagsHere, call);
  };

  if (source.topManifest) {
    let top = await source.topManifest(call);
    // A target that holds one image (a docker archive) gets the host's platform of an index unless one is asked for.
    const wanted = options.platforms ?? (target.singleImage ? hostPlatform() : 'all');
    if (wanted === 'all' && target.singleImage && isIndexType(top.mediaType))
      throw new EtchError(
        'ETCH_USAGE',
        `${target.description} holds one image and ${source.description} is an index: copy one platform of it.`,
      );
    if (wanted !== 'all' && isIndexType(top.mediaType) && source.manifestByDigest) {
      // Down to the platform's manifest, through nested indexes.
      const platform = toPlatform(wanted);
      for (let depth = 0; isIndexType(top.mediaType); depth += 1) {
        if (depth > 4)
          throw new EtchError('ETCH_BAD_MANIFEST', `${source.description} nests indexes more than 4 deep.`);
        const entry = selectFromIndex(asImageIndex(top.json, source.description), platform, source.description);
        top = await source.manifestByDigest(entry, call);
      }
    }
    await copyManifest(top, tags);
    result.digest = top.digest;
    result.mediaType = top.mediaType;
    return result;
  }

  // A source with no stored manifest (a docker archive) holds one image: taken as it is unless a platform is asked for.
  const platform = options.platforms === undefined || options.platforms === 'all' ? undefined : options.platforms;
  const image = await source.resolve({ ...(platform !== undefined ? { platform } : {}), ...call });
  await Promise.all([copyBlob(image.config), ...image.layers.map(copyBlob)]);
  const digest = await target.putManifest({ bytes: image.manifestBytes, mediaType: image.mediaType }, tags, call);
  return { ...result, digest, mediaType: image.mediaType, manifests: [digest] };
}
