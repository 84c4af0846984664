import { createHash } from 'node:crypto';
import { EtchError, isEtchError } from '@etch/format';
import { decompressAuto } from '@etch/tar';
import { convertLayer, type ConvertedLayer, type StoreEntry } from './layer-converter.js';
import type { StoreLayer } from './store.js';

/** Passes a blob through, counting its bytes and hashing them into `hash` (none for a blob its source verified). */
export async function* hashing(
  source: AsyncIterable<Uint8Array>,
  hash: ReturnType<typeof createHash> | undefined,
  onBytes: (n: number) => void,
  finished: (total: number) => void,
) {
  let total = 0;
  for await (const chunk of source) {
    hash?.update(chunk);
    total += chunk.length;
    onBytes(total);
    yield chunk;
  }
  finished(total);
}

/**
 * The running checks of a layer's compressed blob against its manifest descriptor: its size, whether it was
 * read to its end, and its digest unless the layer's source verified that (`layer.verified`).
 */
export function blobChecks(layer: StoreLayer) {
  const hash = layer.verified === true ? undefined : createHash('sha256');
  let done = false;
  let bytes = 0;
  return {
    hash,
    finished: (total: number) => {
      done = true;
      bytes = total;
    },
    /** The manifest's word against the bytes read: size first (the clearer message), then digest. */
    check(): void {
      if (done && bytes !== layer.size) {
        throw new EtchError(
          'ETCH_DIGEST_MISMATCH',
          `Layer blob ${layer.digest} is ${bytes} bytes, but the manifest says ${layer.size}. The registry served corrupt data; try again.`,
          { details: { digest: layer.digest } },
        );
      }
      const digest = hash === undefined ? layer.digest : `sha256:${hash.digest('hex')}`;
      if (!done || digest !== layer.digest) {
        const found = done ? `hashes to ${digest}` : 'has bytes after the compressed data';
        throw new EtchError(
          'ETCH_DIGEST_MISMATCH',
          `Layer blob ${layer.digest} ${found}. The registry served corrupt data; try again.`,
          { details: { digest: layer.digest } },
        );
      }
    },
  };
}

/** Any failure reading a layer, as a typed error. */
export function unreadable(layer: StoreLayer, err: unknown): EtchError {
  if (isEtchError(err)) return err;
  return new EtchError('ETCH_BAD_ARCHIVE', `Layer ${layer.digest} could not be read: ${(err as Error).message}`, {
    cause: err,
    details: { digest: layer.digest },
  });
}

/**
 * A layer's `diff/` entries straight from its compressed blob: the blob is hashed and counted as it is read
 * and checked against the manifest once it ends; `done` gets the conversion's findings only after that check.
 */
export async function* convertBlob(
  layer: StoreLayer,
  diffPrefix: string,
  onBytes: (n: number) => void,
  done: (layer: ConvertedLayer) => void,
  signal?: AbortSignal,
): AsyncGenerator<StoreEntry> {
  const checks = blobChecks(layer);
  let result: ConvertedLayer | undefined;
  try {
    const blob = hashing(await layer.open(signal), checks.hash, onBytes, checks.finished);
    const { stream } = await decompressAuto(blob, signal);
    yield* convertLayer(stream, diffPrefix, (r) => (result = r), signal);
  } catch (err) {
    throw unreadable(layer, err);
  }
  checks.check();
  done(result as ConvertedLayer);
}
