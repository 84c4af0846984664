// Builds examples/sample/app: a tiny multi-platform container image as an OCI image layout (the format
// `skopeo copy` and `docker buildx --output type=oci` write), so `pnpm demo` can preload an image offline.
// One layer shared by three platforms; deterministic, so the committed files do not change on rebuild.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const out = process.argv[2] ?? 'examples/sample/app';
const sha = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blobs = join(out, 'blobs', 'sha256');
rmSync(out, { recursive: true, force: true });
mkdirSync(blobs, { recursive: true });
const put = (bytes) => {
  writeFileSync(join(blobs, sha(bytes).slice(7)), bytes);
  return { digest: sha(bytes), size: bytes.length };
};

const tree = mkdtempSync(join(tmpdir(), 'etch-sample-app-'));
mkdirSync(join(tree, 'app'), { recursive: true });
writeFileSync(join(tree, 'app', 'hello.txt'), 'Hello from a preloaded container image.\n');
writeFileSync(join(tree, 'app', 'start.sh'), '#!/bin/sh\ncat /app/hello.txt\n', { mode: 0o755 });
execFileSync('tar', [
  '--format=ustar',
  '--sort=name',
  '--mtime=@0',
  '--owner=0',
  '--group=0',
  '--numeric-owner',
  '-C',
  tree,
  '-cf',
  join(tree, 'layer.tar'),
  'app',
]);
const tar = readFileSync(join(tree, 'layer.tar'));
rmSync(tree, { recursive: true });
// gzip without a timestamp or name: the same bytes every time.
const layer = put(gzipSync(tar, { level: 9 }));

const manifests = [];
for (const [architecture, variant] of [['amd64'], ['arm64'], ['arm', 'v7']]) {
  const config = put(
    Buffer.from(
      JSON.stringify({
        architecture,
        ...(variant ? { variant } : {}),
        os: 'linux',
        config: { Cmd: ['/app/start.sh'] },
        rootfs: { type: 'layers', diff_ids: [sha(tar)] },
        history: [{ created_by: 'scripts/make-sample-app.mjs' }],
      }),
    ),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
    }),
  );
  manifests.push({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    ...put(manifest),
    platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
  });
}
const index = put(
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests })),
);
writeFileSync(join(out, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
writeFileSync(
  join(out, 'index.json'),
  JSON.stringify(
    {
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.index.v1+json',
          ...index,
          annotations: {
            'org.opencontainers.image.ref.name': 'v1',
            'io.containerd.image.name': 'docker.io/etch/sample-app:v1',
          },
        },
      ],
    },
    null,
    2,
  ),
);
