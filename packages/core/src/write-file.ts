import { EtchError, ignoreRejection, isEtchError } from '@etch/format';
import { AtomicFile, EarlyWriteback, type BufferPool } from '@etch/disk';
import { createEtch, type CreateEtchOptions, type CreateEtchResult } from './create.js';
import { FileSink } from './file-sink.js';

/** The temporary name used while `path` is being written: hidden, in the same folder (so rename is atomic). */
export { temporaryPathFor } from '@etch/disk';

/** Options for {@link writeEtchFile}: those of {@link createEtch} without `output`, and a buffer pool. */
export type WriteEtchFileOptions = Omit<CreateEtchOptions, 'output'> & {
  /**
   * Give each written chunk back to this pool. Pass the same pool to the base image's reader
   * (`openBaseImage(spec, { bufferPool })`), so copying the base image reuses a few buffers.
   */
  bufferPool?: BufferPool;
};

/**
 * Writes a `.etch` to `path` atomically: into a hidden temporary file in the same folder, flushed to disk,
 * then renamed. On any failure or abort the temporary file is removed, so a file at `path` is always complete.
 */
export async function writeEtchFile(path: string, options: WriteEtchFileOptions): Promise<CreateEtchResult> {
  // Images still resolving are observed before anything can fail here (their rejection is reported below).
  if (options.images !== undefined) ignoreRejection(Promise.resolve(options.images), 'reported by createEtch below');
  let file: AtomicFile | undefined;
  let output: FileSink | undefined;
  try {
    const { bufferPool, ...etchOptions } = options;
    file = await AtomicFile.create(path);
    output = new FileSink(file.handle, bufferPool);
    const writeback = new EarlyWriteback(file.temporaryPath, output);
    let result: CreateEtchResult;
    try {
      result = await createEtch({ ...etchOptions, ...(bufferPool ? { bufferPool } : {}), output });
    } finally {
      await writeback.stop();
    }
    // Flushed to disk before the rename makes it visible under its final name.
    await file.commit();
    return result;
  } catch (err) {
    // createEtch destroys it on its own failures, but not when it throws before starting.
    output?.destroy();
    await file?.abort();
    if (isEtchError(err)) throw err;
    throw new EtchError('ETCH_IO', `Could not write ${path}: ${(err as Error).message}`, {
      cause: err,
      details: { path },
    });
  }
}
