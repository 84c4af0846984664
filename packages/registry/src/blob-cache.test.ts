import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { isEtchError } from '@etch/format';
import { BlobCache } from './blob-cache.js';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir('etch-blob-cache-');
});
afterEach(async () => {
  await dir.remove();
});

/** A source that yields one chunk, then waits for `release` before it fails or ends. */
function heldSource(chunk: Buffer) {
  let release!: (outcome: 'end' | 'fail') => void;
  const outcome = new Promise<'end' | 'fail'>((resolve) => (release = resolve));
  async function* chunks() {
    yield chunk;
    if ((await outcome) === 'fail') throw new Error('the download was aborted');
  }
  return { chunks: chunks(), release };
}

describe('BlobCache.idle', () => {
  it('waits for a write that is under way, so removing the directory after it finds nothing being written', async () => {
    const cache = new BlobCache(dir.path);
    const data = Buffer.from('layer bytes');
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const source = heldSource(data);
    const writing = cache.writeThrough({ digest }, source.chunks);
    await writing.next();

    let idle = false;
    const waiting = cache.idle().then(() => (idle = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(idle, 'idle() resolved while a write was still open').toBe(false);

    source.release('fail');
    await expect(writing.next()).rejects.toThrow('the download was aborted');
    await waiting;
    expect(await readdir(join(dir.path, 'tmp')), 'temporary files left in the cache').toEqual([]);
    expect(await cache.has({ digest, size: data.length }), 'a failed write entered the cache').toBe(false);
  });

  it('resolves at once when nothing is being written', async () => {
    await expect(new BlobCache(dir.path).idle()).resolves.toBeUndefined();
  });
});

describe('BlobCache.writeThrough', () => {
  const blob = () => {
    const data = Buffer.from('layer bytes');
    return { data, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` };
  };
  const errorOf = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (error: unknown) => error,
    );

  it('reports ETCH_ABORTED when the write fails after its caller aborted', async () => {
    const cache = new BlobCache(dir.path);
    const { data, digest } = blob();
    const source = heldSource(data);
    const quitter = new AbortController();
    const writing = cache.writeThrough({ digest }, source.chunks, { signal: quitter.signal });
    await writing.next();
    // The caller gives up and removes the cache; the source, already at its end, ends: the commit fails.
    quitter.abort();
    await rm(join(dir.path, 'blobs'), { recursive: true, force: true });
    source.release('end');
    const error = await errorOf(writing.next());
    expect(isEtchError(error) && error.code, String(error)).toBe('ETCH_ABORTED');
  });

  it('reports why the write stopped even when removing its temporary file fails', async () => {
    const cache = new BlobCache(dir.path);
    const { data, digest } = blob();
    const source = heldSource(data);
    const writing = cache.writeThrough({ digest }, source.chunks);
    await writing.next();
    // A folder where the temporary file was: removing it fails.
    const [name] = await readdir(join(dir.path, 'tmp'));
    await unlink(join(dir.path, 'tmp', name as string));
    await mkdir(join(dir.path, 'tmp', name as string));
    source.release('fail');
    await expect(writing.next()).rejects.toThrow('the download was aborted');
  });
});
