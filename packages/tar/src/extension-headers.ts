import { EtchError } from '@etch/format';
import type { RawHeader, RawTypeflag } from './header.js';
import { decodePaxRecords } from './pax.js';
import { parsePaxTime } from './pax-time.js';

/** Header types that only carry metadata for the entries after them. */
export function isExtensionType(type: RawTypeflag): type is 'pax' | 'pax-global' | 'gnu-long-name' | 'gnu-long-link' {
  return type === 'pax' || type === 'pax-global' || type === 'gnu-long-name' || type === 'gnu-long-link';
}

/**
 * What PAX (`x`, `g`) and GNU long-name (`L`, `K`) headers say about the entries that follow, as a reader
 * collects them: global records stay, the others apply to the next entry only. Shared by the streaming
 * reader and the seeking indexer so both read names and sizes the same way.
 */
export class ExtensionHeaders {
  readonly #global = new Map<string, Buffer>();
  #local: Map<string, Buffer> | undefined;
  #longName: string | undefined;
  #longLink: string | undefined;

  /** Takes in the data of an extension header. */
  absorb(raw: RawHeader, data: Buffer, offset: number): void {
    if (raw.type === 'pax') this.#local = decodePaxRecords(data, offset);
    else if (raw.type === 'pax-global') for (const [k, v] of decodePaxRecords(data, offset)) this.#global.set(k, v);
    else {
      const nul = data.indexOf(0);
      const value = data.subarray(0, nul === -1 ? data.length : nul).toString('utf8');
      if (raw.type === 'gnu-long-name') this.#longName = value;
      else this.#longLink = value;
    }
  }

  /**
   * Applies what was collected to the entry header that follows (GNU long names, then PAX records over them),
   * forgets the per-entry part, and returns every PAX record that applied (global then per-entry).
   */
  applyTo(raw: RawHeader, offset: number): Map<string, Buffer> {
    if (this.#longName !== undefined) raw.name = this.#longName;
    if (this.#longLink !== undefined) raw.linkname = this.#longLink;
    const pax = new Map(this.#global);
    for (const [k, v] of this.#local ?? []) pax.set(k, v);
    applyPax(raw, pax, offset);
    this.#local = undefined;
    this.#longName = undefined;
    this.#longLink = undefined;
    return pax;
  }
}

function applyPax(raw: RawHeader, pax: Map<string, Buffer>, offset: number): void {
  const text = (key: string) => pax.get(key)?.toString('utf8');
  const number = (key: string): number | undefined => {
    const value = text(key);
    if (value === undefined) return undefined;
    const parsed = Number(value);
    if (!Number.isFinite(parsed)) {
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `PAX record ${key}=${JSON.stringify(value)} at byte ${offset} is not a number.`,
      );
    }
    return parsed;
  };
  raw.name = text('path') ?? raw.name;
  raw.linkname = text('linkpath') ?? raw.linkname;
  raw.uname = text('uname') ?? raw.uname;
  raw.gname = text('gname') ?? raw.gname;
  raw.size = number('size') ?? raw.size;
  raw.uid = number('uid') ?? raw.uid;
  raw.gid = number('gid') ?? raw.gid;
  const mtime = text('mtime');
  if (mtime !== undefined) {
    const exact = parsePaxTime(mtime, offset);
    raw.mtime = exact.seconds;
    raw.mtimeNanoseconds = exact.nanoseconds;
  }
}
