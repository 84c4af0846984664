import type { Readable } from 'node:stream';

/**
 * A layer's uncompressed tar from its blob, by magic bytes (gzip, zstd or none), as moby decides: media types
 * lie often enough that they are not trusted for this.
 */
export async function decompressLayer(
  blob: AsyncIterable<Uint8Array>,
  signal?: AbortSignal,
): Promise<{ compression: 'none' | 'gzip' | 'zstd'; stream: Readable }> {
  // Loaded when used: a push never decompresses, so it does not pay for loading the tar package.
  const { decompressAuto } = await import('@etch/tar');
  return decompressAuto(blob, signal);
}
