import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { EtchError, ignoreRejection, silentLogger, type Logger } from '@etch/format';
import { AtomicFile, isProcessRunning, writeFileAtomic } from '@etch/disk';
import type { BaseMode, SourceKind } from './types.js';
import { sha256Checked } from './verify.js';

/** One complete cache entry: the exact bytes a spec delivered, and where they came from. */
export interface CacheEntry {
  /** Hex sha256 of the key fields; the entry's file name. */
  key: string;
  /** Everything that decides the bytes: source (URL or registry blob), mode, zip entry… */
  keyFields: Record<string, string>;
  /** The spec that stored it (credentials removed). */
  spec: string;
  kind: SourceKind;
  mode: BaseMode;
  /** Archive name of the base image. */
  name: string;
  size: number;
  /** Hex sha256 of the bytes, checked on every reuse. */
  sha256: string;
  etag?: string;
  lastModified?: string;
  resolvedVersion?: string;
  manifestDigest?: string;
  /** ISO date the entry was written. */
  storedAt: string;
  /** The data file, relative to the cache directory (`blobs/<sha256>`). */
  file: string;
}

/** What {@link ImageCache.store} records besides the bytes. */
export type CacheRecord = Omit<CacheEntry, 'key' | 'sha256' | 'storedAt' | 'file'>;

const ENTRIES = 'entries';
const BLOBS = 'blobs';
const TMP = 'tmp';
const TAG = 'CACHEDIR.TAG';
const TAG_TEXT =
  'Signature: 8a477f597d28d172789f06886806bc55\n# This directory holds the base image cache of etch (@etch/baseimage).\n# Remove it with `etch cache clean`.\n';

/** `$XDG_CACHE_HOME/etch`, else `~/.cache/etch`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_CACHE_HOME'];
  return xdg && xdg.startsWith('/') ? join(xdg, 'etch') : join(env['HOME'] || homedir(), '.cache', 'etch');
}

/** The key of a set of fields: sha256 of their sorted JSON. */
export function cacheKey(fields: Record<string, string>): string {
  const sorted = Object.fromEntries(Object.entries(fields).sort(([a], [b]) => a.localeCompare(b)));
  return createHash('sha256').update(JSON.stringify(sorted)).digest('hex');
}

/**
 * The base image cache: `entries/<key>.json` describes `blobs/<sha256>`. Writers stream into a unique
 * `tmp/<pid>-<uuid>` file, fsync it, rename it into `blobs/`, then write the entry the same way, so a reader
 * sees a complete entry or none, concurrent writers never share a file, and a killed writer leaves only a temp
 * file that the next writer removes. Every reuse re-checks size (up front) and sha256 (as the bytes stream).
 */
export class ImageCache {
  readonly dir: string;
  private readonly logger: Logger;

  constructor(dir: string = defaultCacheDir(), logger: Logger = silentLogger) {
    this.dir = dir;
    this.logger = logger;
  }

  private entryPath(key: string): string {
    return join(this.dir, ENTRIES, `${key}.json`);
  }

  private async readEntry(path: string): Promise<CacheEntry | undefined> {
    try {
      const entry = JSON.parse(await readFile(path, 'utf8')) as CacheEntry;
      if (
        typeof entry.sha256 !== 'string' ||
        !/^[0-9a-f]{64}$/.test(entry.sha256) ||
        typeof entry.size !== 'number' ||
        entry.file !== `${BLOBS}/${entry.sha256}`
      )
        return undefined;
      return entry;
    } catch {
      return undefined;
    }
  }

  /** The complete entry for `key` whose data file has the recorded size, or undefined. */
  async get(key: string): Promise<CacheEntry | undefined> {
    const entry = await this.readEntry(this.entryPath(key));
    if (entry === undefined) return undefined;
    try {
      const info = await stat(join(this.dir, entry.file));
      if (info.size === entry.size) return entry;
      this.logger.warn('cache entry has the wrong size; ignoring it', { key, expected: entry.size, actual: info.size });
    } catch {
      this.logger.warn('cache entry lost its data file; ignoring it', { key });
    }
    return undefined;
  }

  /** Every complete entry, newest first. */
  async list(): Promise<CacheEntry[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, ENTRIES));
    } catch {
      return [];
    }
    const entries: CacheEntry[] = [];
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const entry = await this.get(name.slice(0, -5));
      if (entry) entries.push(entry);
    }
    return entries.sort((a, b) => b.storedAt.localeCompare(a.storedAt));
  }

  /** The newest complete entry stored for `spec` in `mode` (what `offline` uses when the spec needs the network to resolve). */
  async findBySpec(spec: string, mode: BaseMode): Promise<CacheEntry | undefined> {
    return (await this.list()).find((entry) => entry.spec === spec && entry.mode === mode);
  }

  /** The bytes of an entry, sha256-checked as they stream; a mismatch removes the entry and fails with `ETCH_DIGEST_MISMATCH`. */
  read(entry: CacheEntry): AsyncIterable<Buffer> {
    const path = join(this.dir, entry.file);
    return sha256Checked(
      createReadStream(path),
      entry.sha256,
      `The cached copy of ${entry.spec} (${path})`,
      async () => {
        this.logger.warn('cache entry is corrupt; removing it', { key: entry.key });
        await this.remove(entry);
      },
    );
  }

  private async remove(entry: CacheEntry): Promise<void> {
    await unlink(this.entryPath(entry.key)).catch(() => undefined);
    const users = (await this.list()).filter((other) => other.file === entry.file);
    if (users.length === 0) await unlink(join(this.dir, entry.file)).catch(() => undefined);
  }

  private async prepare(): Promise<void> {
    await mkdir(join(this.dir, TMP), { recursive: true });
    await mkdir(join(this.dir, BLOBS), { recursive: true });
    await mkdir(join(this.dir, ENTRIES), { recursive: true });
    await writeFile(join(this.dir, TAG), TAG_TEXT, { flag: 'wx' }).catch(() => undefined);
    // Temp files of writers that died (killed mid-download) are named after their pid.
    for (const name of await readdir(join(this.dir, TMP)).catch(() => [] as string[])) {
      const pid = Number(name.split('-')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isProcessRunning(pid)) {
        await rm(join(this.dir, TMP, name), { force: true }).catch(() => undefined);
      }
    }
  }

  /**
   * Passes `input` through while writing it to the cache. The entry is committed (fsync, atomic renames) only
   * when `input` ends normally, before this iteration ends; if `input` fails or the consumer stops, the temp
   * file is removed. A cache that cannot be written (full disk, read-only) costs a warning, never the stream.
   */
  async *store(input: AsyncIterable<Buffer>, record: CacheRecord): AsyncGenerator<Buffer> {
    const key = cacheKey(record.keyFields);
    const tmp = (suffix = '') => join(this.dir, TMP, `${process.pid}-${randomUUID()}${suffix}`);
    let file: AtomicFile | undefined;
    try {
      await this.prepare();
      // Its final name is the sha256 of what it holds, known only at the end.
      file = await AtomicFile.create({ temporaryPath: tmp() });
    } catch (error) {
      this.logger.warn('cannot write the cache; continuing without it', {
        dir: this.dir,
        error: (error as Error).message,
      });
      file = undefined;
    }
    const hash = createHash('sha256');
    try {
      for await (const chunk of input) {
        if (file) {
          try {
            await file.write(chunk);
            hash.update(chunk);
          } catch (error) {
            this.logger.warn('writing the cache failed; continuing without it', {
              dir: this.dir,
              error: (error as Error).message,
            });
            await ignoreRejection(file.abort(), 'a temp file left behind is removed by the next writer');
            file = undefined;
          }
        }
        yield chunk;
      }
      if (file) {
        try {
          const sha256 = hash.digest('hex');
          const blob = `${BLOBS}/${sha256}`;
          const previous = await this.readEntry(this.entryPath(key));
          const committing = file;
          file = undefined;
          await committing.commit(join(this.dir, blob));
          const entry: CacheEntry = { ...record, key, sha256, file: blob, storedAt: new Date().toISOString() };
          await writeFileAtomic(this.entryPath(key), `${JSON.stringify(entry, null, 2)}\n`, {
            temporaryPath: tmp('.json'),
          });
          if (previous && previous.file !== blob) {
            const users = (await this.list()).filter((other) => other.file === previous.file);
            if (users.length === 0) await unlink(join(this.dir, previous.file)).catch(() => undefined);
          }
          this.logger.debug('cached base image', { key, name: record.name, size: record.size });
        } catch (error) {
          this.logger.warn('committing the cache entry failed; continuing without it', {
            dir: this.dir,
            error: (error as Error).message,
          });
        }
      }
    } finally {
      // The input failed or the consumer stopped: the temp file goes.
      if (file) await ignoreRejection(file.abort(), 'a temp file left behind is removed by the next writer');
    }
  }

  /**
   * Removes what this cache wrote (`entries/`, `blobs/`, `tmp/`, `CACHEDIR.TAG`) and the directory if that
   * leaves it empty — never anything else, even when `dir` was pointed at a shared folder.
   */
  async clean(): Promise<{ entries: number; bytes: number }> {
    const entries = await this.list();
    const bytes = entries.reduce((sum, e) => sum + e.size, 0);
    try {
      for (const part of [ENTRIES, BLOBS, TMP, TAG]) await rm(join(this.dir, part), { recursive: true, force: true });
      await rmdir(this.dir).catch(() => undefined);
    } catch (cause) {
      throw new EtchError('ETCH_IO', `Cleaning the cache ${this.dir} failed: ${(cause as Error).message}.`, {
        cause,
        details: { path: this.dir },
      });
    }
    return { entries: entries.length, bytes };
  }
}
