import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A temporary directory removed by `remove()` or `await using`. */
export interface TempDir {
  path: string;
  /** Joins segments below the directory. */
  join(...segments: string[]): string;
  remove(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Creates a fresh directory under the OS temp dir. */
export async function createTempDir(prefix = 'etch-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  const remove = () => rm(path, { recursive: true, force: true });
  return { path, join: (...segments) => join(path, ...segments), remove, [Symbol.asyncDispose]: remove };
}
