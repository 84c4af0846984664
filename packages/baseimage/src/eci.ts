import { posix } from 'node:path';
import { EtchError, assertBaseImageName, isEtchError, toEtchError, type Logger } from '@etch/format';
import {
  asImageIndex,
  asImageManifest,
  offeredPlatforms,
  parseReference,
  selectFromIndex,
  toPlatform,
  withTarget,
  type Descriptor,
  type FetchedManifest,
  type ImageIndexJson,
  type ImageReference,
  type RegistryClient,
} from '@etch/registry';
import { decompressAuto, extractTar } from '@etch/tar';
import type { OpenedSource } from './opened.js';
import type { BaseImageProgress } from './types.js';
import { parseSelector, selectTag, type Selector } from './versions.js';

/** Media types and annotations of lf-edge/edge-containers (`pkg/registry/mimeTypes.go`, `annotations.go`). */
export const EciMediaType = {
  /** Disk layers of the artifact format: `…+raw`, `+iso`, `+qcow2`, `+vmdk`, `+vhd`, `+vhdx`, `+qcow`, `+ova`. */
  DISK_PREFIX: 'application/vnd.lfedge.disk.layer.v1+',
  CONFIG: 'application/vnd.lfedge.eci.config.v1+json',
  ARTIFACT: 'application/vnd.lfedge.eci.v1+json',
  /** The kernel layer, as lf-edge's code writes it (its docs say `…kernel.layer.v1.tar`; both are read). */
  KERNEL: 'application/vnd.lfedge.eci.kernel.layer.v1+kernel',
  /** The initrd layer, as lf-edge's code writes it (its docs say `…initrd.layer.v1.tar`; both are read). */
  INITRD: 'application/vnd.lfedge.eci.initrd.layer.v1+cpio',
  /** Any other file. */
  OTHER: 'application/vnd.lfedge.eci.layer.v1',
  /** Every layer of the legacy format: the file tar+gzipped (lf-edge's code; its docs say an uncompressed tar). */
  LEGACY_LAYER: 'application/vnd.oci.image.layer.v1.tar+gzip',
  /** The config of the legacy format, and the generated config of both formats. */
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
} as const;

export const EciAnnotation = {
  ROLE: 'org.lfedge.eci.role',
  MEDIA_TYPE: 'org.lfedge.eci.mediaType',
  TITLE: 'org.opencontainers.image.title',
  /** Image-config label (legacy images built with docker): the path of the root disk inside the image's layers. */
  ROOT_LABEL: 'org.lfedge.eci.artifact.root',
  /** Image-config label prefix: `…artifact.kernel`, `…artifact.initrd`, `…artifact.root`, `…artifact.disk-<i>`. */
  ARTIFACT_LABEL_PREFIX: 'org.lfedge.eci.artifact.',
  /** Image-config label of the (first) other file; etch adds `org.lfedge.eci.other-<i>` for every one. */
  OTHER_LABEL: 'org.lfedge.eci.other',
} as const;

const ROOT_ROLE = 'disk-root';
/** Disk types a flasher can write as they are. */
const RAW_DISK_TYPES = new Set(['raw', 'iso']);

/** An `eci:` spec, parsed. */
export interface EciSpec {
  /** The repository (no tag, no digest). */
  repository: ImageReference;
  tag?: string;
  digest?: string;
  selector?: Selector;
  /** The selector as written. */
  selectorText?: string;
}

/**
 * Parses `eci:REGISTRY/REPO:TAG`, `eci:REGISTRY/REPO@VERSION_OR_RANGE`, `eci:REGISTRY/REPO@sha256:…`, or
 * `eci:REGISTRY/REPO` (the newest version tag, as `@latest`). A tag is used as it is; a selector chooses among
 * the repository's version tags (see {@link selectTag}).
 */
export function parseEciSpec(spec: string): EciSpec {
  if (!spec.startsWith('eci:')) throw new EtchError('ETCH_USAGE', `${JSON.stringify(spec)} is not an eci: reference.`);
  const body = spec.slice(4).replace(/^\/\//, '');
  const at = body.lastIndexOf('@');
  let name = body;
  let after: string | undefined;
  if (at > 0 && !body.slice(at + 1).includes('/')) {
    name = body.slice(0, at);
    after = body.slice(at + 1);
  }
  let ref: ImageReference;
  try {
    ref = parseReference(name);
  } catch (cause) {
    throw new EtchError(
      'ETCH_USAGE',
      `${JSON.stringify(spec)} is not eci:REGISTRY/REPOSITORY[:TAG][@VERSION_OR_RANGE]: ${(cause as Error).message}`,
      { cause },
    );
  }
  const repository = withTarget(ref, {});
  if (after !== undefined && /^[a-z0-9]+:[0-9a-f]{32,}$/.test(after)) {
    if (ref.tag !== undefined) throw new EtchError('ETCH_USAGE', `${spec}: give a tag or a digest, not both.`);
    return { repository, digest: parseReference(`${name}@${after}`).digest };
  }
  if (after !== undefined) {
    if (ref.tag !== undefined)
      throw new EtchError(
        'ETCH_USAGE',
        `${spec}: give a tag (:TAG) or a version selector (@VERSION_OR_RANGE), not both.`,
      );
    return { repository, selector: parseSelector(after), selectorText: after };
  }
  if (ref.tag !== undefined) return { repository, tag: ref.tag };
  return { repository, selector: { kind: 'latest' }, selectorText: 'latest' };
}

/** Where the root disk of an ECI is, once the manifest is read. */
export interface EciPlan {
  reference: ImageReference;
  resolvedVersion: string | undefined;
  manifestDigest: string;
  /** The cache key fields: the registry blob the bytes come from, and how. */
  keyFields: Record<string, string>;
  /** Opens the bytes (network). */
  open(): Promise<OpenedSource>;
}

interface EciContext {
  client: RegistryClient;
  signal?: AbortSignal;
  platform?: string;
  logger: Logger;
  onProgress?: (event: BaseImageProgress) => void;
}

function diskType(layer: Descriptor): string | undefined {
  const types = [layer.mediaType, layer.annotations?.[EciAnnotation.MEDIA_TYPE]];
  for (const type of types)
    if (type?.startsWith(EciMediaType.DISK_PREFIX)) return type.slice(EciMediaType.DISK_PREFIX.length);
  return undefined;
}

/** The archive name for a disk: its title without ECI's `disk-root-` prefix, else the title, else `disk-root.img`. */
export function diskName(title: string | undefined, type: string | undefined): string {
  const candidates = title ? [posix.basename(title).replace(/^disk-root-/, ''), posix.basename(title)] : [];
  for (const candidate of candidates) {
    try {
      assertBaseImageName(candidate);
      return candidate;
    } catch {
      // next
    }
  }
  return type === 'iso' ? 'disk-root.iso' : 'disk-root.img';
}

function refuseType(type: string | undefined, what: string): void {
  if (type !== undefined && !RAW_DISK_TYPES.has(type)) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_MANIFEST',
      `${what}: the root disk is ${type}, not a raw image; flashers write raw disks (convert it with qemu-img convert -O raw).`,
      { details: { diskType: type } },
    );
  }
}

/** How {@link chooseEciManifest} finds the image manifest in an index. */
export interface EciManifestChoice {
  client: RegistryClient;
  platform?: string;
  signal?: AbortSignal;
  /** Picks among several usable entries when no platform was asked for (or throws). */
  ambiguous: (index: ImageIndexJson, usable: readonly Descriptor[]) => Descriptor;
}

/**
 * The image manifest an ECI reference names: `top` itself, or the index entry for the platform asked for, else
 * its only entry that is not an attestation. Opening a base and pulling differ only in what several entries mean.
 */
export async function chooseEciManifest(
  ref: ImageReference,
  top: FetchedManifest,
  what: string,
  choice: EciManifestChoice,
): Promise<{ manifest: FetchedManifest; chosen?: Descriptor }> {
  if (!Array.isArray(top.json['manifests'])) return { manifest: top };
  const index = asImageIndex(top.json, what);
  const usable = index.manifests.filter((d) => d.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest');
  const chosen =
    choice.platform !== undefined
      ? selectFromIndex(index, toPlatform(choice.platform), what)
      : usable.length === 1
        ? (usable[0] as Descriptor)
        : choice.ambiguous(index, usable);
  const manifest = await choice.client.getManifest(
    withTarget(ref, { digest: chosen.digest }),
    choice.signal ? { signal: choice.signal } : {},
  );
  return { manifest, chosen };
}

/** The layers of an ECI manifest (`layers`, or an artifact manifest's `blobs`), checked like any manifest's. */
export function layersOf(json: Record<string, unknown>, what: string): Descriptor[] {
  const layers = json['layers'] ?? json['blobs'];
  if (!Array.isArray(layers)) throw new EtchError('ETCH_BAD_MANIFEST', `${what} has no layers.`);
  // Checked like any manifest's layers: a digest this client cannot verify, or a malformed one, is refused.
  return asImageManifest(
    {
      schemaVersion: 2,
      config: json['config'] ?? { mediaType: 'application/octet-stream', digest: `sha256:${'0'.repeat(64)}`, size: 0 },
      layers,
    },
    what,
  ).layers;
}

/**
 * The file's bytes, then `finish`: the rest of the layer must still be read, because only the blob's end
 * lets the registry client check its digest; the image is not complete (nor cached) before that passed.
 */
async function* thenFinish(body: AsyncIterable<Buffer>, finish: () => Promise<void>): AsyncGenerator<Buffer> {
  for await (const chunk of body) yield chunk;
  await finish();
}

/**
 * A file inside a (possibly gzip/zstd compressed) tar layer, as an opened source: `wanted` is its path in
 * the image (undefined for the first file of the layer). Whiteouts are honoured as layers apply them:
 * `.wh.<name>` hides the file, `.wh..wh..opq` in one of its directories hides what lower layers had there.
 */
async function fileInLayer(
  ctx: EciContext,
  ref: ImageReference,
  layer: Descriptor,
  wanted: string | undefined,
  what: string,
): Promise<
  { name: string; size: number; bytes: AsyncIterable<Buffer>; close: () => Promise<void> } | 'whiteout' | undefined
> {
  const blob = ctx.client.openBlob(ref, layer, {
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ...(ctx.onProgress
      ? { onProgress: (p) => ctx.onProgress?.({ phase: 'download', bytes: p.bytes, total: p.total }) }
      : {}),
  });
  const { shared, next, error: blobError } = unclosableBlob(blob);
  const { stream } = await decompressAuto(shared, ctx.signal);
  const entries = extractTar(stream, ctx.signal ? { signal: ctx.signal } : {});
  const stopReading = async () => {
    await entries.return(undefined).catch(() => undefined);
    stream.destroy();
  };
  const close = async () => {
    await stopReading();
    await blob.return(undefined).catch(() => undefined);
  };
  const finish = async () => {
    await stopReading();
    if (blobError() !== undefined) throw toEtchError(blobError(), { signal: ctx.signal });
    for (;;) if ((await next()).done) return;
  };
  let hidden = false;
  try {
    for (;;) {
      const next = await entries.next();
      if (next.done) {
        await close();
        return hidden ? 'whiteout' : undefined;
      }
      const { header, body } = next.value;
      const path = header.name.replace(/^\.?\/+/, '').replace(/\/+$/, '');
      const base = posix.basename(path);
      if (wanted !== undefined && base.startsWith('.wh.')) {
        const dir = posix.dirname(path);
        if (
          base === '.wh..wh..opq'
            ? dir === '.' || wanted.startsWith(`${dir}/`)
            : posix.join(dir, base.slice(4)) === wanted
        )
          hidden = true;
        continue;
      }
      if (header.type !== 'file' || (wanted !== undefined && path !== wanted)) continue;
      return { name: base, size: header.size, bytes: thenFinish(body as AsyncIterable<Buffer>, finish), close };
    }
  } catch (error) {
    await close();
    if (isEtchError(error)) throw error;
    throw new EtchError(
      'ETCH_BAD_ARCHIVE',
      `${what}: the layer ${layer.digest} is not a readable tar: ${(error as Error).message}.`,
      { cause: error },
    );
  }
}

/**
 * Resolves an `eci:` spec to its root disk: version selection over the tags, the manifest (through an index
 * by platform), then the disk by (1) the artifact format (an `application/vnd.lfedge.disk.layer.v1+raw` layer,
 * role `disk-root`), (2) the legacy format (any layer annotated `org.lfedge.eci.role: disk-root`, a tar —
 * gzip or not, as the code and the docs disagree — holding the file), (3) a legacy image whose config label
 * `org.lfedge.eci.artifact.root` names the file's path inside the layers.
 */
export async function planEci(spec: EciSpec, ctx: EciContext): Promise<EciPlan> {
  const call = ctx.signal ? { signal: ctx.signal } : {};
  const repo = spec.repository;
  let tag = spec.tag;
  let resolvedVersion = spec.tag;
  if (spec.selector) {
    const tags = await ctx.client.listTags(repo, call);
    tag = selectTag(tags, spec.selector, `The ECI repository ${repo.fullName}`);
    resolvedVersion = tag;
    ctx.logger.info('resolved ECI version', { repository: repo.fullName, selector: spec.selectorText, tag });
  }
  const reference = withTarget(repo, {
    ...(tag !== undefined ? { tag } : {}),
    ...(spec.digest !== undefined ? { digest: spec.digest } : {}),
  });
  const what = `The ECI ${reference.fullName}${spec.digest ? `@${spec.digest}` : `:${tag}`}`;
  const top = await ctx.client.getManifest(reference, call);
  const { manifest } = await chooseEciManifest(reference, top, what, {
    client: ctx.client,
    ...(ctx.platform !== undefined ? { platform: ctx.platform } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    ambiguous: (index, usable) => {
      throw new EtchError(
        'ETCH_PLATFORM_NOT_FOUND',
        `${what} is an index of ${usable.length} manifests (${offeredPlatforms(index).join(', ') || 'no platforms'}); choose one with a platform.`,
        { details: { offered: offeredPlatforms(index) } },
      );
    },
  });
  if (manifest.json['schemaVersion'] !== 2)
    ctx.logger.debug('ECI manifest without schemaVersion 2 (edge-containers omits it); reading it anyway', {
      reference: what,
    });
  const layers = layersOf(manifest.json, what);
  const base = { reference, resolvedVersion, manifestDigest: manifest.digest };

  const isRoot = (l: Descriptor) => l.annotations?.[EciAnnotation.ROLE] === ROOT_ROLE;
  const artifactDisks = layers.filter((l) => l.mediaType.startsWith(EciMediaType.DISK_PREFIX));
  const artifact =
    artifactDisks.find(isRoot) ??
    (artifactDisks.length === 1 && !artifactDisks[0]?.annotations?.[EciAnnotation.ROLE] ? artifactDisks[0] : undefined);
  if (artifact) {
    const type = diskType(artifact);
    refuseType(type, what);
    const name = diskName(artifact.annotations?.[EciAnnotation.TITLE], type);
    return {
      ...base,
      keyFields: { source: 'eci', format: 'artifact', repository: reference.fullName, blob: artifact.digest },
      open: async () => ({
        name,
        size: artifact.size,
        bytes: ctx.client.openBlob(reference, artifact, {
          ...call,
          ...(ctx.onProgress
            ? { onProgress: (p) => ctx.onProgress?.({ phase: 'download', bytes: p.bytes, total: p.total }) }
            : {}),
        }),
        info: {
          kind: 'eci',
          ...(resolvedVersion ? { resolvedVersion } : {}),
          manifestDigest: manifest.digest,
          ...(artifact.digest.startsWith('sha256:') ? { digest: artifact.digest } : {}),
        },
      }),
    };
  }
  const legacy = layers.find(isRoot);
  if (legacy) {
    const type = diskType(legacy);
    refuseType(type, what);
    const title = legacy.annotations?.[EciAnnotation.TITLE];
    return {
      ...base,
      keyFields: { source: 'eci', format: 'legacy', repository: reference.fullName, blob: legacy.digest },
      open: async () => {
        const file = await fileInLayer(ctx, reference, legacy, undefined, what);
        if (file === undefined || file === 'whiteout')
          throw new EtchError('ETCH_NOT_FOUND', `${what}: the disk-root layer ${legacy.digest} holds no file.`);
        return {
          name: diskName(title ?? file.name, type),
          size: file.size,
          bytes: file.bytes,
          close: file.close,
          info: { kind: 'eci', ...(resolvedVersion ? { resolvedVersion } : {}), manifestDigest: manifest.digest },
        };
      },
    };
  }
  // Legacy images built with docker: the config's label says where the root disk is inside the layers.
  const configType = (manifest.json['config'] as Descriptor | undefined)?.mediaType;
  const configDescriptor = manifest.json['config'] as Descriptor | undefined;
  if (configDescriptor && configType !== EciMediaType.CONFIG && configDescriptor.size > 2) {
    const config = parseImageConfig(
      (await ctx.client.fetchBlob(reference, configDescriptor, call)).toString('utf8'),
      reference.fullName,
    );
    const label = config?.config?.Labels?.[EciAnnotation.ROOT_LABEL];
    const path = typeof label === 'string' ? label : undefined;
    if (path) {
      const wantedPath = path.replace(/^\/+/, '');
      return {
        ...base,
        keyFields: {
          source: 'eci',
          format: 'label',
          repository: reference.fullName,
          manifest: manifest.digest,
          path: wantedPath,
        },
        open: async () => {
          for (const layer of [...layers].reverse()) {
            const file = await fileInLayer(ctx, reference, layer, wantedPath, what);
            if (file === 'whiteout') break;
            if (file) {
              return {
                name: diskName(posix.basename(wantedPath), undefined),
                size: file.size,
                bytes: file.bytes,
                close: file.close,
                info: { kind: 'eci', ...(resolvedVersion ? { resolvedVersion } : {}), manifestDigest: manifest.digest },
              };
            }
          }
          throw new EtchError(
            'ETCH_NOT_FOUND',
            `${what}: its label ${EciAnnotation.ROOT_LABEL}=${path} names a file that is in none of its layers.`,
          );
        },
      };
    }
  }
  throw new EtchError(
    'ETCH_NOT_FOUND',
    `${what} is not an ECI with a root disk: no layer of type ${EciMediaType.DISK_PREFIX}raw, none annotated ${EciAnnotation.ROLE}=${ROOT_ROLE}, and no ${EciAnnotation.ROOT_LABEL} label.`,
    { details: { reference: what } },
  );
}

/** The config of a legacy ECI image, or a typed error when it is not a JSON object (not `null`, not text). */
function parseImageConfig(text: string, what: string): { config?: { Labels?: Record<string, unknown> } } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new EtchError('ETCH_BAD_MANIFEST', `The image config of ${what} is not JSON.`, { cause });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new EtchError('ETCH_BAD_MANIFEST', `The image config of ${what} is not a JSON object.`);
  const config = (value as { config?: unknown }).config;
  if (config !== undefined && config !== null && typeof config !== 'object')
    throw new EtchError('ETCH_BAD_MANIFEST', `The image config of ${what} has a "config" that is not an object.`);
  const labels = (config as { Labels?: unknown } | null)?.Labels;
  if (labels !== undefined && labels !== null && typeof labels !== 'object')
    throw new EtchError('ETCH_BAD_MANIFEST', `The image config of ${what} has "Labels" that are not an object.`);
  return value;
}

/**
 * A blob as a decompressor's input that the decompressor cannot close: readers stop at the end of the file they
 * want, yet the blob must be read to its end afterwards for its digest check (`next`). Read-ahead may reach that
 * end, and the digest check, inside the decompressor, whose error would be lost when it is stopped: `error()`
 * keeps the first one.
 */
export function unclosableBlob(blob: AsyncGenerator<Buffer>): {
  shared: AsyncIterable<Buffer>;
  next: () => Promise<IteratorResult<Buffer>>;
  error: () => unknown;
} {
  let first: unknown;
  const next = async () => {
    try {
      return await blob.next();
    } catch (error) {
      first ??= error;
      throw error;
    }
  };
  const shared: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]: () => ({ next, return: async () => ({ done: true as const, value: undefined }) }),
  };
  return { shared, next, error: () => first };
}
