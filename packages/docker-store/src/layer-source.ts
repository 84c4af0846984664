import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EtchError, isEtchError } from '@etch/format';
import { decompressAuto } from '@etch/tar';
import type { StoreLayer } from './store.js';

/** A layer's uncompressed tar, once its compressed blob checked out against the manifest. */
export interface OpenedLayer {
  tar: Readable;
  /** Removes the spooled file. */
  release(): Promise<void>;
}

/** Passes a blob through, hashing it and counting its bytes. */
export async function* hashing(source: AsyncIterable<Uint8Array>, hash: ReturnType<typeof createHash>, onBytes: (n: number) => void, finished: (total: number) => void) {
  let total = 0;
  for await (const chunk of source) {
    hash.update(chunk);
    total += chunk.length;
    onBytes(total);
    yield chunk;
  }
  finished(total);
}

/** The running checks of a layer's compressed blob against its manifest descriptor. */
export function blobChecks(layer: StoreLayer) {
  const hash = createHash('sha256');
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
      const digest = `sha256:${hash.digest('hex')}`;
      if (done && bytes !== layer.size) {
        throw new EtchError('ETCH_DIGEST_MISMATCH', `Layer blob ${layer.digest} is ${bytes} bytes, but the manifest says ${layer.size}. The registry served corrupt data; try again.`, { details: { digest: layer.digest } });
      }
      if (!done || digest !== layer.digest) {
        throw new EtchError('ETCH_DIGEST_MISMATCH', `Layer blob ${layer.digest} hashes to ${digest}${done ? '' : ' (it has bytes after the compressed data)'}. The registry served corrupt data; try again.`, { details: { digest: layer.digest } });
      }
    },
  };
}

/** Any failure reading a layer, as a typed error. */
export function unreadable(layer: StoreLayer, err: unknown): EtchError {
  if (isEtchError(err)) return err;
  return new EtchError('ETCH_BAD_ARCHIVE', `Layer ${layer.digest} could not be read: ${(err as Error).message}`, { cause: err, details: { digest: layer.digest } });
}

/**
 * Decompresses layers one step ahead into a spool directory, so that layer N+1 is read, verified and
 * inflated (zlib works off the main thread) while layer N is converted and written. At most the layer being
 * converted and the next one are on disk; each is removed once converted.
 */
export class LayerSpool {
  private readonly pending = new Map<string, Promise<string>>();

  constructor(
    private readonly dir: string,
    private readonly signal?: AbortSignal,
  ) {}

  /** Starts spooling `layer` (once); progress is the compressed bytes read. */
  start(layer: StoreLayer, onBytes: (n: number) => void): void {
    if (this.pending.has(layer.digest)) return;
    const file = join(this.dir, `${layer.digest.replace(':', '-')}.tar`);
    const task = (async () => {
      const checks = blobChecks(layer);
      try {
        const blob = hashing(await layer.open(this.signal), checks.hash, onBytes, checks.finished);
        const { stream } = await decompressAuto(blob, this.signal);
        await pipeline(stream, createWriteStream(file), this.signal ? { signal: this.signal } : {});
      } catch (err) {
        await rm(file, { force: true });
        throw unreadable(layer, err);
      }
      try {
        checks.check();
      } catch (err) {
        await rm(file, { force: true });
        throw err;
      }
      return file;
    })();
    // Awaited by open(); until then a failure must not count as unhandled.
    task.catch(() => {});
    this.pending.set(layer.digest, task);
  }

  /** The spooled, verified tar of `layer` (spooling it now if it was not started). */
  async open(layer: StoreLayer, onBytes: (n: number) => void): Promise<OpenedLayer> {
    this.start(layer, onBytes);
    const file = await (this.pending.get(layer.digest) as Promise<string>);
    return {
      tar: createReadStream(file, { highWaterMark: 1024 * 1024 }),
      release: async () => {
        this.pending.delete(layer.digest);
        await rm(file, { force: true });
      },
    };
  }

  /** Waits for what is still spooling and removes every spooled file. */
  async close(): Promise<void> {
    await Promise.allSettled(this.pending.values());
    await rm(this.dir, { recursive: true, force: true });
  }
}

