import type { Readable } from 'node:stream';
import {
  EtchError,
  EtchOrderValidator,
  MAX_REQUIREMENTS_SIZE,
  REQUIREMENTS_ENTRY_NAME,
  abortError,
  checkInjectMetadata,
  isEtchError,
  parseRequirements,
  type BaseImageContainer,
  type EtchRequirements,
  type FormatVersion,
  type InjectEntryType,
} from '@etch/format';
import { MAX_BYTES_READ, extractTar, type TarHeader } from './extract.js';
import { decompressAuto } from './sniff.js';
import { MAGIC_LENGTH, detectCompression, type Compression } from './compression.js';
import { truncated } from './byte-source.js';
import { TarFile } from './tar-file.js';

/** The VERSION entry. */
export interface EtchVersionEntry {
  kind: 'version';
  version: FormatVersion;
  /** The compression of the whole `.etch`, detected from its magic bytes. */
  compression: Compression;
  header: TarHeader;
}

/** The base image entry. Read `stream` (exactly `size` bytes) before asking for the next entry. */
export interface EtchBaseImageEntry {
  kind: 'base-image';
  name: string;
  container: BaseImageContainer;
  size: number;
  stream: Readable;
  /**
   * Only when the `.etch` is an uncompressed {@link TarFile}: reads exactly `length` bytes of the image, from
   * `position` on, straight from the file into `buffer` (from its start). Read the image this way or through
   * `stream`, not both; `stream` is then skipped without being read.
   * @throws EtchError `ETCH_BAD_ARCHIVE` when the file ends first.
   */
  readAt?: (buffer: Uint8Array, position: number, length: number) => Promise<void>;
  header: TarHeader;
}

/** An entry to write into a partition. */
export interface EtchInjectEntry {
  kind: 'inject';
  partition: number;
  /** Path relative to the partition root; `''` for the root directory. */
  path: string;
  type: InjectEntryType;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds, plus the milliseconds of `mtimeNanoseconds`. */
  mtime: Date;
  /** The exact part of the second beyond `mtime`'s whole seconds, 0 to 999 999 999. */
  mtimeNanoseconds: number;
  /** Symlink target, exactly as stored (never rewritten or resolved). */
  symlinkTarget?: string;
  /** Hardlink target path, relative to the same partition. */
  hardlinkTarget?: string;
  /** Extended attributes (e.g. `trusted.overlay.opaque`), raw bytes. */
  xattrs: ReadonlyMap<string, Buffer>;
  /** File content, for `type === 'file'`. */
  stream?: Readable;
  /**
   * For `type === 'file'` of at most 1 MiB: its whole content in one buffer, without a stream (cheaper for
   * the many small files of a layer). Use this or `stream`, not both.
   */
  bytes?: () => Promise<Buffer>;
  header: TarHeader;
}

/** An entry from a newer minor version this reader does not know; it is skipped unless you read it. */
export interface EtchUnknownEntry {
  kind: 'unknown';
  name: string;
  stream: Readable;
  header: TarHeader;
}

/** 1.1: what each partition's inject entries need, before the first of them (see `requirements.json`). */
export interface EtchRequirementsEntry {
  kind: 'requirements';
  requirements: EtchRequirements;
  header: TarHeader;
}

export type EtchEntry =
  EtchVersionEntry | EtchBaseImageEntry | EtchRequirementsEntry | EtchInjectEntry | EtchUnknownEntry;

/** Options for {@link readEtch}. */
export interface ReadEtchOptions {
  signal?: AbortSignal;
}

const MAX_VERSION_SIZE = 64;

function wrapStreamError(err: unknown, compression: Compression): EtchError {
  const code = (err as { code?: unknown })?.code;
  const message = (err as Error)?.message ?? String(err);
  if (
    compression !== 'none' &&
    (typeof code !== 'string' ||
      code.startsWith('Z_') ||
      code.startsWith('ZSTD_') ||
      code.startsWith('ERR_ZLIB') ||
      /zstd|frame/i.test(message))
  ) {
    return new EtchError(
      'ETCH_BAD_ARCHIVE',
      `The ${compression}-compressed .etch is corrupt or truncated: ${message}`,
      { cause: err },
    );
  }
  return new EtchError('ETCH_IO', `Reading the .etch failed: ${message}`, { cause: err });
}

/**
 * The decompressed input with its errors typed at the source: an entry's body stream (the base image a
 * flasher pipes to disk) then fails with `ETCH_BAD_ARCHIVE` for corrupt gzip or zstd, as the reader does.
 */
async function* typedErrors(stream: AsyncIterable<Uint8Array>, compression: Compression): AsyncGenerator<Uint8Array> {
  try {
    yield* stream;
  } catch (err) {
    throw isEtchError(err) ? err : wrapStreamError(err, compression);
  }
}

async function readSmall(stream: Readable, limit: number): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts).subarray(0, limit).toString('utf8');
}

/**
 * Reads a `.etch` (plain, gzip or zstd: detected by magic bytes) as a stream of typed, validated entries.
 * Every rule of the format is enforced as entries arrive; the first violation throws a typed
 * {@link EtchError} (`ETCH_BAD_VERSION`, `ETCH_UNSUPPORTED_VERSION`, `ETCH_BAD_ORDER`, `ETCH_BAD_ENTRY`,
 * `ETCH_UNSAFE_PATH`, `ETCH_BAD_ARCHIVE`).
 *
 * Entries with content carry a `stream`; consume it before the next iteration or it is discarded.
 *
 * @example
 * ```ts
 * for await (const entry of readEtch(fs.createReadStream('balena.etch'))) {
 *   if (entry.kind === 'base-image') await pipeline(entry.stream, fs.createWriteStream('disk.img'))
 *   else if (entry.kind === 'inject') console.log(entry.partition, entry.path, entry.type)
 * }
 * ```
 */
export async function* readEtch(
  input: AsyncIterable<Uint8Array>,
  options: ReadEtchOptions = {},
): AsyncGenerator<EtchEntry, void, undefined> {
  const { signal } = options;
  // A stalled input (a pipe nobody writes to) would hold an abort until its next byte: closing it wakes the read.
  const closeInput = () => (input as { destroy?: (error?: Error) => void }).destroy?.(abortError(signal));
  signal?.addEventListener('abort', closeInput, { once: true });
  try {
    yield* readEtchEntries(input, signal);
  } finally {
    signal?.removeEventListener('abort', closeInput);
  }
}

async function* readEtchEntries(
  input: AsyncIterable<Uint8Array>,
  signal: AbortSignal | undefined,
): AsyncGenerator<EtchEntry, void, undefined> {
  const { compression, stream } = await sniff(input, signal).catch((error: unknown) => {
    throw signal?.aborted ? abortError(signal) : error;
  });
  // An uncompressed file is read in place: bodies nobody reads are skipped, the base image can be copied directly.
  const file = stream instanceof TarFile ? stream : undefined;
  const order = new EtchOrderValidator();
  let sawEntry = false;
  try {
    const entries = extractTar(file ?? typedErrors(stream, compression), { signal });
    for await (const tarEntry of entries) {
      const { header, dataOffset } = tarEntry;
      sawEntry = true;
      const entry = order.accept(header);
      switch (entry.kind) {
        case 'version': {
          if (header.size > MAX_VERSION_SIZE) {
            throw new EtchError(
              'ETCH_BAD_VERSION',
              `VERSION is ${header.size} bytes; it should hold only "major.minor".`,
            );
          }
          const version = order.acceptVersion(await readSmall(tarEntry.body, MAX_VERSION_SIZE));
          yield { kind: 'version', version, compression, header };
          break;
        }
        case 'base-image':
          yield {
            kind: 'base-image',
            name: entry.name,
            container: entry.container,
            size: header.size,
            stream: tarEntry.body,
            ...(file ? { readAt: readerAt(file, dataOffset, header.size) } : {}),
            header,
          };
          break;
        case 'inject': {
          const mode = checkInjectMetadata(
            { mode: header.mode, uid: header.uid, gid: header.gid, mtime: header.mtime.getTime() / 1000 },
            header.name,
          );
          const result: EtchInjectEntry = {
            kind: 'inject',
            partition: entry.partition,
            path: entry.path,
            type: entry.type,
            size: header.size,
            mode,
            uid: header.uid,
            gid: header.gid,
            mtime: header.mtime,
            mtimeNanoseconds: header.mtimeNanoseconds,
            xattrs: header.xattrs,
            header,
          };
          if (entry.type === 'symlink') result.symlinkTarget = header.linkname;
          if (entry.hardlinkTarget !== undefined) result.hardlinkTarget = entry.hardlinkTarget;
          if (entry.type === 'file') {
            // The stream is made only if asked for: a small file read through bytes() never needs one.
            Object.defineProperty(result, 'stream', { get: () => tarEntry.body, enumerable: true });
            if (header.size <= MAX_BYTES_READ) result.bytes = () => tarEntry.bytes();
          }
          yield result;
          break;
        }
        case 'requirements': {
          if (header.size > MAX_REQUIREMENTS_SIZE)
            throw new EtchError(
              'ETCH_BAD_ENTRY',
              `${REQUIREMENTS_ENTRY_NAME} is ${header.size} bytes; at most ${MAX_REQUIREMENTS_SIZE} are allowed.`,
            );
          yield {
            kind: 'requirements',
            requirements: parseRequirements(await readSmall(tarEntry.body, MAX_REQUIREMENTS_SIZE)),
            header,
          };
          break;
        }
        case 'unknown':
          yield { kind: 'unknown', name: entry.name, stream: tarEntry.body, header };
          break;
        case 'inject-root':
          break;
      }
    }
    order.finish();
  } catch (err) {
    if (signal?.aborted) throw abortError(signal);
    if (!isEtchError(err)) throw wrapStreamError(err, compression);
    if (!sawEntry && isEtchError(err, 'ETCH_BAD_ARCHIVE')) {
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `This is not a .etch file (no readable tar header at the start): ${err.message}`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    stream.destroy();
  }
}

/** The input's compression and its decompressed bytes; an uncompressed {@link TarFile} is its own. */
async function sniff(
  input: AsyncIterable<Uint8Array>,
  signal: AbortSignal | undefined,
): Promise<{ compression: Compression; stream: Readable | TarFile }> {
  if (input instanceof TarFile) {
    const magic = Buffer.alloc(MAGIC_LENGTH);
    const length = await input.readAt(magic, input.position, MAGIC_LENGTH);
    if (detectCompression(magic.subarray(0, length)) === 'none') return { compression: 'none', stream: input };
  }
  return decompressAuto(input, signal);
}

/** {@link EtchBaseImageEntry.readAt} for `size` bytes at `offset` of `file`. */
function readerAt(file: TarFile, offset: number, size: number): NonNullable<EtchBaseImageEntry['readAt']> {
  return async (buffer, position, length) => {
    if (
      !Number.isSafeInteger(position) ||
      !Number.isSafeInteger(length) ||
      position < 0 ||
      length < 0 ||
      position + length > size ||
      length > buffer.byteLength
    )
      throw new RangeError(`readAt(${position}, ${length}): outside the ${size} bytes of the entry or the buffer`);
    const read = await file.readAt(buffer, offset + position, length);
    if (read < length) throw truncated(offset + position + length);
  };
}
