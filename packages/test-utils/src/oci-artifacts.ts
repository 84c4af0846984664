import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './run.js';

/** A blob of an artifact: its media type, bytes and annotations as its descriptor carries them. */
export interface ArtifactBlob {
  mediaType: string;
  data: Buffer;
  annotations?: Record<string, string>;
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

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
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const write = async (data: Buffer) => {
    const digest = sha(data);
    await writeFile(join(layout, 'blobs', 'sha256', digest), data);
    return `sha256:${digest}`;
  };
  const describe = async (blob: ArtifactBlob) => ({
    mediaType: blob.mediaType,
    digest: await write(blob.data),
    size: blob.data.length,
    ...(blob.annotations ? { annotations: blob.annotations } : {}),
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: await describe(config),
      layers: await Promise.all(layers.map(describe)),
    }),
  );
  const manifestDigest = await write(manifest);
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  await run('skopeo', [
    'copy',
    '--quiet',
    '--preserve-digests',
    '--dest-tls-verify=false',
    `oci:${layout}:${tag}`,
    `docker://${registryHost}/${name}:${tag}`,
  ]);
  return manifestDigest;
}
