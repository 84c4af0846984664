import { EtchError } from '@etch/format';
import type { RawHeader, RawTypeflag } from './header.js';
import { parsePaxInteger } from './numbers.js';
import { decodePaxRecords } from './pax.js';
import { parsePaxTime } from './pax-time.js';

/** Header types that only carry metadata for the entries after them. */
export function isExtensionType(type: RawTypeflag): type is 'pax' | 'pax-global' | 'gnu-long-name' | 'gnu-long-link' {
  return type === 'pax' || type === 'pax-global' || type === 'gnu-long-name' || type === 'gnu-long-link';
}

/**
 * Global PAX records stay for the rest of the archive, so what they may add up to is bounded: a hostile
 * archive could otherwise pile up header after header and have each one copied for every entry.
 */
export const MAX_GLOBAL_PAX_RECORDS = 1024;
export const MAX_GLOBAL_PAX_BYTES = 1024 * 1024;

const EMPTY: ReadonlyMap<string, Buffer> = new Map();

/**
 * What PAX (`x`, `g`) and GNU long-name (`L`, `K`) headers say about the entries that follow, as a reader
 * collects them: global records stay, the others apply to the next entry only. Shared by the streaming
 * reader and the seeking indexer so both read names and sizes the same way.
 */
export class ExtensionHeaders {
  // Replaced, never changed in place, so entries with no records of their own can share it.
  #global: ReadonlyMap<string, Buffer> = EMPTY;
  #globalBytes = 0;
  #local: Map<string, Buffer> | undefined;
  #longName: string | undefined;
  #longLink: string | undefined;

  /** Takes in the data of an extension header. */
  absorb(raw: RawHeader, data: Buffer, offset: number): void {
    if (raw.type === 'pax') this.#local = decodePaxRecords(data, offset);
    else if (raw.type === 'pax-global') this.#absorbGlobal(decodePaxRecords(data, offset), offset);
    else {
      const nul = data.indexOf(0);
      const value = data.subarray(0, nul === -1 ? data.length : nul).toString('utf8');
      if (raw.type === 'gnu-long-name') this.#longName = value;
      else this.#longLink = value;
    }
  }

  #absorbGlobal(records: Map<string, Buffer>, offset: number): void {
    const merged = new Map(this.#global);
    for (const [k, v] of records) {
      const before = merged.get(k);
      if (before !== undefined) this.#globalBytes -= Buffer.byteLength(k) + before.length;
      merged.set(k, v);
      this.#globalBytes += Buffer.byteLength(k) + v.length;
    }
    if (merged.size > MAX_GLOBAL_PAX_RECORDS || this.#globalBytes > MAX_GLOBAL_PAX_BYTES) {
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `The global PAX headers up to byte ${offset} add up to ${merged.size} records and ${this.#globalBytes} bytes; at most ${MAX_GLOBAL_PAX_RECORDS} records and ${MAX_GLOBAL_PAX_BYTES} bytes are accepted.`,
        { details: { offset } },
      );
    }
    this.#global = merged;
  }

  /**
   * Applies what was collected to the entry header that follows (GNU long names, then PAX records over them),
   * forgets the per-entry part, and returns every PAX record that applied (global then per-entry). Entries
   * without records of their own share one map: treat it as read-only.
   */
  applyTo(raw: RawHeader, offset: number): ReadonlyMap<string, Buffer> {
    if (this.#longName !== undefined) raw.name = this.#longName;
    if (this.#longLink !== undefined) raw.linkname = this.#longLink;
    let pax = this.#global;
    if (this.#local !== undefined) {
      const combined = new Map(this.#global);
      for (const [k, v] of this.#local) combined.set(k, v);
      pax = combined;
    }
    this.#local = undefined;
    this.#longName = undefined;
    this.#longLink = undefined;
    if (pax.size > 0) applyPax(raw, pax, offset);
    return pax;
  }
}

function applyPax(raw: RawHeader, pax: ReadonlyMap<string, Buffer>, offset: number): void {
  const text = (key: string) => pax.get(key)?.toString('utf8');
  const number = (key: string, parse: (text: string) => number | undefined): number | undefined => {
    const value = text(key);
    if (value === undefined) return undefined;
    const parsed = parse(value);
    if (parsed === undefined) {
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `PAX record ${key}=${JSON.stringify(value.slice(0, 40))} in the header at byte ${offset} is not a valid ${key === 'mtime' ? 'time' : 'non-negative integer'}.`,
        { details: { offset } },
      );
    }
    return parsed;
  };
  raw.name = text('path') ?? raw.name;
  raw.linkname = text('linkpath') ?? raw.linkname;
  raw.uname = text('uname') ?? raw.uname;
  raw.gname = text('gname') ?? raw.gname;
  raw.size = number('size', (t) => parsePaxInteger(t)) ?? raw.size;
  raw.uid = number('uid', (t) => parsePaxInteger(t)) ?? raw.uid;
  raw.gid = number('gid', (t) => parsePaxInteger(t)) ?? raw.gid;
  const mtime = text('mtime');
  if (mtime !== undefined) {
    const exact = parsePaxTime(mtime, offset);
    // Beyond ±2^40 s no filesystem keeps the time; such a record is hostile, not a date.
    if (Math.abs(exact.seconds) > 2 ** 40)
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `PAX record mtime=${mtime.slice(0, 40)} in the header at byte ${offset} is out of range.`,
        {
          details: { offset },
        },
      );
    raw.mtime = exact.seconds;
    raw.mtimeNanoseconds = exact.nanoseconds;
  }
}
