import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  EtchError,
  abortError,
  assertFlashable,
  checkInjectMetadata,
  isEtchError,
  normalizeRelativePath,
  parseInjectName,
  type TarEntryType,
} from '@etch/format';
import { encodePaxHeaderBlock, BLOCK_SIZE } from './header.js';
import { encodePaxRecords, XATTR_PREFIX } from './pax.js';
import { maxOctal } from './numbers.js';
import { formatPaxTime } from './pax-time.js';
import type { TarPack } from './pack.js';

/** The header of an entry to write. Modes are numbers (write them in octal: `0o644`). */
export interface EntryHeader {
  /** Archive path, relative; the packer's prefix is prepended. */
  name: string;
  /** Defaults to `'file'`. */
  type?: TarEntryType;
  /** Required when content is a stream; derived from a Buffer or string. */
  size?: number;
  /** Permission bits, 0 to 0o7777 (default 0o644 for files, 0o755 for directories). */
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Defaults to the packer's `mtime` option, else now. Whole seconds unless `mtimeNanoseconds` is given. */
  mtime?: Date;
  /**
   * The part of the second beyond `mtime`'s whole seconds, 0 to 999 999 999 ns (`mtime`'s milliseconds are
   * then ignored). Written as a PAX `mtime` record with a fraction, as GNU tar does; omitted when 0.
   */
  mtimeNanoseconds?: number;
  /** Symlink target (kept as is) or hardlink target (an archive path; the prefix is prepended). */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as `SCHILY.xattr.<name>` PAX records (binary values kept exactly). */
  xattrs?: Record<string, Buffer | string> | ReadonlyMap<string, Buffer>;
  /**
   * Extra PAX records to preserve. `path`, `linkpath` and `size` are dropped: they would override the
   * name this packer wrote.
   */
  pax?: Record<string, Buffer | string> | ReadonlyMap<string, Buffer>;
}

/** Entry content: bytes, text, or a stream of exactly `header.size` bytes. */
export type EntryContent = Buffer | Uint8Array | string | Readable | AsyncIterable<Uint8Array>;

/** Options for {@link promisePacker}. */
export interface PackerOptions {
  /** Cancels the entry being written and destroys the pack. */
  signal?: AbortSignal;
  /** The mtime of entries whose header has none (default: now). Give a fixed one for reproducible output. */
  mtime?: Date;
}

/** Writes one entry; resolves once it is fully in the pack. Calls are queued, never interleaved. */
export type EntryWriter = (header: EntryHeader, content?: EntryContent) => Promise<void>;

const OVERRIDDEN_PAX = new Set(['path', 'linkpath', 'size']);
const queues = new WeakMap<TarPack, Promise<unknown>>();

function fitsUstar(name: string, linkname: string | undefined, isDirectory: boolean): boolean {
  // tar-stream appends '/' to directory names before encoding.
  let rest = isDirectory && !name.endsWith('/') ? `${name}/` : name;
  if (!/^[\x20-\x7e]*$/.test(rest) || (linkname !== undefined && !/^[\x20-\x7e]*$/.test(linkname))) return false;
  if (linkname !== undefined && linkname.length > 100) return false;
  let prefix = '';
  while (rest.length > 100) {
    const slash = rest.indexOf('/');
    if (slash === -1) return false;
    prefix += prefix ? `/${rest.slice(0, slash)}` : rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  }
  return prefix.length <= 155;
}

/** An ASCII name short enough for a ustar header; the PAX `path` record carries the real one. */
function placeholderName(name: string, isDirectory: boolean): string {
  const base = name.replace(/\/+$/, '').split('/').pop() ?? 'entry';
  const ascii = base.replace(/[^\x20-\x7e]/g, '_');
  return ascii.slice(0, isDirectory ? 98 : 99) || 'entry';
}

function toBuffer(value: Buffer | string): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

function entriesOf(
  record: Record<string, Buffer | string> | ReadonlyMap<string, Buffer> | undefined,
): [string, Buffer][] {
  if (record === undefined) return [];
  if (record instanceof Map) return [...(record as ReadonlyMap<string, Buffer>).entries()];
  return Object.entries(record as Record<string, Buffer | string>).map(([k, v]) => [k, toBuffer(v)]);
}

function badHeader(name: string, message: string): EtchError {
  return new EtchError('ETCH_BAD_ENTRY', `Entry ${JSON.stringify(name)}: ${message}`, { details: { entryName: name } });
}

function checkInteger(name: string, field: string, value: number | undefined, max: number): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < 0 || value > max)
    throw badHeader(name, `${field} must be an integer from 0 to ${max}, got ${value}.`);
}

interface PreparedEntry {
  header: Record<string, unknown> & { name: string; type: TarEntryType; size: number };
  paxBlock: Buffer | undefined;
}

function prepare(
  input: EntryHeader,
  prefix: string | undefined,
  contentSize: number | undefined,
  defaultMtime: Date | undefined,
): PreparedEntry {
  const type: TarEntryType = input.type ?? 'file';
  const relative = normalizeRelativePath(input.name, input.name);
  if (relative === '' && !prefix) throw badHeader(input.name, 'the name is empty.');
  const isDirectory = type === 'directory';
  const joined = prefix ? (relative === '' ? prefix : `${prefix}/${relative}`) : relative;
  // Directories end in '/', as GNU tar writes them; old readers rely on it.
  const name = isDirectory ? `${joined}/` : joined;
  const hasData = type === 'file' || type === 'contiguous-file';
  checkInteger(input.name, 'mode', input.mode, 0o7777);
  checkInteger(input.name, 'uid', input.uid, Number.MAX_SAFE_INTEGER);
  checkInteger(input.name, 'gid', input.gid, Number.MAX_SAFE_INTEGER);
  checkInteger(input.name, 'devmajor', input.devmajor, 0o7777777);
  checkInteger(input.name, 'devminor', input.devminor, 0o7777777);
  const size = hasData ? (input.size ?? contentSize) : 0;
  if (size === undefined)
    throw badHeader(input.name, 'a streamed file needs header.size (the tar header precedes the data).');
  checkInteger(input.name, 'size', size, Number.MAX_SAFE_INTEGER);
  if (contentSize !== undefined && input.size !== undefined && contentSize !== input.size) {
    throw new EtchError(
      'ETCH_SIZE_MISMATCH',
      `Entry ${JSON.stringify(input.name)} declares ${input.size} bytes but its content has ${contentSize}.`,
      {
        details: { entryName: input.name },
      },
    );
  }
  if (!hasData && contentSize !== undefined && contentSize > 0)
    throw badHeader(input.name, `a ${type} entry cannot carry data.`);
  let linkname = input.linkname;
  if (type === 'link') {
    if (!linkname) throw badHeader(input.name, 'a hardlink needs linkname.');
    const target = normalizeRelativePath(linkname, input.name);
    linkname = prefix ? `${prefix}/${target}` : target;
  } else if (type === 'symlink') {
    if (!linkname || linkname.includes('\0')) throw badHeader(input.name, 'a symlink needs a target.');
  } else if (linkname) {
    throw badHeader(input.name, `a ${type} entry has no linkname.`);
  }
  const mtime = input.mtime ?? defaultMtime ?? new Date();
  const mtimeSeconds = Math.floor(mtime.getTime() / 1000);
  // An inject entry must be one the flasher can write: the writer refuses what `etch apply` would.
  const inject = parseInjectName(joined);
  if (inject !== undefined && inject.path !== '') {
    assertFlashable({
      path: inject.path,
      entryName: joined,
      ...(type === 'symlink' && linkname !== undefined ? { symlinkTarget: linkname } : {}),
      xattrNames: entriesOf(input.xattrs).map(([key]) => key),
    });
    checkInjectMetadata(
      { mode: input.mode ?? 0, uid: input.uid ?? 0, gid: input.gid ?? 0, mtime: mtimeSeconds },
      joined,
    );
  }
  const nanoseconds = input.mtimeNanoseconds ?? 0;
  if (!Number.isSafeInteger(nanoseconds) || nanoseconds < 0 || nanoseconds > 999_999_999)
    throw badHeader(input.name, `mtimeNanoseconds must be an integer from 0 to 999999999, got ${nanoseconds}.`);

  const records: [string, Buffer][] = [];
  const ustarName = fitsUstar(name, linkname, isDirectory);
  if (!ustarName) {
    records.push(['path', Buffer.from(name, 'utf8')]);
    if (linkname !== undefined) records.push(['linkpath', Buffer.from(linkname, 'utf8')]);
  }
  // tar-stream writes uid/gid in 6 octal digits and clamps larger values; PAX carries them exactly.
  if ((input.uid ?? 0) > maxOctal(7)) records.push(['uid', Buffer.from(String(input.uid))]);
  if ((input.gid ?? 0) > maxOctal(7)) records.push(['gid', Buffer.from(String(input.gid))]);
  if (mtimeSeconds < 0 || mtimeSeconds > maxOctal(12) || nanoseconds > 0)
    records.push(['mtime', Buffer.from(formatPaxTime(mtimeSeconds, nanoseconds))]);
  for (const [key, value] of entriesOf(input.pax)) if (!OVERRIDDEN_PAX.has(key)) records.push([key, value]);
  for (const [key, value] of entriesOf(input.xattrs)) {
    if (key === '' || key.includes('=') || key.includes('\0'))
      throw badHeader(input.name, `invalid xattr name ${JSON.stringify(key)}.`);
    records.push([`${XATTR_PREFIX}${key}`, value]);
  }

  let paxBlock: Buffer | undefined;
  if (records.length > 0) {
    const data = encodePaxRecords(records);
    const padding = (BLOCK_SIZE - (data.length % BLOCK_SIZE)) % BLOCK_SIZE;
    paxBlock = Buffer.concat([
      encodePaxHeaderBlock(data.length, Math.max(0, mtimeSeconds)),
      data,
      Buffer.alloc(padding),
    ]);
  }
  const mode = input.mode ?? (isDirectory ? 0o755 : 0o644);
  const header = {
    name: ustarName ? name : placeholderName(name, isDirectory),
    type,
    size,
    // tar-stream replaces a falsy mode with its default; it masks modes with 0o7777 when encoding, so a
    // file-type bit above that range gets a real 0000 (whiteouts, RHEL's /etc/shadow) through.
    mode: mode === 0 ? 0o100000 : mode,
    uid: Math.min(input.uid ?? 0, maxOctal(7)),
    gid: Math.min(input.gid ?? 0, maxOctal(7)),
    uname: input.uname,
    gname: input.gname,
    mtime: new Date(Math.min(Math.max(mtimeSeconds, 0), maxOctal(12)) * 1000),
    linkname: linkname === undefined ? undefined : ustarName ? linkname : placeholderName(linkname, false),
    devmajor: input.devmajor,
    devminor: input.devminor,
  };
  return { header, paxBlock };
}

/** Counts bytes and fails the pipeline when the stream is longer or shorter than declared. */
class SizeGuard extends Transform {
  #seen = 0;
  constructor(
    readonly expected: number,
    readonly entryName: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.expected) {
      callback(
        new EtchError(
          'ETCH_SIZE_MISMATCH',
          `Entry ${JSON.stringify(this.entryName)} delivered more than its declared ${this.expected} bytes.`,
          {
            details: { entryName: this.entryName },
          },
        ),
      );
      return;
    }
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    if (this.#seen !== this.expected) {
      callback(
        new EtchError(
          'ETCH_SIZE_MISMATCH',
          `Entry ${JSON.stringify(this.entryName)} ended after ${this.#seen} of its declared ${this.expected} bytes.`,
          { details: { entryName: this.entryName } },
        ),
      );
      return;
    }
    callback();
  }
}

// streamx sets `destroying` at once and `destroyed` only when teardown has finished.
function isDestroyed(pack: TarPack): boolean {
  return pack.destroying || pack.destroyed;
}

function isStreamContent(content: EntryContent | undefined): content is Readable | AsyncIterable<Uint8Array> {
  return content !== undefined && typeof content !== 'string' && !(content instanceof Uint8Array);
}

function wrapError(err: unknown, name: string, signal: AbortSignal | undefined): EtchError {
  if (signal?.aborted) return abortError(signal);
  if (isEtchError(err)) return err;
  return new EtchError(
    'ETCH_IO',
    `Writing entry ${JSON.stringify(name)} failed: ${(err as Error)?.message ?? String(err)}`,
    {
      cause: err,
      details: { entryName: name },
    },
  );
}

const EMPTY = Buffer.alloc(0);

/**
 * Entries up to this size are read into one buffer and handed to the pack whole. Most files of a layer are
 * small, and a stream pipeline per entry costs an AbortController, a DOMException, listeners and three
 * stream objects: for a layer of thousands of files that was a third of the CPU in garbage collection.
 */
const SMALL_ENTRY = 64 * 1024;

/** Reads a small entry's stream whole, checking it delivers exactly `size` bytes, as the pipeline would. */
async function readSmall(
  content: Readable | AsyncIterable<Uint8Array>,
  size: number,
  name: string,
  signal: AbortSignal | undefined,
): Promise<Buffer> {
  // A small file usually arrives as one chunk: hand that chunk on as it is, copying only when there are more.
  const chunks: Uint8Array[] = [];
  let at = 0;
  try {
    for await (const chunk of content as AsyncIterable<Uint8Array>) {
      if (signal?.aborted) throw abortError(signal);
      if (at + chunk.length > size)
        throw new EtchError(
          'ETCH_SIZE_MISMATCH',
          `Entry ${JSON.stringify(name)} delivered more than its declared ${size} bytes.`,
          {
            details: { entryName: name },
          },
        );
      if (chunk.length > 0) chunks.push(chunk);
      at += chunk.length;
    }
  } catch (err) {
    if (content instanceof Readable) content.destroy();
    throw wrapError(err, name, signal);
  }
  if (at !== size)
    throw new EtchError(
      'ETCH_SIZE_MISMATCH',
      `Entry ${JSON.stringify(name)} ended after ${at} of its declared ${size} bytes.`,
      {
        details: { entryName: name },
      },
    );
  const only = chunks[0];
  if (chunks.length === 0 || only === undefined) return EMPTY;
  return chunks.length === 1 ? Buffer.from(only.buffer, only.byteOffset, only.byteLength) : Buffer.concat(chunks, size);
}

async function writeOne(
  pack: TarPack,
  input: EntryHeader,
  content: EntryContent | undefined,
  prefix: string | undefined,
  options: PackerOptions,
): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const bytes =
    content === undefined
      ? undefined
      : typeof content === 'string'
        ? Buffer.from(content, 'utf8')
        : content instanceof Uint8Array
          ? Buffer.from(content.buffer, content.byteOffset, content.byteLength)
          : undefined;
  const { header, paxBlock } = prepare(
    input,
    prefix,
    bytes?.length ?? (content === undefined ? 0 : undefined),
    options.mtime,
  );
  let whole = bytes;
  if (whole === undefined && isStreamContent(content) && header.size <= SMALL_ENTRY) {
    try {
      whole = await readSmall(content, header.size, input.name, signal);
    } catch (err) {
      if (!isDestroyed(pack)) pack.destroy(err as Error);
      throw err;
    }
  }
  if (isDestroyed(pack))
    throw new EtchError('ETCH_IO', 'The pack stream was destroyed; no more entries can be written.');
  // Our own PAX block goes straight into the pack's output, right before the header tar-stream writes:
  // tar-stream's PAX encoder is UTF-8 only and would corrupt binary xattr values.
  if (paxBlock !== undefined) pack.push(paxBlock);
  const streamed = whole === undefined && header.size > 0 && isStreamContent(content);
  const done = new Promise<void>((resolve, reject) => {
    // tar-stream waits for a file's sink to end even when it is empty: give it the empty buffer.
    const data = whole ?? (streamed || header.size > 0 ? undefined : EMPTY);
    const sink = pack.entry(header, data as never, (err?: Error | null) => (err ? reject(err) : resolve()));
    // Without a listener, an error on the sink (abort, size) is unhandled and kills the process.
    sink.on('error', () => {});
    if (streamed) {
      const source = content instanceof Readable ? content : Readable.from(content, { objectMode: false });
      pipeline(source, new SizeGuard(header.size, input.name), sink, { signal }).catch((err: unknown) => {
        const error = wrapError(err, input.name, signal);
        reject(error);
        source.destroy();
        pack.destroy(error);
      });
    }
  });
  try {
    await done;
  } catch (err) {
    const error = wrapError(err, input.name, signal);
    if (!isDestroyed(pack)) pack.destroy(error);
    throw error;
  }
}

/**
 * Wraps a tar pack ({@link createTarPack}) so entries are written with `await`, one at a time, with their sizes checked.
 * A stream that is shorter or longer than `header.size` rejects with `ETCH_SIZE_MISMATCH` and destroys the
 * pack (a tar with a wrong size is unreadable after that point).
 *
 * @param prefix prepended to every name and hardlink target, e.g. `inject/6`.
 * @example
 * ```ts
 * const pack = createTarPack()
 * const write = promisePacker(pack, 'inject/1')
 * await write({ name: 'config.json', mode: 0o644 }, JSON.stringify(config))
 * await write({ name: 'splash.png', size: stat.size }, fs.createReadStream('splash.png'))
 * ```
 */
export function promisePacker(pack: TarPack, prefix?: string, options: PackerOptions = {}): EntryWriter {
  const cleanPrefix = prefix === undefined ? undefined : normalizeRelativePath(prefix, prefix);
  return (header, content) =>
    enqueueOnPack(pack, async () => writeOne(pack, header, content, cleanPrefix || undefined, options));
}

/**
 * Runs `task` once every entry queued on `pack` before it is written, and holds later entries until it ends:
 * the one queue that keeps a pack's entries in order, for writers other than {@link promisePacker}.
 */
export function enqueueOnPack<T>(pack: TarPack, task: () => Promise<T>): Promise<T> {
  const previous = queues.get(pack) ?? Promise.resolve();
  const next = previous.then(undefined, () => undefined).then(task); // an earlier failure is its own caller's
  queues.set(pack, next);
  return next;
}

/**
 * Resolves when every entry queued on `pack` through {@link promisePacker} has been written; rejects with
 * the first failure among them. Call before `pack.finalize()`.
 */
export async function whenPackerIdle(pack: TarPack): Promise<void> {
  for (;;) {
    const queued = queues.get(pack);
    await queued;
    if (queues.get(pack) === queued) return;
  }
}
