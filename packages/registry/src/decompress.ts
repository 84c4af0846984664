import type { Readable } from 'node:stream';
import { decompressAuto } from '@etch/tar';

/**
 * A layer's uncompressed tar from its blob, by magic bytes (gzip, zstd or none), as moby decides: media types
 * lie often enough that they are not trusted for this.
 */
export async function decompressLayer(
  blob: AsyncIterable<Uint8Array>,
  signal?: AbortSignal,
): Promise<{ compression: 'none' | 'gzip' | 'zstd'; stream: Readable }> {
  return decompressAuto(blob, signal);
}
