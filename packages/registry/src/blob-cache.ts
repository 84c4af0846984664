import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EtchError, abortError, ignoreRejection, isEtchError } from '@etch/format';
import type { BlobProgress } from './blob-stream.js';
import { assertDigest } from './digest.js';
import { verifiedFileRange } from './local-blob.js';

/**
 * A content-addressed store of blobs and manifests on disk (`<dir>/blobs/<algorithm>/<hex>`), shared by runs
 * and by concurrent callers. Entries appear only complete: each download goes to its own temporary file and
 * is renamed into place after its digest checked out. Reads are verified again, so a file damaged on disk
 * (or torn by a crash before the kernel wrote it) is refused and removed rather than trusted.
 */
export class BlobCache {
  /** Writes under way: {@link idle} waits for them, so their directory can be removed after. */
  private readonly writing = new Set<Promise<void>>();

  constructor(readonly dir: string) {}

  /**
   * Resolves once no write into the cache is under way (each has committed or removed its temporary file):
   * what to await after aborting downloads and before removing the cache's directory.
   */
  async idle(): Promise<void> {
    while (this.writing.size > 0) await Promise.allSettled([...this.writing]);
  }

  /** Where a blob lives in the cache. The digest grammar keeps the path inside `blobs/`. */
  pathOf(digest: string): string {
    assertDigest(digest, 'a cached blob digest');
    const colon = digest.indexOf(':');
    return join(this.dir, 'blobs', digest.slice(0, colon), digest.slice(colon + 1));
  }

  /** True when the blob is cached with the size its descriptor declares. */
  async has(descriptor: { digest: string; size: number }): Promise<boolean> {
    const info = await stat(this.pathOf(descriptor.digest)).catch(() => undefined);
    return info !== undefined && info.isFile() && info.size === descriptor.size;
  }

  /** Streams a cached blob, verified; a damaged entry is removed and the error says so. */
  async *read(
    descriptor: { digest: string; size: number },
    options: { signal?: AbortSignal; onProgress?: (p: BlobProgress) => void } = {},
  ): AsyncGenerator<Buffer> {
    const path = this.pathOf(descriptor.digest);
    try {
      yield* verifiedFileRange(path, 0, descriptor, 'cached blob', options);
    } catch (error) {
      if (isEtchError(error) && (error.code === 'ETCH_DIGEST_MISMATCH' || error.code === 'ETCH_SIZE_MISMATCH')) {
        await rm(path, { force: true });
        throw new EtchError(
          error.code,
          `${error.message} The damaged cache entry was removed; run again to download it.`,
          { cause: error, details: error.details },
        );
      }
      throw error;
    }
  }

  /** Streams a cached blob without hashing it (its size is still checked): only for consumers that check the digest themselves. */
  readUnverified(
    descriptor: { digest: string; size: number },
    options: { signal?: AbortSignal; onProgress?: (p: BlobProgress) => void } = {},
  ): AsyncGenerator<Buffer> {
    return verifiedFileRange(this.pathOf(descriptor.digest), 0, descriptor, 'cached blob', {
      ...options,
      verifyDigest: false,
    });
  }

  /**
   * Passes `chunks` through while writing them to a temporary file; renames it into the cache only when the
   * source ended without error (the source is a verified stream, so its end means the digest matched).
   * Once `signal` aborted, whatever fails (the source, a write, the cleanup) is reported as `ETCH_ABORTED`.
   */
  async *writeThrough(
    descriptor: { digest: string },
    chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<Buffer> {
    let finished!: () => void;
    const writing = new Promise<void>((resolve) => (finished = resolve));
    this.writing.add(writing);
    try {
      yield* this.writeFile(descriptor, chunks);
    } catch (error) {
      throw options.signal?.aborted ? abortError(options.signal) : error;
    } finally {
      this.writing.delete(writing);
      finished();
    }
  }

  private async *writeFile(
    descriptor: { digest: string },
    chunks: AsyncIterable<Buffer> | Iterable<Buffer>,
  ): AsyncGenerator<Buffer> {
    const final = this.pathOf(descriptor.digest);
    await mkdir(join(final, '..'), { recursive: true });
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
    // Loaded when used: a push writes no cache, so it does not load the disk package at start-up.
    const { AtomicFile } = await import('@etch/disk');
    const file = await AtomicFile.create(final, {
      temporaryPath: join(
        this.dir,
        'tmp',
        `${descriptor.digest.replace(':', '-')}.${process.pid}.${randomBytes(4).toString('hex')}`,
      ),
      // No fsync: every read verifies the digest again, so a file torn by a crash is caught and removed,
      // and a pipeline that caches 100 MB of layers does not wait for the disk on each of them.
      sync: false,
    });
    try {
      for await (const chunk of chunks) {
        await file.write(chunk);
        yield chunk;
      }
      await file.commit();
    } catch (error) {
      // The source failed (a digest mismatch among others) or a write did: nothing enters the cache.
      await ignoreRejection(file.abort(), 'a failed cleanup must not hide the error that stopped the write');
      throw error;
    } finally {
      // The consumer stopped: nothing enters the cache either.
      await file.abort();
    }
  }

  /** How many blobs the cache holds and their total size. */
  async usage(): Promise<{ blobs: number; bytes: number }> {
    const total = { blobs: 0, bytes: 0 };
    for (const algorithm of await readdir(join(this.dir, 'blobs')).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.dir, 'blobs', algorithm)).catch(() => [] as string[])) {
        const info = await stat(join(this.dir, 'blobs', algorithm, name)).catch(() => undefined);
        if (info?.isFile()) {
          total.blobs += 1;
          total.bytes += info.size;
        }
      }
    }
    return total;
  }

  /** Removes the cache directory (only it). */
  async clear(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
