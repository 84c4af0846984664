import { Readable } from 'node:stream';
import { EtchError } from '@etch/format';
import {
  MediaType,
  RegistryClient,
  asImageIndex,
  asImageManifest,
  digestBytes,
  hostPlatform,
  isIndexType,
  isManifestType,
  normalizePlatform,
  openImageSource,
  openImageTarget,
  parseJsonDocument,
  platformRank,
  selectFromIndex,
  toPlatform,
  type Descriptor,
  type FetchedManifest,
  type ImageManifestJson,
  type ImageSource,
  type ImageTarget,
  type Platform,
} from '@etch/registry';
import { filesLayer, type AddFilesOptions } from './files-layer.js';
import type { BlobTransfer, CopyProgress } from './copy.js';
import { limiter } from './limit.js';

/** The runtime part of an image config (`config` in the image-spec), the fields this builder sets. */
export interface ImageConfig {
  Cmd?: string[];
  Entrypoint?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, object>;
  Volumes?: Record<string, object>;
  StopSignal?: string;
  [key: string]: unknown;
}

/** An image config document as stored (only what the builder touches is typed). */
interface ConfigJson {
  created?: string;
  architecture?: string;
  os?: string;
  config?: ImageConfig;
  rootfs: { type: string; diff_ids: string[] };
  history?: { created?: string; created_by?: string; comment?: string; empty_layer?: boolean }[];
  [key: string]: unknown;
}

/** A layer the builder adds: where it is in the target and what it holds. */
interface AddedLayer {
  digest: string;
  size: number;
  diffId: string;
  urls?: string[];
  createdBy: string;
}

/** Options of an {@link Image}. */
export interface ImageOptions {
  /** The registry client (credentials, insecure registries); one with docker's config is made when absent. */
  client?: RegistryClient;
  /** For a multi-platform base: `all` (default) or the platforms to build. A single-platform base is built as is. */
  platforms?: 'all' | readonly (Platform | string)[];
  /** The image's `created` time (default `SOURCE_DATE_EPOCH`, else the Unix epoch): part of what makes it reproducible. */
  created?: Date;
  signal?: AbortSignal;
  /** Called as each blob lands in the target: base layers (existed, mounted or uploaded), files layers, configs. */
  onBlob?: (progress: CopyProgress) => void;
  /** Called as uploads' bytes go out: base layers copied across registries, files layers (no digest until done). */
  onTransfer?: (progress: BlobTransfer) => void;
}

/** What {@link Image.save} stored. */
export interface SavedImage {
  /** The reference saved to, with the first tag. */
  target: string;
  /** Digest of the top document: the new index for a multi-platform base, else the image manifest. */
  digest: string;
  mediaType: string;
  tags: string[];
  /** Each image built, with its platform. */
  images: { platform?: Platform; digest: string; config: string }[];
}

const SOURCE_DATE_EPOCH = 'SOURCE_DATE_EPOCH';

function createdFromEnvironment(): Date {
  const value = process.env[SOURCE_DATE_EPOCH];
  if (value !== undefined && /^\d+$/.test(value.trim())) return new Date(Number(value.trim()) * 1000);
  return new Date(0);
}

function isAttestation(d: Descriptor): boolean {
  return (
    d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ||
    (d.platform?.os === 'unknown' && d.platform?.architecture === 'unknown')
  );
}

function bytesOnce(bytes: Buffer): AsyncIterable<Buffer> {
  return Readable.from([bytes]) as AsyncIterable<Buffer>;
}

/** `K=V` entries with later keys replacing earlier ones in place, as docker's ENV does. */
function mergeEnv(base: readonly string[], added: readonly string[]): string[] {
  const out = [...base];
  for (const entry of added) {
    const key = entry.split('=')[0];
    const at = out.findIndex((e) => e.split('=')[0] === key);
    if (at === -1) out.push(entry);
    else out[at] = entry;
  }
  return out;
}

/**
 * Builds an image without docker: a base image (registry, `oci:` or `docker-archive:`), local files added as
 * reproducible layers, config fields changed, saved to a registry, an OCI layout or a docker archive (one
 * platform: the one asked for, else the host's). A multi-platform base gives
 * a new index with the files added to each platform's image (the files layer uploaded once). Base layers are
 * never downloaded when the target has them or can mount them; otherwise they stream from base to target.
 *
 * @example
 * ```ts
 * const image = new Image('127.0.0.1:5000/node:lts', '127.0.0.1:5000/my-app');
 * await image.addFiles({ '/app': './build' }, { ignoreFiles: ['.dockerignore'] });
 * image.WorkingDir = '/app';
 * image.Cmd = ['node', 'index.js'];
 * image.Env = ['NODE_ENV=production'];
 * const saved = await image.save(['v1']);
 * ```
 */
export class Image {
  /** Replaces the base's command when set. */
  Cmd: string[] | undefined;
  /** Replaces the base's entrypoint when set. */
  Entrypoint: string[] | undefined;
  /** Appended to the base's environment (`K=V`; a key already there is replaced). */
  Env: string[] = [];
  WorkingDir: string | undefined;
  User: string | undefined;
  /** Merged into the base's labels. */
  Labels: Record<string, string> = {};
  /** Added to the base's exposed ports (`'8080/tcp'`). */
  ExposedPorts: string[] = [];
  /** Added to the base's volumes (`'/data'`). */
  Volumes: string[] = [];
  StopSignal: string | undefined;

  readonly base: string;
  readonly target: string;
  private readonly client: RegistryClient;
  private readonly ownsClient: boolean;
  private readonly created: Date;
  private readonly options: ImageOptions;
  private readonly layers: AddedLayer[] = [];
  private readonly removed = new Set<string>();
  private readonly edits: ((config: ImageConfig) => void)[] = [];
  private source: ImageSource | undefined;
  private sink: ImageTarget | undefined;

  constructor(base: string, target: string, options: ImageOptions = {}) {
    this.base = base;
    this.target = target;
    this.options = options;
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? new RegistryClient();
    this.created = options.created ?? createdFromEnvironment();
  }

  private get baseSource(): ImageSource {
    this.source ??= openImageSource(this.base, this.client);
    return this.source;
  }

  private get targetSink(): ImageTarget {
    this.sink ??= openImageTarget(this.target, this.client);
    return this.sink;
  }

  private get call(): { signal?: AbortSignal } {
    return this.options.signal ? { signal: this.options.signal } : {};
  }

  /**
   * Adds local files as one layer: `{ '/app': './build' }` puts the contents of `./build` under `/app`; several
   * pairs go into the same layer. The layer is made and uploaded to the target now, streamed (never on disk).
   */
  async addFiles(
    files: Readonly<Record<string, string>>,
    options: AddFilesOptions = {},
  ): Promise<{ digest: string; size: number; diffId: string }> {
    const layer = await filesLayer(files, { mtime: this.created, ...options, ...this.call });
    const onTransfer = this.options.onTransfer;
    const { digest, size } = await this.targetSink.putStream(layer.stream, {
      ...(onTransfer ? { onProgress: (p) => onTransfer({ bytes: p.bytes }) } : {}),
      ...this.call,
    });
    const diffId = await layer.diffId;
    this.options.onBlob?.({ digest, size, how: 'uploaded' });
    const createdBy = `etch build: add ${Object.entries(files)
      .map(([dest, local]) => `${local} ${dest}`)
      .join(', ')}`;
    this.layers.push({ digest, size, diffId, createdBy });
    return { digest, size, diffId };
  }

  /** Appends a layer already in the target repository (or fetched from `urls`, a foreign layer). */
  addLayer(digest: string, uncompressedDigest: string, size: number, urls?: string[]): void {
    this.layers.push({
      digest,
      size,
      diffId: uncompressedDigest,
      ...(urls ? { urls } : {}),
      createdBy: `etch build: add layer ${digest}`,
    });
  }

  /** Drops a layer, of the base or added, by its digest (its diff_id goes with it). */
  removeLayer(digest: string): void {
    const at = this.layers.findIndex((l) => l.digest === digest);
    if (at !== -1) this.layers.splice(at, 1);
    else this.removed.add(digest);
  }

  /** Registers a change to every built image's config, applied at save (after the fields above). */
  editConfig(edit: (config: ImageConfig) => void): void {
    this.edits.push(edit);
  }

  /** The base's config (the runtime part) for the first platform built: read-only, for inspection. */
  async getImageConfig(): Promise<ImageConfig> {
    return (await this.getImageData()).config.config ?? {};
  }

  /** The base's manifest and config for the first platform built. */
  async getImageData(): Promise<{ manifest: ImageManifestJson; config: ConfigJson }> {
    const [first] = await this.baseImages();
    if (!first) throw new EtchError('ETCH_PLATFORM_NOT_FOUND', `${this.base} has no image to build on.`);
    const { manifest, config } = await this.readImage(first.document);
    return { manifest, config };
  }

  /** The base's images to build on: one per wanted platform of an index, or the single image. */
  private async baseImages(): Promise<{ document: FetchedManifest; entry?: Descriptor }[]> {
    const source = this.baseSource;
    if (!source.topManifest || !source.manifestByDigest) {
      const image = await source.resolve({
        ...(this.options.platforms && this.options.platforms !== 'all' && this.options.platforms[0]
          ? { platform: this.options.platforms[0] }
          : {}),
        ...this.call,
      });
      return [
        {
          document: {
            digest: image.digest,
            mediaType: image.mediaType,
            bytes: image.manifestBytes,
            json: parseJsonDocument(image.manifestBytes, this.base),
          },
        },
      ];
    }
    const top = await source.topManifest(this.call);
    if (!isIndexType(top.mediaType)) return [{ document: top }];
    const index = asImageIndex(top.json, this.base);
    const byDigest = source.manifestByDigest.bind(source);
    if (this.targetSink.singleImage) {
      // A docker archive holds one image: the platform asked for, else the host's.
      const asked =
        this.options.platforms === undefined || this.options.platforms === 'all' ? [] : this.options.platforms;
      if (asked.length > 1)
        throw new EtchError('ETCH_USAGE', `${this.target} holds one image; ask for one platform, not ${asked.length}.`);
      const entry = selectFromIndex(index, asked[0] !== undefined ? toPlatform(asked[0]) : hostPlatform(), this.base);
      return [{ document: await byDigest(entry, this.call), entry }];
    }
    const wanted =
      this.options.platforms === undefined || this.options.platforms === 'all'
        ? undefined
        : this.options.platforms.map((p) => toPlatform(p));
    const entries = index.manifests.filter(
      (d) =>
        isManifestType(d.mediaType) &&
        !isAttestation(d) &&
        (wanted === undefined ||
          (d.platform !== undefined &&
            wanted.some((w) => platformRank(w, normalizePlatform(d.platform as Platform)) === 0))),
    );
    if (entries.length === 0)
      throw new EtchError('ETCH_PLATFORM_NOT_FOUND', `${this.base} has no image for the platforms asked for.`);
    return Promise.all(entries.map(async (entry) => ({ document: await byDigest(entry, this.call), entry })));
  }

  private async readImage(document: FetchedManifest): Promise<{ manifest: ImageManifestJson; config: ConfigJson }> {
    const manifest = asImageManifest(document.json, this.base);
    const chunks: Buffer[] = [];
    for await (const chunk of this.baseSource.openBlob(manifest.config, this.call)) chunks.push(chunk);
    const config = parseJsonDocument(Buffer.concat(chunks), `The config of ${this.base}`) as unknown as ConfigJson;
    return { manifest, config };
  }

  /** Copies the base's layers to the target (skipped when there, mounted within a registry, else streamed). */
  async sync(): Promise<void> {
    const limit = limiter(3);
    const seen = new Set<string>();
    const work: Promise<unknown>[] = [];
    for (const { document } of await this.baseImages()) {
      for (const layer of asImageManifest(document.json, this.base).layers) {
        if (seen.has(layer.digest) || this.removed.has(layer.digest)) continue;
        seen.add(layer.digest);
        const source = this.baseSource;
        work.push(
          limit(async () => {
            const onTransfer = this.options.onTransfer;
            // The target hashes what it stores: a local base need not hash the same bytes a second time.
            const how = await this.targetSink.putBlob(
              layer,
              () => source.openBlob(layer, { ...this.call, verifyDigest: false }),
              {
                ...(source.origin ? { from: source.origin } : {}),
                ...(onTransfer
                  ? { onProgress: (p) => onTransfer({ digest: layer.digest, bytes: p.bytes, total: layer.size }) }
                  : {}),
                ...this.call,
              },
            );
            this.options.onBlob?.({ digest: layer.digest, size: layer.size, how });
          }),
        );
      }
    }
    await Promise.all(work);
  }

  private editedConfig(base: ConfigJson, removedAt: number[]): ConfigJson {
    // RFC 3339 as Go tools write it: no fraction when there is none.
    const created = this.created.toISOString().replace(/\.000Z$/, 'Z');
    const runtime: ImageConfig = { ...(base.config ?? {}) };
    if (this.Cmd !== undefined) runtime.Cmd = [...this.Cmd];
    if (this.Entrypoint !== undefined) runtime.Entrypoint = [...this.Entrypoint];
    if (this.Env.length > 0) runtime.Env = mergeEnv(runtime.Env ?? [], this.Env);
    if (this.WorkingDir !== undefined) runtime.WorkingDir = this.WorkingDir;
    if (this.User !== undefined) runtime.User = this.User;
    if (Object.keys(this.Labels).length > 0) runtime.Labels = { ...(runtime.Labels ?? {}), ...this.Labels };
    if (this.ExposedPorts.length > 0)
      runtime.ExposedPorts = {
        ...(runtime.ExposedPorts ?? {}),
        ...Object.fromEntries(this.ExposedPorts.map((p) => [p.includes('/') ? p : `${p}/tcp`, {}])),
      };
    if (this.Volumes.length > 0)
      runtime.Volumes = { ...(runtime.Volumes ?? {}), ...Object.fromEntries(this.Volumes.map((v) => [v, {}])) };
    if (this.StopSignal !== undefined) runtime.StopSignal = this.StopSignal;
    for (const edit of this.edits) edit(runtime);
    const diffIds = base.rootfs.diff_ids.filter((_, i) => !removedAt.includes(i));
    return {
      ...base,
      created,
      config: runtime,
      rootfs: { ...base.rootfs, diff_ids: [...diffIds, ...this.layers.map((l) => l.diffId)] },
      history: [
        ...(base.history ?? []),
        ...this.layers.map((l) => ({ created, created_by: l.createdBy, comment: 'etch' })),
      ],
    };
  }

  /** Builds one image on one base manifest; returns the new manifest document. */
  private async buildOne(document: FetchedManifest): Promise<{ bytes: Buffer; mediaType: string; config: string }> {
    const { manifest, config } = await this.readImage(document);
    const removedAt = manifest.layers.flatMap((l, i) => (this.removed.has(l.digest) ? [i] : []));
    const newConfig = Buffer.from(JSON.stringify(this.editedConfig(config, removedAt)));
    const configDescriptor: Descriptor = {
      mediaType: manifest.config.mediaType,
      digest: digestBytes(newConfig),
      size: newConfig.length,
    };
    const how = await this.targetSink.putBlob(configDescriptor, () => bytesOnce(newConfig), this.call);
    this.options.onBlob?.({ digest: configDescriptor.digest, size: configDescriptor.size, how });
    const docker = document.mediaType === MediaType.DOCKER_MANIFEST;
    const added: Descriptor[] = this.layers.map((l) => ({
      mediaType: docker ? MediaType.DOCKER_LAYER_GZIP : MediaType.OCI_LAYER_GZIP,
      digest: l.digest,
      size: l.size,
      ...(l.urls ? { urls: l.urls } : {}),
    }));
    const next: ImageManifestJson = {
      ...manifest,
      config: configDescriptor,
      layers: [...manifest.layers.filter((l) => !this.removed.has(l.digest)), ...added],
    };
    return { bytes: Buffer.from(JSON.stringify(next)), mediaType: document.mediaType, config: configDescriptor.digest };
  }

  /**
   * Saves the image to the target under `tags` (default: the target's tag, else `latest`): base layers synced,
   * configs and manifests written, and for a multi-platform base a new index whose entries keep their platform
   * and annotations. Returns the digests.
   */
  async save(tags?: readonly string[]): Promise<SavedImage> {
    const sink = this.targetSink;
    const names = tags && tags.length > 0 ? [...tags] : [sink.tag ?? 'latest'];
    await this.sync();
    const bases = await this.baseImages();
    const images: SavedImage['images'] = [];
    const built: Descriptor[] = [];
    for (const { document, entry } of bases) {
      const image = await this.buildOne(document);
      const single = entry === undefined || sink.singleImage === true;
      const digest = await sink.putManifest(image, single ? names : [], this.call);
      images.push({ ...(entry?.platform ? { platform: entry.platform } : {}), digest, config: image.config });
      if (entry) built.push({ ...entry, mediaType: image.mediaType, digest, size: image.bytes.length });
      if (single) return { target: this.target, digest, mediaType: image.mediaType, tags: names, images };
    }
    const top = await this.baseSource.topManifest?.(this.call);
    const index = top ? asImageIndex(top.json, this.base) : { schemaVersion: 2 as const, manifests: [] };
    const bytes = Buffer.from(JSON.stringify({ ...index, manifests: built }));
    const mediaType = top?.mediaType ?? MediaType.OCI_INDEX;
    const digest = await sink.putManifest({ bytes, mediaType }, names, this.call);
    return { target: this.target, digest, mediaType, tags: names, images };
  }

  /** Closes the target (a docker archive's spooled blobs are removed) and the registry client when the image made it. */
  async close(): Promise<void> {
    await this.sink?.close();
    if (this.ownsClient) await this.client.close();
  }
}
