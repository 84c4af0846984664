import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { EtchError, ignoreRejection } from '@etch/format';
import { type BufferPool } from '@etch/disk';
import { createEtch, type CreateEtchOptions, type CreateEtchResult } from './create.js';
import { EarlyWriteback } from './early-writeback.js';
import { FileSink } from './file-sink.js';

/** Options for {@link writeEtchFile}: those of {@link createEtch} without `output`, and a buffer pool. */
export type WriteEtchFileOptions = Omit<CreateEtchOptions, 'output'> & {
  /**
   * Give each written chunk back to this pool. Pass the same pool to the base image's reader
   * (`openBaseImage(spec, { bufferPool })`), so copying the base image reuses a few buffers.
   */
  bufferPool?: BufferPool;
};

/** The temporary name used while `path` is being written: hidden, in the same folder (so rename is atomic). */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`);
}

/**
 * Writes a `.etch` to `path` atomically: into a hidden temporary file in the same folder, flushed to disk,
 * then renamed. On any failure or abort the temporary file is removed, so a file at `path` is always complete.
 */
export async function writeEtchFile(path: string, options: WriteEtchFileOptions): Promise<CreateEtchResult> {
  const temporary = temporaryPathFor(path);
  // Images still resolving are observed before anything can fail here (their rejection is reported below).
  if (options.images !== undefined) ignoreRejection(Promise.resolve(options.images), 'reported by createEtch below');
  let output: FileSink | undefined;
  try {
    const { bufferPool, ...etchOptions } = options;
    output = await FileSink.create(temporary, bufferPool);
    const writeback = new EarlyWriteback(temporary, output);
    let result: CreateEtchResult;
    try {
      result = await createEtch({ ...etchOptions, output });
    } finally {
      await writeback.stop();
    }
    // Data must be on disk before the rename makes it visible under its final name.
    const handle = await open(temporary, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
    return result;
  } catch (err) {
    // createEtch destroys it on its own failures, but not when it throws before starting.
    output?.destroy();
    await rm(temporary, { force: true });
    if (err instanceof EtchError) throw err;
    throw new EtchError('ETCH_IO', `Could not write ${path}: ${(err as Error).message}`, {
      cause: err,
      details: { path },
    });
  }
}
