import { join } from 'node:path';
import { putLayoutBlob, writeLayoutManifest } from './oci-layout.js';
import { run } from './run.js';

/** A blob of an artifact: its media type, bytes and annotations as its descriptor carries them. */
export interface ArtifactBlob {
  mediaType: string;
  data: Buffer;
  annotations?: Record<string, string>;
}

/**
 * Writes a one-manifest OCI image layout by hand under `work` (blobs, manifest, index.json) and pushes it to
 * `registryHost/name:tag` with `skopeo copy --preserve-digests`: how tests publish artifacts (ECI disk images)
 * that no image builder makes. Returns the manifest digest.
 */
export async function pushOciArtifact(
  work: string,
  registryHost: string,
  name: string,
  tag: string,
  config: ArtifactBlob,
  layers: ArtifactBlob[],
): Promise<string> {
  const layout = join(work, `layout-${name.replace(/\//g, '_')}-${tag}`);
  const describe = async (blob: ArtifactBlob) => ({
    mediaType: blob.mediaType,
    ...(await putLayoutBlob(layout, blob.data)),
    ...(blob.annotations ? { annotations: blob.annotations } : {}),
  });
  const manifest = await writeLayoutManifest(
    layout,
    await describe(config),
    await Promise.all(layers.map(describe)),
    tag,
  );
  await run('skopeo', [
    'copy',
    '--quiet',
    '--preserve-digests',
    '--dest-tls-verify=false',
    `oci:${layout}:${tag}`,
    `docker://${registryHost}/${name}:${tag}`,
  ]);
  return manifest.digest;
}
