import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { EtchError, silentLogger, throwIfAborted, toEtchError, type Logger } from '@etch/format';
import {
  MediaType,
  digestBytes,
  formatPlatform,
  hostPlatform,
  parseReference,
  pushScope,
  toPlatform,
  withTarget,
  type BlobWrite,
  type Descriptor,
  type ImageReference,
  type Platform,
  type RegistryClient,
} from '@etch/registry';
import { EciAnnotation, EciMediaType } from './eci.js';
import { fileBytes, gzipped, measure, measureTgz, tarOfFile } from './eci-layer.js';

/** The disk types an ECI may carry, as lf-edge defines them (`pkg/registry/artifact.go`). */
export const ECI_DISK_TYPES = ['raw', 'vhd', 'vmdk', 'iso', 'qcow', 'qcow2', 'ova', 'vhdx'] as const;

/** One of {@link ECI_DISK_TYPES}. */
export type EciDiskType = (typeof ECI_DISK_TYPES)[number];

/**
 * How an ECI is stored. `artifacts`: each file is a layer of its own lf-edge media type. `legacy`: each file is
 * tar+gzipped into a standard OCI layer (for registries that refuse unknown media types), its purpose in
 * annotations.
 */
export type EciFormat = 'artifacts' | 'legacy';

/** The role of a component, as the `org.lfedge.eci.role` annotation says it (`other` is written as `""`). */
export type EciRole = 'kernel' | 'initrd' | 'disk-root' | 'disk-additional' | 'config' | 'other';

/** A disk file and its type. */
export interface EciDisk {
  path: string;
  type: EciDiskType;
}

/** The files of one ECI (one platform). */
export interface EciImage {
  /** The root disk. */
  root: EciDisk;
  kernel?: string;
  initrd?: string;
  /** Additional disks, named `disk-<i>-<name>` in order (0-based). */
  disks?: readonly EciDisk[];
  /** A config file used as the manifest's config as it is; without it an OCI image config with labels is made. */
  config?: string;
  /** Other files, each a layer titled with its base name. */
  other?: readonly string[];
  /** `os/arch[/variant]`: the generated config's platform and the index entry's. Default: this host's. */
  platform?: string;
}

/** Progress of a push: `hash` while a file is measured, `upload` while its blob goes up. */
export interface EciPushProgress {
  phase: 'hash' | 'upload';
  /** The ECI file name (`disk-root-os.img`). */
  name: string;
  bytes: number;
  total: number;
}

/** Options of {@link pushEci}. */
export interface PushEciOptions {
  /** Default `artifacts`. */
  format?: EciFormat;
  /** Annotations of the manifest (and of the index when several platforms are pushed). */
  annotations?: Readonly<Record<string, string>>;
  /**
   * The generated config's `created` (RFC 3339) and the tar entries' mtime of legacy layers. Default: none in
   * the config and mtime 0, so the same files push to the same digest.
   */
  created?: string;
  /** Bytes per `PATCH` of a chunked upload (default 8 MiB); blobs larger than this go in chunks. */
  chunkSize?: number;
  signal?: AbortSignal;
  onProgress?: (progress: EciPushProgress) => void;
  /** Called as each blob lands (uploaded, or found already there). */
  onBlob?: (blob: EciPushedBlob) => void;
  logger?: Logger;
}

/** A blob of a pushed ECI. */
export interface EciPushedBlob {
  /** The ECI file name, `config.json` for a config. */
  name: string;
  role: EciRole | 'generated-config';
  digest: string;
  size: number;
  mediaType: string;
  how: BlobWrite;
  platform: string;
}

/** What {@link pushEci} stored. */
export interface PushEciResult {
  /** Where the top document is tagged: `registry/repository:tag`. */
  reference: string;
  /** The digest of the manifest, or of the index when several platforms were pushed. */
  digest: string;
  mediaType: string;
  /** The manifest of each platform. */
  manifests: { platform: string; digest: string; size: number }[];
  blobs: EciPushedBlob[];
}

// Half the registry client's default: a chunk is held twice over (the one travelling, the one read ahead) and
// freed only when V8 collects it, so a smaller chunk keeps a multi-GiB push well under 256 MiB of RSS.
const DEFAULT_CHUNK = 8 * 1024 * 1024;
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/**
 * Parses `PATH:TYPE` (the CLI's `--root` and `--disk`), splitting at the last colon so paths may hold colons.
 * An unknown type is refused here, before anything is uploaded.
 */
export function parseEciDisk(text: string): EciDisk {
  const colon = text.lastIndexOf(':');
  const path = colon > 0 ? text.slice(0, colon) : '';
  const type = colon > 0 ? text.slice(colon + 1) : '';
  if (path === '' || type === '')
    throw new EtchError('ETCH_USAGE', `${JSON.stringify(text)} is not PATH:TYPE (for example root.img:raw).`);
  return { path, type: assertDiskType(type, path) };
}

function assertDiskType(type: string, path: string): EciDiskType {
  if (!(ECI_DISK_TYPES as readonly string[]).includes(type))
    throw new EtchError(
      'ETCH_USAGE',
      `${path}: disk type ${JSON.stringify(type)} is not one ECI knows (${ECI_DISK_TYPES.join(', ')}).`,
      { details: { path } },
    );
  return type as EciDiskType;
}

/** A file going into the ECI, before it is measured. */
interface Part {
  role: EciRole;
  /** The ECI file name: the layer title, the legacy tar entry, the pulled file. */
  title: string;
  path: string;
  /** The lf-edge media type (the artifact layer's type; the annotation in both formats). */
  eciType: string;
  size: number;
}

/** A part measured: its blob's descriptor and its diff_id. */
interface Measured extends Part {
  descriptor: Descriptor;
  diffId: string;
  open: () => AsyncIterable<Uint8Array>;
}

async function regularFile(path: string, what: string): Promise<number> {
  const info = await stat(path).catch((cause: unknown) => {
    throw new EtchError('ETCH_IO', `The ${what} ${path} cannot be read: ${(cause as Error).message}`, {
      cause,
      details: { path },
    });
  });
  if (!info.isFile())
    throw new EtchError('ETCH_USAGE', `The ${what} ${path} is not a regular file.`, { details: { path } });
  return info.size;
}

/** The parts of an image, checked (types, files, names) before anything is read or uploaded. */
async function partsOf(image: EciImage, format: EciFormat): Promise<Part[]> {
  const parts: Part[] = [];
  const add = async (role: EciRole, title: string, path: string, eciType: string, what: string) => {
    if (parts.some((p) => p.title === title))
      throw new EtchError('ETCH_USAGE', `Two files would both be named ${title} in the ECI; rename one.`, {
        details: { entryName: title },
      });
    // A legacy layer's tar entry is named by the title, in a plain ustar header (at most 100 bytes).
    if (format === 'legacy' && Buffer.byteLength(title) > 100)
      throw new EtchError('ETCH_USAGE', `The ECI file name ${title} is over 100 bytes, too long for a legacy layer.`, {
        details: { entryName: title },
      });
    parts.push({ role, title, path, eciType, size: await regularFile(path, what) });
  };
  if (image.kernel !== undefined) await add('kernel', 'kernel', image.kernel, EciMediaType.KERNEL, 'kernel');
  if (image.initrd !== undefined) await add('initrd', 'initrd', image.initrd, EciMediaType.INITRD, 'initrd');
  const rootType = assertDiskType(image.root.type, image.root.path);
  await add(
    'disk-root',
    `disk-root-${basename(image.root.path)}`,
    image.root.path,
    `${EciMediaType.DISK_PREFIX}${rootType}`,
    'root disk',
  );
  for (const [i, disk] of (image.disks ?? []).entries()) {
    const type = assertDiskType(disk.type, disk.path);
    await add(
      'disk-additional',
      `disk-${i}-${basename(disk.path)}`,
      disk.path,
      `${EciMediaType.DISK_PREFIX}${type}`,
      'disk',
    );
  }
  for (const other of image.other ?? []) await add('other', basename(other), other, EciMediaType.OTHER, 'file');
  if (image.config !== undefined) await regularFile(image.config, 'config');
  return parts;
}

function layerAnnotations(part: Part): Record<string, string> {
  return {
    [EciAnnotation.MEDIA_TYPE]: part.eciType,
    [EciAnnotation.ROLE]: part.role === 'other' ? '' : part.role,
    [EciAnnotation.TITLE]: part.title,
  };
}

/** The config labels lf-edge writes (`org.lfedge.eci.artifact.*`), plus one `org.lfedge.eci.other-<i>` per other file. */
function labelsOf(parts: readonly Part[]): Record<string, string> {
  const labels: Record<string, string> = {};
  let disk = 0;
  let other = 0;
  for (const part of parts) {
    const at = `/${part.title}`;
    if (part.role === 'kernel' || part.role === 'initrd')
      labels[`${EciAnnotation.ARTIFACT_LABEL_PREFIX}${part.role}`] = at;
    else if (part.role === 'disk-root') labels[EciAnnotation.ROOT_LABEL] = at;
    else if (part.role === 'disk-additional') labels[`${EciAnnotation.ARTIFACT_LABEL_PREFIX}disk-${disk++}`] = at;
    else if (part.role === 'other') {
      if (other === 0) labels[EciAnnotation.OTHER_LABEL] = at;
      labels[`${EciAnnotation.OTHER_LABEL}-${other++}`] = at;
    }
  }
  return labels;
}

function mtimeOf(created: string | undefined): number {
  if (created === undefined) return 0;
  const time = Date.parse(created);
  if (Number.isNaN(time)) throw new EtchError('ETCH_USAGE', `created ${JSON.stringify(created)} is not a date.`);
  return Math.floor(time / 1000);
}

async function measurePart(part: Part, format: EciFormat, mtime: number, options: PushEciOptions): Promise<Measured> {
  const { signal, onProgress } = options;
  const progress = (bytes: number) => onProgress?.({ phase: 'hash', name: part.title, bytes, total: part.size });
  if (format === 'artifacts') {
    const open = () => fileBytes(part.path, part.size, signal);
    const { digest, size } = await measure(open(), progress);
    return {
      ...part,
      diffId: digest,
      open,
      descriptor: { mediaType: part.eciType, digest, size, annotations: layerAnnotations(part) },
    };
  }
  const open = () => gzipped(tarOfFile(part.path, part.title, part.size, mtime, signal), signal);
  const measured = await measureTgz(tarOfFile(part.path, part.title, part.size, mtime, signal), signal, (bytes) =>
    progress(Math.min(bytes, part.size)),
  );
  return {
    ...part,
    diffId: measured.diffId,
    open,
    descriptor: {
      mediaType: EciMediaType.LEGACY_LAYER,
      digest: measured.digest,
      size: measured.size,
      annotations: layerAnnotations(part),
    },
  };
}

function once(bytes: Uint8Array): () => AsyncIterable<Uint8Array> {
  return () =>
    (async function* () {
      yield bytes;
    })();
}

interface PushContext {
  client: RegistryClient;
  ref: ImageReference;
  options: PushEciOptions;
  blobs: EciPushedBlob[];
  logger: Logger;
}

async function upload(
  ctx: PushContext,
  descriptor: Descriptor,
  open: () => AsyncIterable<Uint8Array>,
  name: string,
  role: EciPushedBlob['role'],
  platform: string,
): Promise<void> {
  const { options } = ctx;
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  // Already there (in this run, or pushed before): not uploaded again.
  const seen = ctx.blobs.find((b) => b.digest === descriptor.digest);
  const how: BlobWrite = seen
    ? 'existed'
    : (
        await ctx.client.uploadBlob(ctx.ref, open, {
          digest: descriptor.digest,
          size: descriptor.size,
          chunked: descriptor.size > chunkSize,
          chunkSize,
          scopes: [pushScope(ctx.ref.repository)],
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.onProgress
            ? {
                onProgress: (p) =>
                  options.onProgress?.({ phase: 'upload', name, bytes: p.bytes, total: descriptor.size }),
              }
            : {}),
        })
      ).how;
  ctx.logger.info('ECI blob', { name, digest: descriptor.digest, size: descriptor.size, how });
  const blob: EciPushedBlob = {
    name,
    role,
    digest: descriptor.digest,
    size: descriptor.size,
    mediaType: descriptor.mediaType,
    how,
    platform,
  };
  ctx.blobs.push(blob);
  options.onBlob?.(blob);
}

/** Measures, uploads and describes one image; returns its manifest's bytes. */
async function pushImage(
  ctx: PushContext,
  image: EciImage,
  format: EciFormat,
  parts: readonly Part[],
): Promise<{ bytes: Buffer; platform: Platform }> {
  const { options } = ctx;
  const platform = image.platform !== undefined ? toPlatform(image.platform) : hostPlatform();
  const platformText = formatPlatform(platform);
  const mtime = mtimeOf(options.created);
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const part of parts) {
    throwIfAborted(options.signal);
    const measured = await measurePart(part, format, mtime, options);
    await upload(ctx, measured.descriptor, measured.open, part.title, part.role, platformText);
    layers.push(measured.descriptor);
    diffIds.push(measured.diffId);
  }
  let config: Descriptor;
  if (image.config !== undefined) {
    const size = await regularFile(image.config, 'config');
    if (size > MAX_CONFIG_BYTES)
      throw new EtchError('ETCH_USAGE', `The config ${image.config} is over ${MAX_CONFIG_BYTES} bytes.`, {
        details: { path: image.config },
      });
    const bytes = await readFile(image.config);
    // lf-edge's config types (fixing b3: its legacy push wrapped a given config as a tar+gzip layer).
    config = {
      mediaType: format === 'artifacts' ? EciMediaType.CONFIG : EciMediaType.OCI_CONFIG,
      digest: digestBytes(bytes),
      size: bytes.length,
      annotations: { [EciAnnotation.MEDIA_TYPE]: EciMediaType.CONFIG, [EciAnnotation.TITLE]: 'config.json' },
    };
    await upload(ctx, config, once(bytes), 'config.json', 'config', platformText);
  } else {
    // The config lf-edge generates, with diff_ids right (b2: it wrote blob digests, repeated) and no clock (b13).
    const document = {
      ...(options.created !== undefined ? { created: options.created } : {}),
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
      config: { Labels: labelsOf(parts) },
      rootfs: { type: 'layers', diff_ids: diffIds },
    };
    const bytes = Buffer.from(JSON.stringify(document));
    config = { mediaType: EciMediaType.OCI_CONFIG, digest: digestBytes(bytes), size: bytes.length };
    await upload(ctx, config, once(bytes), 'config', 'generated-config', platformText);
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config,
    layers,
    ...(options.annotations && Object.keys(options.annotations).length > 0
      ? { annotations: { ...options.annotations } }
      : {}),
  };
  return { bytes: Buffer.from(JSON.stringify(manifest)), platform };
}

/**
 * Pushes an ECI (lf-edge edge-containers' "Edge Container Image") to a registry: its files as layers with
 * lf-edge's media types, annotations and file names, a config (the one given, or an OCI image config whose labels
 * say where each file is), and an OCI manifest under the reference's tag (`latest` when none). Given several
 * images, one per platform, each manifest is stored by digest and an OCI index of them is tagged.
 *
 * Everything is checked before the first byte goes up (disk types, files, names). Each file is then read once to
 * measure its digest, and uploaded only when the repository does not have that blob: large blobs in chunks that
 * resume after a cut, with the digest checked again on the way, in memory bounded by about two chunks.
 *
 * @example
 * ```ts
 * const client = new RegistryClient();
 * const pushed = await pushEci(client, 'registry.local:5000/eci/os:2.58.4', {
 *   root: { path: 'balena.img', type: 'raw' },
 *   kernel: 'vmlinuz',
 *   platform: 'linux/arm64',
 * });
 * console.log(pushed.digest);
 * ```
 */
export async function pushEci(
  client: RegistryClient,
  reference: string | ImageReference,
  images: EciImage | readonly EciImage[],
  options: PushEciOptions = {},
): Promise<PushEciResult> {
  try {
    return await push(client, reference, images, options);
  } catch (error) {
    // fs, zlib and abort errors become EtchErrors here, at the package boundary.
    throw toEtchError(error, { signal: options.signal, message: (m) => `Pushing the ECI ${String(reference)}: ${m}` });
  }
}

async function push(
  client: RegistryClient,
  reference: string | ImageReference,
  images: EciImage | readonly EciImage[],
  options: PushEciOptions,
): Promise<PushEciResult> {
  throwIfAborted(options.signal);
  const format = options.format ?? 'artifacts';
  if (format !== 'artifacts' && format !== 'legacy')
    throw new EtchError('ETCH_USAGE', `ECI format ${JSON.stringify(format)} is not artifacts or legacy.`);
  const list: readonly EciImage[] = Array.isArray(images) ? images : [images as EciImage];
  if (list.length === 0) throw new EtchError('ETCH_USAGE', 'pushEci needs at least one image.');
  let ref = typeof reference === 'string' ? parseReference(reference) : reference;
  if (ref.digest !== undefined)
    throw new EtchError('ETCH_USAGE', `${ref.toString()}: push to a tag, not a digest.`, {
      details: { digest: ref.digest },
    });
  if (ref.tag === undefined) ref = withTarget(ref, { tag: 'latest' });
  const platforms = list.map((image) =>
    formatPlatform(image.platform !== undefined ? toPlatform(image.platform) : hostPlatform()),
  );
  if (list.length > 1 && new Set(platforms).size !== platforms.length)
    throw new EtchError(
      'ETCH_USAGE',
      `Each image of an ECI index needs its own platform; got ${platforms.join(', ')}.`,
    );
  mtimeOf(options.created); // a bad `created` is refused before anything is read or uploaded
  // Every file of every image is checked before anything is uploaded.
  const partsList: Part[][] = [];
  for (const image of list) partsList.push(await partsOf(image, format));

  const ctx: PushContext = { client, ref, options, blobs: [], logger: options.logger ?? silentLogger };
  const call = {
    scopes: [pushScope(ref.repository)],
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const manifests: PushEciResult['manifests'] = [];
  const documents: { bytes: Buffer; platform: Platform }[] = [];
  for (const [i, image] of list.entries()) {
    const document = await pushImage(ctx, image, format, partsList[i] as Part[]);
    documents.push(document);
    manifests.push({
      platform: formatPlatform(document.platform),
      digest: digestBytes(document.bytes),
      size: document.bytes.length,
    });
  }
  const tagged = withTarget(ref, { tag: ref.tag });
  if (documents.length === 1) {
    const only = documents[0] as { bytes: Buffer };
    const digest = await client.putManifest(tagged, { bytes: only.bytes, mediaType: MediaType.OCI_MANIFEST }, call);
    return {
      reference: `${ref.fullName}:${ref.tag}`,
      digest,
      mediaType: MediaType.OCI_MANIFEST,
      manifests,
      blobs: ctx.blobs,
    };
  }
  for (const [i, document] of documents.entries())
    await client.putManifest(
      withTarget(ref, { digest: manifests[i]?.digest }),
      { bytes: document.bytes, mediaType: MediaType.OCI_MANIFEST },
      call,
    );
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: documents.map((document, i) => ({
      mediaType: MediaType.OCI_MANIFEST,
      digest: manifests[i]?.digest,
      size: document.bytes.length,
      platform: document.platform,
    })),
    ...(options.annotations && Object.keys(options.annotations).length > 0
      ? { annotations: { ...options.annotations } }
      : {}),
  };
  const digest = await client.putManifest(
    tagged,
    { bytes: Buffer.from(JSON.stringify(index)), mediaType: MediaType.OCI_INDEX },
    call,
  );
  return {
    reference: `${ref.fullName}:${ref.tag}`,
    digest,
    mediaType: MediaType.OCI_INDEX,
    manifests,
    blobs: ctx.blobs,
  };
}
