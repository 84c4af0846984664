import { EtchError, abortError } from '@etch/format';
import { BLOCK_SIZE, HEADER_ONLY, decodeHeader, isZeroBlock, type RawHeader } from './header.js';
import { enqueueOnPack } from './packer.js';
import type { TarPack } from './pack.js';
import { decodePaxRecords } from './pax.js';

/** What {@link spliceTar} checks of every entry before its bytes reach the pack. */
export interface SplicedEntry {
  /** The full name, PAX `path` applied. */
  name: string;
  type: 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo';
  /** The hardlink or symlink target, PAX `linkpath` applied; '' for other types. */
  linkname: string;
  size: number;
}

/** Options for {@link spliceTar}. */
export interface SpliceTarOptions {
  signal?: AbortSignal;
  /**
   * Called for each entry before its header block is appended (a PAX header before it may already be); throw
   * to refuse it: the pack is then destroyed, so the output is incomplete either way.
   */
  check?: (entry: SplicedEntry) => void;
  /** Most bytes of one PAX header (default 1 MiB). */
  maxExtensionSize?: number;
}

/** What a {@link spliceTar} appended. */
export interface SplicedTar {
  entries: number;
  /** Content bytes of regular files. */
  fileBytes: number;
}

const ENTRY_TYPES: ReadonlySet<string> = new Set(['file', ...HEADER_ONLY]);

/**
 * Walks a tar stream block by block without copying its bodies: decodes each header (and the PAX header
 * before it), hands the entry to `check`, and finds where the end-of-archive marker starts. It accepts only
 * what `promisePacker` writes (ustar headers, per-entry PAX headers, no data after a header-only entry), so
 * bytes it passes read back exactly as their headers say.
 */
class TarWalker {
  entries = 0;
  fileBytes = 0;
  /** Offset of the end-of-archive marker once seen. */
  end: number | undefined;
  #position = 0;
  /** Bytes of body and padding still to skip. */
  #skip = 0;
  /** A header block split across chunks. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** The PAX header being read, and the records it gave for the next entry. */
  #pax: { data: Buffer; filled: number; padding: number; offset: number } | undefined;
  #records: Map<string, Buffer> | undefined;

  constructor(private readonly options: SpliceTarOptions) {}

  /**
   * Walks one chunk; returns the bytes to append now, in order. The bytes of a header block are held back
   * until the block is complete: only then is it known whether it starts the end-of-archive marker, which
   * is not appended. A chunk with nothing held back is returned whole (the same view: see `BufferPool`).
   */
  walk(chunk: Uint8Array): Buffer[] {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const out: Buffer[] = [];
    let from = 0; // start of this chunk's bytes not yet returned or held
    let at = 0;
    while (at < bytes.length) {
      if (this.end !== undefined) {
        // Only zeros may follow the end marker.
        for (let i = at; i < bytes.length; i++)
          if (bytes[i] !== 0) throw this.#bad('data after the end of the archive');
        this.#position += bytes.length - at;
        return out;
      }
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, bytes.length - at);
        this.#skip -= n;
        at += n;
        this.#position += n;
        continue;
      }
      if (this.#pax !== undefined && this.#pax.filled < this.#pax.data.length) {
        const pax = this.#pax;
        const n = Math.min(pax.data.length - pax.filled, bytes.length - at);
        bytes.copy(pax.data, pax.filled, at, at + n);
        pax.filled += n;
        at += n;
        this.#position += n;
        if (pax.filled === pax.data.length) {
          this.#records = decodePaxRecords(pax.data, pax.offset);
          this.#skip = pax.padding;
        }
        continue;
      }
      const headerStart = at;
      const n = Math.min(BLOCK_SIZE - this.#partialBytes, bytes.length - at);
      this.#partial.push(bytes.subarray(at, at + n));
      this.#partialBytes += n;
      at += n;
      this.#position += n;
      if (this.#partialBytes < BLOCK_SIZE) {
        // The chunk ends inside a header block: return what came before it, hold the rest.
        if (headerStart > from) out.push(bytes.subarray(from, headerStart));
        return out;
      }
      const held = this.#partial.slice(0, -1); // pieces from earlier chunks
      const block = this.#partial.length === 1 ? (this.#partial[0] as Buffer) : Buffer.concat(this.#partial);
      this.#partial = [];
      this.#partialBytes = 0;
      this.#header(block, this.#position - BLOCK_SIZE);
      if (this.end !== undefined) {
        if (headerStart > from) out.push(bytes.subarray(from, headerStart));
        from = bytes.length;
      } else if (held.length > 0) {
        out.push(...held);
      }
    }
    if (from === 0) out.push(bytes);
    else if (from < bytes.length) out.push(bytes.subarray(from));
    return out;
  }

  /** Throws unless the stream ended right after a complete end-of-archive marker. */
  finish(): void {
    if (this.end === undefined || this.#position - this.end < 2 * BLOCK_SIZE)
      throw this.#bad('it ends without the end-of-archive marker');
  }

  #header(block: Buffer, offset: number): void {
    if (isZeroBlock(block)) {
      if (this.#pax !== undefined) throw this.#bad(`the PAX header at byte ${this.#pax.offset} has no entry`);
      this.end = offset;
      return;
    }
    const raw = decodeHeader(block, offset);
    const padding = (BLOCK_SIZE - (raw.size % BLOCK_SIZE)) % BLOCK_SIZE;
    if (raw.type === 'pax') {
      if (this.#pax !== undefined) throw this.#bad(`two PAX headers in a row at byte ${offset}`);
      const limit = this.options.maxExtensionSize ?? 1024 * 1024;
      if (raw.size > limit) throw this.#bad(`the PAX header at byte ${offset} is ${raw.size} bytes (at most ${limit})`);
      this.#pax = { data: Buffer.alloc(raw.size), filled: 0, padding, offset };
      if (raw.size === 0) {
        this.#records = new Map();
        this.#skip = padding;
      }
      return;
    }
    if (!ENTRY_TYPES.has(raw.type)) throw this.#bad(`entry type ${JSON.stringify(raw.typeflag)} at byte ${offset}`);
    if (raw.type !== 'file' && raw.size !== 0)
      throw this.#bad(`a ${raw.type} with ${raw.size} bytes at byte ${offset}`);
    this.#applyPax(raw, offset);
    this.options.check?.({
      name: raw.name,
      type: raw.type as SplicedEntry['type'],
      linkname: raw.type === 'link' || raw.type === 'symlink' ? raw.linkname : '',
      size: raw.size,
    });
    this.entries += 1;
    if (raw.type === 'file') this.fileBytes += raw.size;
    this.#skip = raw.size + padding;
  }

  #applyPax(raw: RawHeader, offset: number): void {
    const records = this.#records;
    for (const key of records?.keys() ?? []) {
      // A reader that honours them would find the next header elsewhere than this walk does, and so read
      // entries `check` never saw; promisePacker never writes them.
      if (key === 'size' || key.startsWith('GNU.sparse.'))
        throw this.#bad(`a PAX ${key} record for the entry at byte ${offset}`, offset);
    }
    this.#pax = undefined;
    this.#records = undefined;
    const path = records?.get('path');
    const linkpath = records?.get('linkpath');
    if (path !== undefined) raw.name = path.toString('utf8');
    if (linkpath !== undefined) raw.linkname = linkpath.toString('utf8');
  }

  #bad(what: string, offset = this.#position): EtchError {
    return new EtchError('ETCH_BAD_ARCHIVE', `The tar stream cannot be appended as it is: ${what}.`, {
      details: { offset },
    });
  }
}

/**
 * Appends `chunk` to the pack's output, waiting while the pack holds more than its buffer, or until `signal`
 * aborts (a reader that stopped reading must not keep an aborted run waiting).
 */
async function pushRaw(pack: TarPack, chunk: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
  // A destroyed pack never drains: the caller sees it destroyed and stops.
  if (pack.push(chunk) || pack.destroying) return;
  let onAbort: (() => void) | undefined;
  try {
    await new Promise<void>((resolve) => {
      // tar-stream's own entry sinks wait on this hook, which the pack calls when it is read again or
      // destroyed (tar-stream is pinned in the catalog: this is its 3.x contract).
      (pack as unknown as { _drain: () => void })._drain = resolve;
      onAbort = resolve;
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) resolve();
    });
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Appends the entries of a tar archive (`source`, up to and including its end-of-archive marker) to `pack`
 * byte for byte: no body is parsed or copied, so a tar written earlier by `promisePacker` with the same
 * prefix costs a file copy instead of a second pack. Every header is still decoded and passed to
 * `check` before its header block is appended, and the stream must end with the end-of-archive marker, which is
 * not appended. Queued after the entries already written with `promisePacker` on the same pack.
 * @throws EtchError `ETCH_BAD_ARCHIVE` when the stream is not a tar as `promisePacker` writes one (or is
 * cut short); whatever `check` throws. Either destroys the pack: the output is incomplete.
 * @example
 * ```ts
 * const { entries } = await spliceTar(pack, fs.createReadStream('staged.tar'), {
 *   check: (entry) => assertInside(entry.name),
 * });
 * ```
 */
export async function spliceTar(
  pack: TarPack,
  source: AsyncIterable<Uint8Array>,
  options: SpliceTarOptions = {},
): Promise<SplicedTar> {
  return enqueueOnPack(pack, async () => {
    const { signal } = options;
    const walker = new TarWalker(options);
    try {
      for await (const chunk of source) {
        if (signal?.aborted) throw abortError(signal);
        const ready = walker.walk(chunk);
        for (const bytes of ready) {
          if (pack.destroying || pack.destroyed)
            throw new EtchError('ETCH_IO', 'The pack stream was destroyed; no more entries can be written.');
          await pushRaw(pack, bytes, signal);
          if (signal?.aborted) throw abortError(signal);
        }
      }
      walker.finish();
      if (pack.destroying || pack.destroyed)
        throw new EtchError('ETCH_IO', 'The pack stream was destroyed before the appended entries were read.');
    } catch (err) {
      const error = signal?.aborted ? abortError(signal) : err;
      if (!pack.destroying) pack.destroy(error as Error);
      throw error;
    }
    return { entries: walker.entries, fileBytes: walker.fileBytes };
  });
}
