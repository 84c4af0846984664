import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A blob's descriptor fields. */
export interface LayoutBlob {
  digest: string;
  size: number;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * Writes `bytes` (or moves the file at `path`, which may be large: it is hashed as a stream) into an OCI
 * layout's blobs by digest.
 */
export async function putLayoutBlob(layout: string, content: Buffer | { path: string }): Promise<LayoutBlob> {
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  if (Buffer.isBuffer(content)) {
    const digest = `sha256:${createHash('sha256').update(content).digest('hex')}`;
    await writeFile(join(blobs, digest.slice(7)), content);
    return { digest, size: content.length };
  }
  const digest = await sha256File(content.path);
  const size = (await stat(content.path)).size;
  await rename(content.path, join(blobs, digest.slice(7)));
  return { digest, size };
}

/**
 * Config, manifest, `index.json` and `oci-layout` around uncompressed tar layers already in `layout`: one
 * linux/amd64 image tagged `tag` (default `v1`). Returns the layout's path.
 */
export async function finishOciLayout(layout: string, layers: readonly LayoutBlob[], tag = 'v1'): Promise<string> {
  const config = await putLayoutBlob(
    layout,
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: {},
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      }),
    ),
  );
  await writeLayoutManifest(
    layout,
    { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
    tag,
  );
  return layout;
}

/**
 * Stores an OCI image manifest of `config` and `layers` (descriptors of blobs already in the layout) and names
 * it `tag` in `index.json`. Returns the manifest's blob.
 */
export async function writeLayoutManifest(
  layout: string,
  config: LayoutBlob & { mediaType: string },
  layers: readonly (LayoutBlob & { mediaType: string })[],
  tag: string,
): Promise<LayoutBlob> {
  const manifest = await putLayoutBlob(
    layout,
    Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers }),
    ),
  );
  await writeLayoutIndex(layout, manifest, tag);
  return manifest;
}

/** `oci-layout` and an `index.json` naming one image manifest, stored in the layout already, by `tag`. */
export async function writeLayoutIndex(layout: string, manifest: LayoutBlob, tag: string): Promise<void> {
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}
