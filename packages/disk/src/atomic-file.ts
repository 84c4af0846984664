import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { EtchError, ignoreRejection, throwIfAborted, toEtchError } from '@etch/format';
import { isProcessRunning } from './process.js';
import { writeAll } from './write-all.js';

// Host and process in the name: a later run can tell a file that a killed run of this machine left from one
// still being written, here or by another machine sharing the folder.
const hostTag = () => hostname().replace(/[^A-Za-z0-9.-]/g, '_');
const PARTIAL = /^\..+\.(.+)-(\d+)-[0-9a-f]{12}\.partial$/;

/**
 * The hidden name beside `path` that {@link AtomicFile} writes to by default:
 * `.<name>.<host>-<pid>-<random>.partial`.
 */
export function temporaryPathFor(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.${hostTag()}-${process.pid}-${randomBytes(6).toString('hex')}.partial`,
  );
}

/**
 * Removes the temporary files ({@link temporaryPathFor}) in `folder` that runs of this host left when they
 * were killed (`kill -9`, a crash, a power cut): those whose process is gone. Files of live runs, and of
 * other hosts sharing the folder, stay. Resolves to the paths removed.
 */
export async function removeStalePartials(folder: string): Promise<string[]> {
  const host = hostTag();
  const removed: string[] = [];
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    const match = PARTIAL.exec(name);
    if (match === null || match[1] !== host) continue;
    const pid = Number(match[2]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || isProcessRunning(pid)) continue;
    await rm(join(folder, name), { force: true });
    removed.push(join(folder, name));
  }
  return removed;
}

/** The temporary files of this process's {@link AtomicFile}s not yet committed or aborted. */
const openTemporaryFiles = new Set<string>();

/**
 * Removes at once, synchronously, the temporary file of every {@link AtomicFile} of this process not yet
 * committed or aborted, and returns their paths. For a process about to exit without its usual cleanup (a
 * second Ctrl-C): each file would otherwise stay behind, hidden, as large as what was written of it.
 */
export function removeOpenTemporaryFilesSync(): string[] {
  const removed = [...openTemporaryFiles];
  for (const path of removed) rmSync(path, { force: true });
  openTemporaryFiles.clear();
  return removed;
}

/** Options of {@link AtomicFile.create} and {@link writeFileAtomic}. */
export interface AtomicFileOptions {
  /**
   * Where the bytes go until the commit, created exclusively (never an existing file). It must be on the
   * filesystem of the final path, or the rename is not atomic. Default: {@link temporaryPathFor} the path,
   * after {@link removeStalePartials} of its folder.
   */
  temporaryPath?: string;
  /**
   * Flush the data (and then the folder's new entry) to disk at the commit (default `true`). Turn it off only
   * for content that every read verifies again, where a file torn by a crash is caught and removed.
   */
  sync?: boolean;
}

function ioError(cause: unknown, path: string): EtchError {
  return toEtchError(cause, { message: (m) => `Could not write ${path}: ${m}`, details: { path } });
}

/** Flushes a folder's entries (a rename) to disk; some filesystems refuse, and the rename is atomic anyway. */
async function syncDirectory(path: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch {
    // Not every filesystem can fsync a folder (some network and FUSE ones); nothing more can be done.
  } finally {
    await ignoreRejection(handle?.close(), 'a read-only handle of a folder; closing it cannot lose data');
  }
}

/**
 * A file that appears at its final path only complete: written under a temporary name, flushed to disk,
 * then renamed. On failure, or when given up with {@link abort}, the temporary file is removed, so the final
 * path either keeps what it had or holds everything. Errors are `ETCH_IO` naming the final path.
 *
 * @example
 * ```ts
 * const file = await AtomicFile.create('out/disk.img');
 * try {
 *   for await (const chunk of source) await file.write(chunk);
 *   await file.commit();
 * } finally {
 *   await file.abort(); // does nothing after a commit
 * }
 * ```
 */
export class AtomicFile {
  /** Bytes written with {@link write}. */
  bytesWritten = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(
    /** Where {@link commit} puts the file, unless told another path. */
    readonly path: string | undefined,
    /** The file being written. Tools that write by path (mkfs, sfdisk, …) may write here too. */
    readonly temporaryPath: string,
    /** Open for writing at the temporary path; for writers that need the handle itself (`writev`, positions). */
    readonly handle: FileHandle,
    private readonly sync: boolean,
  ) {}

  /** Creates the temporary file for `path`. */
  static create(path: string, options?: AtomicFileOptions): Promise<AtomicFile>;
  /** Creates `temporaryPath` for a file whose final path is only known at {@link commit} (content-addressed stores). */
  static create(options: AtomicFileOptions & { temporaryPath: string }): Promise<AtomicFile>;
  static async create(
    pathOrOptions: string | (AtomicFileOptions & { temporaryPath: string }),
    options: AtomicFileOptions = {},
  ): Promise<AtomicFile> {
    const path = typeof pathOrOptions === 'string' ? pathOrOptions : undefined;
    const settings = typeof pathOrOptions === 'string' ? options : pathOrOptions;
    // With the default name, what killed runs left beside the file goes first (and only theirs).
    if (settings.temporaryPath === undefined) await removeStalePartials(dirname(path as string));
    const temporaryPath = settings.temporaryPath ?? temporaryPathFor(path as string);
    let handle: FileHandle;
    try {
      handle = await open(temporaryPath, 'wx');
    } catch (cause) {
      throw ioError(cause, path ?? temporaryPath);
    }
    openTemporaryFiles.add(temporaryPath);
    return new AtomicFile(path, temporaryPath, handle, settings.sync ?? true);
  }

  /** Appends `data` (all of it: a short write is continued). */
  async write(data: Uint8Array | string): Promise<void> {
    try {
      this.bytesWritten += await writeAll(this.handle, data);
    } catch (cause) {
      throw ioError(cause, this.path ?? this.temporaryPath);
    }
  }

  /**
   * Flushes the file to disk, closes it and renames it to `path` (default: the path it was created for),
   * then flushes the folder. On failure the temporary file is removed and the error thrown.
   */
  async commit(path: string | undefined = this.path): Promise<void> {
    if (this.state !== 'open') throw new EtchError('ETCH_USAGE', `The file was already ${this.state}.`);
    if (path === undefined) throw new EtchError('ETCH_USAGE', 'Commit needs the final path of the file.');
    try {
      if (this.sync) await this.handle.sync();
      await this.handle.close();
      await rename(this.temporaryPath, path);
      this.state = 'committed';
      openTemporaryFiles.delete(this.temporaryPath);
    } catch (cause) {
      await ignoreRejection(this.abort(), 'the commit failure below is the error to report');
      throw ioError(cause, path);
    }
    if (this.sync) await syncDirectory(dirname(path));
  }

  /** Closes and removes the temporary file; does nothing once committed or aborted. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await ignoreRejection(this.handle.close(), 'the file is being thrown away; a failed close loses nothing');
    await rm(this.temporaryPath, { force: true });
    openTemporaryFiles.delete(this.temporaryPath);
  }
}

/**
 * Writes `data` (bytes, text, or chunks as they come) to `path` atomically with an {@link AtomicFile}.
 * Nothing is left behind on failure or abort. Resolves to the number of bytes written.
 * @throws EtchError `ETCH_IO` naming `path`, `ETCH_ABORTED` when `signal` aborts.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string | AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: AtomicFileOptions & { signal?: AbortSignal } = {},
): Promise<number> {
  const { signal, ...fileOptions } = options;
  throwIfAborted(signal);
  const file = await AtomicFile.create(path, fileOptions);
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) {
      await file.write(data);
    } else {
      for await (const chunk of data) {
        throwIfAborted(signal);
        await file.write(chunk);
      }
    }
    throwIfAborted(signal);
    await file.commit();
    return file.bytesWritten;
  } finally {
    await file.abort();
  }
}
