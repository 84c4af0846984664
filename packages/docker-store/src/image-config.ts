import { createHash } from 'node:crypto';
import { EtchError } from '@etch/format';
import { assertDigest } from './ids.js';
import type { StoreImage } from './store.js';

interface ImageConfigLike {
  os?: string;
  rootfs?: { type?: string; diff_ids?: unknown };
  history?: { empty_layer?: boolean }[];
}

/** The image ID and diffIDs of an image, its config checked against its digest and what the engine accepts. */
export function parseConfig(image: StoreImage, index: number): { imageId: string; diffIds: string[] } {
  const imageId = `sha256:${createHash('sha256').update(image.config).digest('hex')}`;
  if (image.configDigest !== undefined && image.configDigest !== imageId) {
    throw new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `The config of image ${index + 1} hashes to ${imageId}, not ${image.configDigest}. Pull it again.`,
      {
        details: { digest: image.configDigest },
      },
    );
  }
  let config: ImageConfigLike;
  try {
    config = JSON.parse(image.config.toString('utf8')) as ImageConfigLike;
  } catch (cause) {
    throw new EtchError('ETCH_BAD_ENTRY', `The config ${imageId} is not JSON.`, { cause });
  }
  if (config.os !== undefined && config.os !== '' && config.os !== 'linux') {
    throw new EtchError(
      'ETCH_PLATFORM_NOT_FOUND',
      `Image ${imageId} is for ${config.os}; the engine on a balenaOS device only runs linux images.`,
    );
  }
  const diffIds = config.rootfs?.diff_ids;
  if (config.rootfs?.type !== 'layers' || !Array.isArray(diffIds)) {
    throw new EtchError('ETCH_BAD_ENTRY', `The config ${imageId} has no rootfs of type "layers".`);
  }
  for (const id of diffIds) assertDigest(String(id), 'a diff_id');
  if (diffIds.length !== image.layers.length) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `Image ${imageId} lists ${image.layers.length} layers but its config has ${diffIds.length} diff_ids.`,
    );
  }
  const nonEmpty = (config.history ?? []).filter((h) => !h.empty_layer).length;
  if (nonEmpty > diffIds.length) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `Image ${imageId} has more non-empty history entries than layers; the engine refuses it.`,
    );
  }
  return { imageId, diffIds: diffIds as string[] };
}
