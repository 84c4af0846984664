import { Readable } from 'node:stream';
import { EtchError, throwIfAborted, type TarEntryType, ignoreRejection } from '@etch/format';
import { ByteSource, truncated } from './byte-source.js';
import { BLOCK_SIZE, HEADER_ONLY, decodeHeader, isZeroBlock } from './header.js';
import { ExtensionHeaders, isExtensionType } from './extension-headers.js';
import { xattrsFromPax } from './pax.js';
import { TarFile } from './tar-file.js';

/** A tar entry header with PAX and GNU extensions applied. */
export interface TarHeader {
  name: string;
  type: TarEntryType;
  /** Size of the entry's data; 0 for header-only types (links, directories, devices). */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Whole seconds (floored), plus milliseconds of `mtimeNanoseconds`. */
  mtime: Date;
  /** The exact part of the second beyond `mtime`'s whole seconds (0 to 999 999 999), from a PAX `mtime`. */
  mtimeNanoseconds: number;
  /** Symlink target, or hardlink target (an archive path); '' otherwise. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Every PAX record that applied (global then per-entry), values as raw bytes. */
  pax: ReadonlyMap<string, Buffer>;
  /** Extended attributes from `SCHILY.xattr.*` records, values as raw bytes. */
  xattrs: ReadonlyMap<string, Buffer>;
}

/** An entry yielded by {@link extractTar}. Consume or ignore `body`; the next iteration skips what is left. */
export interface TarEntry {
  header: TarHeader;
  /** The entry's data. Read it before asking for the next entry, or it is discarded. */
  body: Readable;
  /**
   * The whole data of a small entry (at most 1 MiB) in one buffer, without a stream: cheaper
   * than `body` for the many small files of a layer. Use one or the other, before the next entry.
   */
  bytes(): Promise<Buffer>;
  /** Where the data starts in the input (after decompression): in a {@link TarFile}, the data's offset. */
  dataOffset: number;
  /**
   * With `raw: true`: the exact bytes between the previous entry's data and this entry's data (padding,
   * extended headers, the header block). With the data and {@link ExtractOptions.onTrailer} they rebuild the
   * input byte for byte, which is what tar-split records.
   */
  raw?: Buffer;
}

/** Options for {@link extractTar}. */
export interface ExtractOptions {
  /** Stops reading and closes the input. */
  signal?: AbortSignal;
  /** Largest PAX or GNU long-name block accepted (default 1 MiB): guards memory against hostile archives. */
  maxExtensionSize?: number;
  /** Keep the raw header bytes of each entry (`entry.raw`) and read the input to its very end. */
  raw?: boolean;
  /**
   * With `raw`: receives the bytes after the last entry's data (padding, end marker, trailing bytes), in
   * order, in one or more pieces: whatever follows the marker may be long, and is never held here.
   */
  onTrailer?: (bytes: Buffer) => void;
}

/** The largest entry {@link TarEntry.bytes} reads into one buffer. */
export const MAX_BYTES_READ = 1024 * 1024;

interface BodyState {
  remaining: number;
  inflight: Promise<void> | undefined;
  detached: boolean;
}

function bodyStream(source: ByteSource, state: BodyState): Readable {
  const stream = new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (state.remaining === 0) {
        this.push(null);
        return;
      }
      state.inflight = source.readSome(Math.min(state.remaining, 1024 * 1024)).then(
        (chunk) => {
          state.inflight = undefined;
          if (chunk === null) {
            if (!state.detached) stream.destroy(truncated(source.position));
            return;
          }
          state.remaining -= chunk.length;
          if (state.detached || stream.destroyed) return;
          stream.push(chunk);
          if (state.remaining === 0) stream.push(null);
        },
        (err: unknown) => {
          state.inflight = undefined;
          if (!state.detached) stream.destroy(err as Error);
        },
      );
    },
  });
  return stream;
}

/** {@link TarEntry.bytes}: the rest of the entry's data, for an entry whose body stream was not made. */
async function readWhole(source: ByteSource, state: BodyState, streamed: boolean, name: string): Promise<Buffer> {
  if (streamed || state.detached || state.inflight)
    throw new Error(`bytes() of ${JSON.stringify(name)}: its body was streamed, or the reader moved on`);
  if (state.remaining > MAX_BYTES_READ)
    throw new RangeError(`bytes() of ${JSON.stringify(name)}: ${state.remaining} bytes is more than ${MAX_BYTES_READ}`);
  const data = (await source.readExact(state.remaining)) ?? Buffer.alloc(0);
  if (data.length < state.remaining) throw truncated(source.position);
  state.remaining = 0;
  return data;
}

/**
 * Reads a tar stream entry by entry, pulling input only as entries are consumed (backpressure end to end).
 * Understands ustar, GNU (long names, base-256 numbers) and PAX (global and per-entry records, kept as bytes).
 * Given a {@link TarFile}, it skips the bodies nobody reads without reading them.
 *
 * @example
 * ```ts
 * for await (const { header, body } of extractTar(fs.createReadStream('layer.tar'))) {
 *   if (header.type === 'file') await pipeline(body, fs.createWriteStream(out))
 * }
 * ```
 * @throws EtchError `ETCH_BAD_ARCHIVE` for corrupt or truncated input, `ETCH_ABORTED` when the signal fires.
 */
export async function* extractTar(
  input: AsyncIterable<Uint8Array>,
  options: ExtractOptions = {},
): AsyncGenerator<TarEntry, void, undefined> {
  const { signal } = options;
  const maxExtension = options.maxExtensionSize ?? 1024 * 1024;
  // A file's bodies that nobody reads are skipped by moving its position, not by reading them.
  const start = input instanceof TarFile ? input.position : 0;
  const source = new ByteSource(input, input instanceof TarFile ? (at) => input.seek(start + at) : undefined);
  const extensions = new ExtensionHeaders();
  let current: { state: BodyState; body: () => Readable | undefined; padding: number } | undefined;
  // Entries that share one PAX map (the global records) share its xattrs too: no per-entry copy.
  let lastPax: ReadonlyMap<string, Buffer> | undefined;
  let lastXattrs: ReadonlyMap<string, Buffer> = new Map();
  try {
    throwIfAborted(signal);
    for (;;) {
      if (current !== undefined) {
        const { state, padding } = current;
        const body = current.body();
        current = undefined;
        if (state.inflight) await state.inflight;
        state.detached = true;
        if (body && !body.readableEnded && !body.destroyed) body.destroy();
        await source.skip(state.remaining);
        state.remaining = 0;
        if (options.raw) source.recording = [];
        await source.skip(padding);
      } else if (options.raw && source.recording === undefined) {
        source.recording = [];
      }
      throwIfAborted(signal);
      const offset = source.position;
      const block = await source.readExact(BLOCK_SIZE);
      // Input that stops without the end-of-archive marker was cut off, even on a block boundary.
      if (block === null) throw truncated(source.position);
      if (isZeroBlock(block)) {
        // End of archive. In raw mode everything after it belongs to the stream the digest covers.
        if (options.raw) {
          options.onTrailer?.(Buffer.concat(source.recording ?? []));
          source.recording = undefined;
          for (
            let piece = await source.readSome(1024 * 1024);
            piece !== null;
            piece = await source.readSome(1024 * 1024)
          )
            options.onTrailer?.(piece);
        }
        return;
      }
      const raw = decodeHeader(block, offset);
      const padding = (BLOCK_SIZE - (raw.size % BLOCK_SIZE)) % BLOCK_SIZE;

      if (isExtensionType(raw.type)) {
        if (raw.size > maxExtension) {
          throw new EtchError(
            'ETCH_BAD_ARCHIVE',
            `Extended header of ${raw.size} bytes at byte ${offset} is larger than allowed (${maxExtension}).`,
          );
        }
        const data = (await source.readExact(raw.size)) ?? Buffer.alloc(0);
        if (data.length < raw.size) throw truncated(source.position);
        await source.skip(padding);
        extensions.absorb(raw, data, offset);
        continue;
      }
      if (raw.type === 'unsupported') {
        throw new EtchError(
          'ETCH_BAD_ARCHIVE',
          `Unsupported tar entry type ${JSON.stringify(raw.typeflag)} at byte ${offset} (${raw.name}).`,
          {
            details: { entryName: raw.name, offset },
          },
        );
      }
      const pax = extensions.applyTo(raw, offset);

      const type = raw.type === 'contiguous-file' ? 'file' : raw.type;
      // Go's archive/tar (and so every docker layer) ignores the size of header-only types.
      const size = HEADER_ONLY.has(type) ? 0 : raw.size;
      const dataPadding = HEADER_ONLY.has(type) ? raw.size + padding : padding;
      const rawBytes = options.raw ? Buffer.concat(source.recording ?? []) : undefined;
      source.recording = undefined;
      const state: BodyState = { remaining: size, inflight: undefined, detached: false };
      // Made only when asked for: most small entries are read whole through bytes(), or skipped.
      let body: Readable | undefined;
      current = { state, body: () => body, padding: dataPadding };
      const header: TarHeader = {
        name: raw.name,
        type,
        size,
        mode: raw.mode,
        uid: raw.uid,
        gid: raw.gid,
        uname: raw.uname,
        gname: raw.gname,
        mtime: new Date(raw.mtime * 1000 + Math.floor((raw.mtimeNanoseconds ?? 0) / 1_000_000)),
        mtimeNanoseconds: raw.mtimeNanoseconds ?? 0,
        linkname: raw.linkname,
        devmajor: raw.devmajor,
        devminor: raw.devminor,
        pax,
        xattrs: pax === lastPax ? lastXattrs : xattrsFromPax(pax),
      };
      lastPax = pax;
      lastXattrs = header.xattrs;
      const entry: TarEntry = {
        header,
        get body() {
          return (body ??= bodyStream(source, state));
        },
        bytes: () => readWhole(source, state, body !== undefined, header.name),
        dataOffset: start + source.position,
      };
      if (rawBytes !== undefined) entry.raw = rawBytes;
      yield entry;
    }
  } finally {
    if (current !== undefined) {
      current.state.detached = true;
      const body = current.body();
      if (body && !body.readableEnded) body.destroy();
    }
    await ignoreRejection(source.close(), 'closing a read-only source after the archive was read or failed');
  }
}
