import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { EtchError, assertBaseImageName, isZipImageEntry, toEtchError } from '@etch/format';

const STORED = 0;
const DEFLATE = 8;
const ENCRYPTED = 1;

/** What choosing and checking the disk image reads of a zip entry (yauzl's `Entry` has all of it). */
export interface ZipEntryInfo {
  fileName: string;
  uncompressedSize: number;
  compressionMethod: number;
  generalPurposeBitFlag: number;
  crc32: number;
}

/**
 * A zip whose entries are listed once and read on demand: yauzl 3's `ZipFile`, opened with
 * `lazyEntries: true`, is one. Described by shape so that this package needs no zip library of its own.
 */
export interface ZipArchive<E extends ZipEntryInfo = ZipEntryInfo> {
  eachEntry(): AsyncIterable<E>;
  openReadStreamPromise(entry: E): Promise<Readable>;
  close(): void;
}

/** The disk image of a zip, as {@link findZipImage} chose it. */
export interface ZipImage<E extends ZipEntryInfo = ZipEntryInfo> {
  entry: E;
  /** The archive name of the image: the entry's last path component. */
  name: string;
}

/** Any error of the zip reader as `ETCH_BAD_ARCHIVE` naming the zip; EtchErrors pass as they are. */
function zipError(error: unknown, what: string): EtchError {
  return toEtchError(error, { code: 'ETCH_BAD_ARCHIVE', message: (m) => `${what} is not a readable zip: ${m}.` });
}

function lastComponent(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/**
 * The disk image in a zip: of the entries that `isZipImageEntry` accepts (a raw image extension; no folders,
 * hidden files or `__MACOSX/` forks), the largest, the first of equals. Writers and flashers must agree on
 * this choice. Refuses what a flasher could not read either.
 * @param what names the zip in messages, e.g. `The base image os.zip`.
 * @throws EtchError `ETCH_NOT_FOUND` when no entry is an image (the first 20 names are in `details.entries`),
 * `ETCH_UNSUPPORTED_COMPRESSION` when the image is encrypted or neither stored nor deflated,
 * `ETCH_BAD_ARCHIVE` when the zip cannot be read.
 */
export async function findZipImage<E extends ZipEntryInfo>(zip: ZipArchive<E>, what: string): Promise<ZipImage<E>> {
  let best: E | undefined;
  const names: string[] = [];
  try {
    for await (const entry of zip.eachEntry()) {
      if (names.length < 20) names.push(entry.fileName);
      if (isZipImageEntry(entry.fileName) && (best === undefined || entry.uncompressedSize > best.uncompressedSize))
        best = entry;
    }
  } catch (error) {
    throw zipError(error, what);
  }
  if (best === undefined) {
    throw new EtchError(
      'ETCH_NOT_FOUND',
      `${what} holds no disk image (no entry ending in .img, .raw, .wic, …; it has ${names.length === 0 ? 'no entries' : names.join(', ')}).`,
      { details: { entries: names } },
    );
  }
  if ((best.generalPurposeBitFlag & ENCRYPTED) !== 0) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_COMPRESSION',
      `${what}: the image ${best.fileName} is encrypted; flashers cannot read encrypted zips. Re-zip it without a password.`,
      { details: { entryName: best.fileName } },
    );
  }
  if (best.compressionMethod !== STORED && best.compressionMethod !== DEFLATE) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_COMPRESSION',
      `${what}: the image ${best.fileName} uses zip compression method ${best.compressionMethod}; only stored (0) and deflate (8) are read by flashers. Re-zip it with deflate.`,
      { details: { entryName: best.fileName, method: best.compressionMethod } },
    );
  }
  const name = lastComponent(best.fileName);
  assertBaseImageName(name);
  return { entry: best, name };
}

/**
 * The uncompressed bytes of `entry`, their CRC-32 checked against the zip's at the end (the zip reader checks
 * only the size: a flipped bit in a stored entry would otherwise go unnoticed). The zip is closed when the
 * iteration ends, however it ends.
 * @throws EtchError `ETCH_DIGEST_MISMATCH` when the CRC-32 differs, `ETCH_BAD_ARCHIVE` when the zip cannot be read.
 */
export async function* readZipImage<E extends ZipEntryInfo>(
  zip: ZipArchive<E>,
  entry: E,
  what: string,
): AsyncGenerator<Buffer> {
  try {
    let stream: Readable;
    try {
      stream = await zip.openReadStreamPromise(entry);
    } catch (error) {
      throw zipError(error, what);
    }
    try {
      let crc = 0;
      for await (const data of stream as AsyncIterable<Buffer>) {
        crc = crc32(data, crc);
        yield data;
      }
      if (crc >>> 0 !== entry.crc32 >>> 0) {
        throw new EtchError(
          'ETCH_DIGEST_MISMATCH',
          `${what} (entry ${entry.fileName}) is corrupt: its CRC-32 is ${hex(crc)}, the zip says ${hex(entry.crc32)}.`,
          { details: { expected: hex(entry.crc32), actual: hex(crc) } },
        );
      }
    } catch (error) {
      throw zipError(error, what);
    } finally {
      stream.destroy();
    }
  } finally {
    zip.close();
  }
}
