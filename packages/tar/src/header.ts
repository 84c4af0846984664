import { EtchError, type TarEntryType } from '@etch/format';
import { decodeNumber, encodeOctal } from './numbers.js';

export const BLOCK_SIZE = 512;

/** Entry types that are a header alone: Go's archive/tar (and so every docker layer) ignores their size. */
export const HEADER_ONLY: ReadonlySet<string> = new Set([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);
// Seconds either side of the epoch a header may claim (about 35,000 years): beyond this a date is garbage.
const MAX_MTIME = 2 ** 40;

/** What a typeflag byte means. `pax`, `pax-global`, `gnu-long-name`, `gnu-long-link` are consumed by the reader. */
export type RawTypeflag = TarEntryType | 'pax' | 'pax-global' | 'gnu-long-name' | 'gnu-long-link' | 'unsupported';

const TYPEFLAGS: Record<string, RawTypeflag> = {
  '0': 'file',
  '\0': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
  '7': 'contiguous-file',
  x: 'pax',
  g: 'pax-global',
  L: 'gnu-long-name',
  K: 'gnu-long-link',
};

/** A header block as it is on disk, before PAX and GNU extensions are applied. */
export interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  /** Nanoseconds beyond `mtime`'s seconds, from a PAX `mtime` record with a fraction; 0 otherwise. */
  mtimeNanoseconds?: number;
  typeflag: string;
  type: RawTypeflag;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

/** The NUL-terminated text of a field, decoded in place (no view of the field is made). */
function text(block: Buffer, start: number, length: number): string {
  let end = start;
  while (end < start + length && block[end] !== 0) end++;
  return end === start ? '' : block.toString('utf8', start, end);
}

function checksums(block: Buffer): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return { unsigned, signed };
}

/** True for a block of 512 zero bytes (the end-of-archive marker). */
export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/**
 * Decodes one 512-byte header block (v7, ustar, GNU).
 * @throws EtchError `ETCH_BAD_ARCHIVE` when the checksum or a number field is wrong.
 */
export function decodeHeader(block: Buffer, offset: number): RawHeader {
  const stored = decodeNumber(block, 148, 8);
  const { unsigned, signed } = checksums(block);
  if (stored !== unsigned && stored !== signed) {
    throw new EtchError(
      'ETCH_BAD_ARCHIVE',
      `Invalid tar header at byte ${offset} (checksum mismatch). The file is corrupt, truncated, or not a tar archive.`,
      { details: { offset } },
    );
  }
  const magic = block.toString('latin1', 257, 263);
  let name = text(block, 0, 100);
  // Only POSIX ustar uses the prefix field; GNU tar stores atime/ctime in the same bytes.
  if (magic === 'ustar\0') {
    const prefix = text(block, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  const typeflag = String.fromCharCode(block[156] ?? 0);
  let type: RawTypeflag = TYPEFLAGS[typeflag] ?? 'unsupported';
  // Pre-POSIX archives mark directories only by the trailing slash.
  if (type === 'file' && name.endsWith('/')) type = 'directory';
  const header: RawHeader = {
    name,
    mode: decodeNumber(block, 100, 8),
    uid: decodeNumber(block, 108, 8),
    gid: decodeNumber(block, 116, 8),
    size: decodeNumber(block, 124, 12),
    mtime: decodeNumber(block, 136, 12),
    typeflag,
    type,
    linkname: text(block, 157, 100),
    uname: text(block, 265, 32),
    gname: text(block, 297, 32),
    devmajor: magic.startsWith('ustar') ? decodeNumber(block, 329, 8) : 0,
    devminor: magic.startsWith('ustar') ? decodeNumber(block, 337, 8) : 0,
  };
  for (const key of ['mode', 'uid', 'gid', 'size', 'mtime', 'devmajor', 'devminor'] as const) {
    const value = header[key];
    if (!Number.isSafeInteger(value) || (key === 'mtime' ? Math.abs(value) > MAX_MTIME : value < 0)) {
      throw new EtchError('ETCH_BAD_ARCHIVE', `Invalid ${key} field in the tar header at byte ${offset}.`, {
        details: { offset },
      });
    }
  }
  return header;
}

/**
 * Encodes the header block of a PAX extended header entry (typeflag `x`) that carries `size` bytes of records.
 * The name follows GNU tar's `PaxHeaders` convention so old readers extract it somewhere harmless.
 */
export function encodePaxHeaderBlock(size: number, mtime: number): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE);
  block.write('PaxHeaders/entry', 0, 'ascii');
  encodeOctal(0o644, block.subarray(100, 108));
  encodeOctal(0, block.subarray(108, 116));
  encodeOctal(0, block.subarray(116, 124));
  encodeOctal(size, block.subarray(124, 136));
  encodeOctal(Math.max(0, Math.trunc(mtime)), block.subarray(136, 148));
  block.write('x', 156, 'ascii');
  block.write('ustar\x0000', 257, 'latin1');
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  encodeOctal(sum, block.subarray(148, 155));
  block[155] = 0x20;
  return block;
}
