/**
 * Paths and modes of moby's overlay2 data root (20.10 / balena-engine), relative to the data root.
 * See the package README for where each comes from.
 */
export const DIR_MODES: ReadonlyArray<readonly [string, number]> = [
  ['', 0o710],
  ['overlay2', 0o710],
  ['overlay2/l', 0o700],
  ['image', 0o700],
  ['image/overlay2', 0o700],
  ['image/overlay2/layerdb', 0o700],
  ['image/overlay2/layerdb/sha256', 0o755],
  ['image/overlay2/imagedb', 0o700],
  ['image/overlay2/imagedb/content', 0o700],
  ['image/overlay2/imagedb/content/sha256', 0o700],
  ['image/overlay2/distribution', 0o700],
  ['image/overlay2/distribution/diffid-by-digest', 0o755],
  ['image/overlay2/distribution/diffid-by-digest/sha256', 0o755],
  ['image/overlay2/distribution/v2metadata-by-diffid', 0o755],
  ['image/overlay2/distribution/v2metadata-by-diffid/sha256', 0o755],
];

export const paths = {
  layerDir: (cacheId: string) => `overlay2/${cacheId}`,
  diff: (cacheId: string) => `overlay2/${cacheId}/diff`,
  link: (linkId: string) => `overlay2/l/${linkId}`,
  layerdb: (chainHex: string) => `image/overlay2/layerdb/sha256/${chainHex}`,
  imageConfig: (idHex: string) => `image/overlay2/imagedb/content/sha256/${idHex}`,
  repositories: 'image/overlay2/repositories.json',
  diffIdByDigest: (blobHex: string) => `image/overlay2/distribution/diffid-by-digest/sha256/${blobHex}`,
  v2Metadata: (diffIdHex: string) => `image/overlay2/distribution/v2metadata-by-diffid/sha256/${diffIdHex}`,
} as const;
