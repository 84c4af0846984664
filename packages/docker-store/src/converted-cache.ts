import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import {
  copyFile,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  stat,
  utimes,
  type FileHandle,
} from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { EtchError, ignoreRejection, silentLogger, throwIfAborted, type Logger } from '@etch/format';
import { removeStalePartials, temporaryPathFor, writeAll, writeFileAtomic } from '@etch/disk';
import type { ConvertedLayer } from './layer-converter.js';

/**
 * Bump whenever the converted bytes of a layer change for the same input: what `convertLayer` yields, or how
 * the stage tar encodes it. The package versions join the key too, so a release never reads an older one's
 * entries; this covers changes between releases.
 */
const CONVERSION_FORMAT = 3;
const DEFAULT_MAX_BYTES = 8 * 1024 ** 3;
/** A descriptor holds a gzipped tar-split, a few MB for the largest layers; anything bigger is not ours. */
const MAX_DESCRIPTOR_BYTES = 64 * 1024 * 1024;
const DATA = '.tar';
const DESCRIPTOR = '.json';
/** A cache file is opened without following a symlink or waiting for a FIFO's writer: anything but a file is damage. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Size and CRC-32 (8 hex digits, as `zlib.crc32` computes it) of a cache data file. */
export interface FileChecksum {
  bytes: number;
  crc32: string;
}

/** A CRC-32 value as {@link FileChecksum} records it. */
export const crc32Hex = (crc: number): string => crc.toString(16).padStart(8, '0');

/** What identifies a conversion: every input that changes its bytes. */
export interface ConvertedLayerKey {
  /** The layer's diffID (sha256 of its uncompressed tar). */
  diffId: string;
  /** Where its `diff/` lives in the partition (`docker/overlay2/<cache id>/diff`): names every entry. */
  diffPrefix: string;
}

/** A conversion as the stager keeps it: the stage tar's findings, beside the file. */
export interface CachedConversion {
  converted: ConvertedLayer;
  /** Regular-file bytes among its entries. */
  fileBytes: number;
  /** Bytes the stager counts against its budget for it. */
  spooled: number;
}

/** Options for {@link ConvertedLayerCache}. */
export interface ConvertedLayerCacheOptions {
  /** Most bytes of converted layers kept (default 8 GiB); the least recently used go first. */
  maxBytes?: number;
  logger?: Logger;
}

/** What {@link ConvertedLayerCache.usage} counts. */
export interface ConvertedLayerUsage {
  layers: number;
  bytes: number;
}

interface Descriptor extends Omit<CachedConversion, 'converted'> {
  format: number;
  key: string;
  diffId: string;
  diffPrefix: string;
  size: number;
  entries: number;
  tarSplit: string;
  /** Bytes of the data file and its CRC-32 (hex): checked as the file is read back. */
  bytes: number;
  crc32: string;
}

let versions: string | undefined;
/** The versions of the packages whose code decides the converted bytes. */
function codeVersions(): string {
  if (versions === undefined) {
    const require = createRequire(import.meta.url);
    const own = (require('../package.json') as { version: string }).version;
    const tar = (require('@etch/tar/package.json') as { version: string }).version;
    versions = `docker-store@${own} tar@${tar}`;
  }
  return versions;
}

/** Link when the file system allows it (same disk: no copy), copy otherwise. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw error;
    await copyFile(from, to);
  }
}

/** Bytes read at a time for a checksum, into one buffer reused until the end. */
const CHECKSUM_CHUNK = 512 * 1024;

/**
 * CRC-32 and size of a file, read once: at most `limit + 1` bytes when given (one more tells a longer file),
 * copied to `copyTo` on the way when given (created, never overwritten). One buffer serves the whole read: a
 * warm run checks every cached layer, and a fresh buffer per chunk was hundreds of MiB of garbage that stayed
 * resident until V8 collected it.
 */
async function checksumOf(
  from: string | FileHandle,
  { limit, copyTo, signal }: { limit?: number; copyTo?: string; signal?: AbortSignal } = {},
): Promise<FileChecksum> {
  const input = typeof from === 'string' ? await open(from, 'r') : from;
  let output: FileHandle | undefined;
  try {
    output = copyTo === undefined ? undefined : await open(copyTo, 'wx');
    const buffer = Buffer.allocUnsafeSlow(CHECKSUM_CHUNK);
    const end = limit === undefined ? Number.POSITIVE_INFINITY : limit + 1;
    let crc = 0;
    let bytes = 0;
    while (bytes < end) {
      throwIfAborted(signal);
      const { bytesRead } = await input.read(buffer, 0, Math.min(buffer.length, end - bytes), bytes);
      if (bytesRead === 0) break;
      const chunk = buffer.subarray(0, bytesRead);
      crc = crc32(chunk, crc);
      bytes += bytesRead;
      if (output !== undefined) await writeAll(output, chunk);
    }
    return { bytes, crc32: crc32Hex(crc) };
  } finally {
    await output?.close();
    if (typeof from === 'string') await input.close();
  }
}

/** Opens a cache file for reading; undefined when it is gone, `'symlink'` when it is one. */
async function openEntryFile(path: string): Promise<FileHandle | 'symlink' | undefined> {
  try {
    return await open(path, READ_FLAGS);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') return 'symlink';
    throw error;
  }
}

/**
 * Puts the open data file `handle` (a regular file, `info`) at `file` and reads it once for its checksum, at
 * most `bytes + 1` bytes: linked when on the same disk, else copied from the handle as it is read. Undefined
 * when the entry went away meanwhile; `'replaced'` when the name no longer led to the opened file.
 */
async function placeEntry(
  handle: FileHandle,
  info: Stats,
  data: string,
  file: string,
  bytes: number,
  signal?: AbortSignal,
): Promise<FileChecksum | 'replaced' | undefined> {
  const read = { limit: bytes, ...(signal ? { signal } : {}) };
  try {
    await link(data, file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw error;
    return checksumOf(handle, { ...read, copyTo: file });
  }
  // The name was looked up again by link(): it must still be the file checked above.
  const linked = await lstat(file);
  if (linked.dev !== info.dev || linked.ino !== info.ino) return 'replaced';
  return checksumOf(handle, read);
}

/**
 * Converted layers kept between runs, so a rebuild of the same images neither downloads, decompresses, hashes
 * nor converts them again: `<dir>/<key>.tar` is the stage tar of a layer's `diff/` entries, `<key>.json` what
 * converting it found (diffID, size, tar-split) with the data file's size and CRC-32.
 *
 * The key is a sha256 of the diffID, the `diff/` path prefix (data root and cache ID), the storage driver and
 * the conversion's format and code versions: whatever changes the bytes changes the key. Entries appear
 * whole: the data file is linked under a temporary name and renamed into place, then the descriptor written
 * the same way, so a killed run leaves at most a temporary file (removed by the next write) or a data file
 * without descriptor, which is never read. Concurrent writers of one key (runs of `etch serve`, two `etch
 * create`) write identical bytes, and the last rename wins.
 *
 * A read is checked without decompressing or converting again: the descriptor carries a sha256 of its own
 * text, and the data file must be a regular file of the recorded size, read whole against its CRC-32 before
 * {@link restore} hands it out. A CRC-32, as a file system or a zip checks data against accidental damage:
 * zlib computes it at 5.8 GB/s here against 1.7 GB/s for sha256 with the CPU's SHA instructions, and a warm
 * run reads every cached layer for it (a cold one computes it as it writes). A damaged entry is removed and
 * reported as a miss, so the layer is converted again from its blob. The checksums catch accidental damage
 * only (a torn write, a flipped bit): whoever can write the cache folder can recompute them. What keeps a
 * tampered entry inside its own layer is the stager, which refuses any entry outside the layer's `diff/`
 * (`LayerStage.entries` and `appendTo`).
 */
export class ConvertedLayerCache {
  private readonly maxBytes: number;
  private readonly logger: Logger;

  constructor(
    readonly dir: string,
    options: ConvertedLayerCacheOptions = {},
  ) {
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.logger = options.logger ?? silentLogger;
  }

  /** The entry name of a conversion: hex sha256 of every input that changes its bytes. */
  keyOf({ diffId, diffPrefix }: ConvertedLayerKey): string {
    const fields = { format: CONVERSION_FORMAT, code: codeVersions(), driver: 'overlay2', diffId, diffPrefix };
    return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
  }

  /** Where an entry's data file lives. */
  pathOf(key: ConvertedLayerKey): string {
    return join(this.dir, `${this.keyOf(key)}${DATA}`);
  }

  /**
   * Puts the cached conversion of `key` at `file` (a new path, linked when on the same disk) once its CRC-32
   * checked out; undefined when there is none, or it was damaged (then it is removed, and a warning names it).
   */
  async restore(key: ConvertedLayerKey, file: string, signal?: AbortSignal): Promise<CachedConversion | undefined> {
    throwIfAborted(signal);
    const name = this.keyOf(key);
    const data = join(this.dir, `${name}${DATA}`);
    const descriptorPath = join(this.dir, `${name}${DESCRIPTOR}`);
    const descriptor = await this.readDescriptor(descriptorPath, name, key);
    if (descriptor === undefined) return undefined;
    // Evicted or cleaned meanwhile: convert as if it had never been cached.
    const handle = await openEntryFile(data);
    if (handle === undefined) return undefined;
    if (handle === 'symlink') {
      await this.discard(name, 'it is a symbolic link, not a file', key);
      return undefined;
    }
    let found: FileChecksum | 'replaced' | undefined;
    try {
      const info = await handle.stat();
      // Checked before anything is read, so that no file (a FIFO, a device) can make the read wait or run on.
      if (!info.isFile() || info.size !== descriptor.bytes) {
        const what = info.isFile() ? `it is ${info.size} bytes` : 'it is not a regular file';
        await this.discard(name, `${what}, recorded as ${descriptor.bytes} bytes`, key);
        return undefined;
      }
      found = await placeEntry(handle, info, data, file, descriptor.bytes, signal);
    } catch (error) {
      await rm(file, { force: true });
      throw error;
    } finally {
      await handle.close();
    }
    if (found === undefined) return undefined;
    if (found === 'replaced' || found.bytes !== descriptor.bytes || found.crc32 !== descriptor.crc32) {
      await rm(file, { force: true });
      const why =
        found === 'replaced'
          ? 'it was replaced while being read'
          : `it is ${found.bytes} bytes with CRC-32 ${found.crc32}, recorded as ${descriptor.bytes} bytes with ${descriptor.crc32}`;
      await this.discard(name, why, key);
      return undefined;
    }
    // Its time of last use, for eviction; a failure only makes it look older.
    const now = new Date();
    await ignoreRejection(utimes(descriptorPath, now, now), 'a failed update only makes the entry look older');
    return {
      converted: {
        diffId: descriptor.diffId,
        size: descriptor.size,
        entries: descriptor.entries,
        tarSplit: Buffer.from(descriptor.tarSplit, 'base64'),
      },
      fileBytes: descriptor.fileBytes,
      spooled: descriptor.spooled,
    };
  }

  /**
   * Keeps the finished conversion in `file` (linked when on the same disk: the caller may remove its own
   * name), then evicts the least recently used entries over the size limit. `checksum` is the file's size and
   * CRC-32, when the writer computed it on the way; otherwise the file is read once for it.
   */
  async store(
    key: ConvertedLayerKey,
    file: string,
    conversion: CachedConversion,
    checksum?: FileChecksum,
    signal?: AbortSignal,
  ): Promise<void> {
    throwIfAborted(signal);
    const name = this.keyOf(key);
    const { bytes, crc32: checksumHex } = checksum ?? (await checksumOf(file, signal ? { signal } : {}));
    const data = join(this.dir, `${name}${DATA}`);
    await mkdir(this.dir, { recursive: true });
    const temporary = temporaryPathFor(data);
    try {
      // Inside: a copy that fails part-way (full disk) leaves a partial file to remove.
      await linkOrCopy(file, temporary);
      throwIfAborted(signal);
      await rename(temporary, data);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    const descriptor: Descriptor = {
      format: CONVERSION_FORMAT,
      key: name,
      diffId: conversion.converted.diffId,
      diffPrefix: key.diffPrefix,
      size: conversion.converted.size,
      entries: conversion.converted.entries,
      tarSplit: conversion.converted.tarSplit.toString('base64'),
      fileBytes: conversion.fileBytes,
      spooled: conversion.spooled,
      bytes,
      crc32: checksumHex,
    };
    const text = JSON.stringify(descriptor);
    // No fsync: every read checks the checksums, so a file torn by a crash is caught, removed and converted again.
    await writeFileAtomic(join(this.dir, `${name}${DESCRIPTOR}`), `${text}\n${textHash(text)}\n`, {
      sync: false,
      ...(signal ? { signal } : {}),
    });
    this.logger.debug('converted layer cached', { diffId: key.diffId, bytes });
    await this.prune();
  }

  /** How many converted layers the cache holds and their total size. */
  async usage(): Promise<ConvertedLayerUsage> {
    const entries = await this.list();
    return { layers: entries.length, bytes: entries.reduce((sum, e) => sum + e.bytes, 0) };
  }

  /**
   * Removes the least recently used entries until at most `maxBytes` remain (default: the cache's limit),
   * data files whose descriptor is gone, and temporary files of killed runs of this host.
   */
  async prune(maxBytes = this.maxBytes): Promise<ConvertedLayerUsage> {
    await removeStalePartials(this.dir);
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const described = new Set(names.filter((n) => n.endsWith(DESCRIPTOR)).map((n) => n.slice(0, -DESCRIPTOR.length)));
    for (const name of names) {
      // A data file renamed in by a writer that has not written its descriptor yet looks the same: spare new ones.
      if (!name.endsWith(DATA) || described.has(name.slice(0, -DATA.length))) continue;
      const info = await stat(join(this.dir, name)).catch(() => undefined);
      if (info !== undefined && Date.now() - info.mtimeMs > 60 * 60 * 1000)
        await rm(join(this.dir, name), { force: true });
    }
    const entries = (await this.list()).sort((a, b) => a.usedAt - b.usedAt);
    let total = entries.reduce((sum, e) => sum + e.bytes, 0);
    const removed = { layers: 0, bytes: 0 };
    for (const entry of entries) {
      if (total <= maxBytes) break;
      await this.remove(entry.name);
      total -= entry.bytes;
      removed.layers += 1;
      removed.bytes += entry.bytes;
    }
    if (removed.layers > 0) this.logger.debug('converted layers evicted', removed);
    return removed;
  }

  /** Removes the cache directory (only it). */
  async clear(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  private async list(): Promise<{ name: string; bytes: number; usedAt: number }[]> {
    const out = [];
    for (const file of await readdir(this.dir).catch(() => [] as string[])) {
      if (!file.endsWith(DESCRIPTOR)) continue;
      const name = file.slice(0, -DESCRIPTOR.length);
      const [described, data] = await Promise.all([
        stat(join(this.dir, file)).catch(() => undefined),
        stat(join(this.dir, `${name}${DATA}`)).catch(() => undefined),
      ]);
      if (described === undefined) continue;
      out.push({ name, bytes: described.size + (data?.size ?? 0), usedAt: described.mtimeMs });
    }
    return out;
  }

  private async remove(name: string): Promise<void> {
    // The descriptor first: without it the data file is never read.
    await rm(join(this.dir, `${name}${DESCRIPTOR}`), { force: true });
    await rm(join(this.dir, `${name}${DATA}`), { force: true });
  }

  private async discard(name: string, why: string, key: ConvertedLayerKey): Promise<void> {
    const path = join(this.dir, `${name}${DATA}`);
    const error = new EtchError(
      'ETCH_DIGEST_MISMATCH',
      `The cached conversion of layer ${key.diffId} at ${path} is damaged (${why}); it was removed and the layer is converted again. If this recurs, check the disk and run \`etch cache clean\`.`,
      { details: { digest: key.diffId, path } },
    );
    this.logger.warn(error.message, { code: error.code, digest: key.diffId, path });
    await this.remove(name);
  }

  private async readDescriptor(path: string, name: string, key: ConvertedLayerKey): Promise<Descriptor | undefined> {
    const handle = await openEntryFile(path);
    if (handle === undefined) return undefined;
    let text = '';
    if (handle !== 'symlink') {
      try {
        const info = await handle.stat();
        if (info.isFile() && info.size <= MAX_DESCRIPTOR_BYTES) {
          const buffer = Buffer.alloc(info.size);
          const { bytesRead } = await handle.read(buffer, 0, info.size, 0);
          text = buffer.subarray(0, bytesRead).toString('utf8');
        }
      } catch {
        text = ''; // unreadable: damaged like any other descriptor that does not check out
      } finally {
        await handle.close();
      }
    }
    let descriptor: Descriptor | undefined;
    if (text !== '') {
      const [body, hash] = text.split('\n');
      if (body !== undefined && hash === textHash(body)) {
        try {
          descriptor = JSON.parse(body) as Descriptor;
        } catch {
          descriptor = undefined;
        }
      }
    }
    if (descriptor === undefined || !isDescriptor(descriptor, name, key)) {
      await this.discard(name, 'its descriptor does not check out', key);
      return undefined;
    }
    return descriptor;
  }
}

function textHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** Every field present and bounded, and the entry the one asked for. */
function isDescriptor(d: Descriptor, name: string, key: ConvertedLayerKey): boolean {
  return (
    typeof d === 'object' &&
    d !== null &&
    d.format === CONVERSION_FORMAT &&
    d.key === name &&
    d.diffId === key.diffId &&
    d.diffPrefix === key.diffPrefix &&
    [d.size, d.entries, d.fileBytes, d.spooled, d.bytes].every(isCount) &&
    typeof d.tarSplit === 'string' &&
    typeof d.crc32 === 'string' &&
    /^[0-9a-f]{8}$/.test(d.crc32)
  );
}
