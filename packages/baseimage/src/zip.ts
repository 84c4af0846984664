import type { Readable } from 'node:stream';
import yauzl from 'yauzl';
import { EtchError, assertBaseImageName, isEtchError, isZipImageEntry } from '@etch/format';
import { lastComponent } from './names.js';
import { crcChecked } from './verify.js';

const STORED = 0;
const DEFLATE = 8;

/** Turns yauzl's plain errors into `ETCH_BAD_ARCHIVE` naming the zip. */
export function zipError(error: unknown, what: string): EtchError {
  if (isEtchError(error)) return error;
  const message = (error as Error)?.message ?? String(error);
  return new EtchError('ETCH_BAD_ARCHIVE', `${what} is not a readable zip: ${message}.`, { cause: error });
}

const ZIP_OPTIONS: yauzl.Options = {
  lazyEntries: true,
  autoClose: false,
  validateEntrySizes: true,
  strictFileNames: false,
  decodeStrings: true,
};

/** Opens a local zip (central directory only). */
export function openZipFile(path: string, what: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(path, ZIP_OPTIONS, (err, zip) => (err ? reject(zipError(err, what)) : resolve(zip))),
  );
}

/** Opens a zip through a random-access reader (HTTP ranges). */
export function openZipReader(reader: yauzl.RandomAccessReader, size: number, what: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.fromRandomAccessReader(reader, size, ZIP_OPTIONS, (err, zip) =>
      err ? reject(zipError(err, what)) : resolve(zip),
    ),
  );
}

/** The image entry of a zip, as {@link findImageEntry} chose it. */
export interface ImageEntry {
  entry: yauzl.Entry;
  /** The archive name (the entry's last path component). */
  name: string;
}

/**
 * The disk image in a zip: the largest entry whose name has a raw image extension (as etcher-sdk chooses),
 * ignoring directories and `__MACOSX/` resource forks. Refuses, with a clear code, what a flasher could not
 * read either: no image (`ETCH_NOT_FOUND`), encryption or a method other than stored/deflate
 * (`ETCH_UNSUPPORTED_COMPRESSION`).
 */
export function findImageEntry(zip: yauzl.ZipFile, what: string): Promise<ImageEntry> {
  return new Promise((resolve, reject) => {
    let best: yauzl.Entry | undefined;
    const names: string[] = [];
    const fail = (error: unknown) => {
      zip.removeAllListeners();
      reject(zipError(error, what));
    };
    zip.on('entry', (entry: yauzl.Entry) => {
      const name = entry.fileName;
      if (names.length < 20) names.push(name);
      if (isZipImageEntry(name)) {
        if (best === undefined || entry.uncompressedSize > best.uncompressedSize) best = entry;
      }
      zip.readEntry();
    });
    zip.once('error', fail);
    zip.once('end', () => {
      zip.removeAllListeners();
      if (best === undefined) {
        reject(
          new EtchError(
            'ETCH_NOT_FOUND',
            `${what} holds no disk image (no entry ending in .img, .raw, .wic, …; it has ${names.length === 0 ? 'no entries' : names.join(', ')}).`,
            { details: { entries: names } },
          ),
        );
        return;
      }
      const entry = best;
      if (entry.isEncrypted()) {
        reject(
          new EtchError(
            'ETCH_UNSUPPORTED_COMPRESSION',
            `${what}: the image ${entry.fileName} is encrypted; flashers cannot read encrypted zips. Re-zip it without a password.`,
            { details: { entryName: entry.fileName } },
          ),
        );
        return;
      }
      if (entry.compressionMethod !== STORED && entry.compressionMethod !== DEFLATE) {
        reject(
          new EtchError(
            'ETCH_UNSUPPORTED_COMPRESSION',
            `${what}: the image ${entry.fileName} uses zip compression method ${entry.compressionMethod}; only stored (0) and deflate (8) are read by flashers. Re-zip it with deflate.`,
            { details: { entryName: entry.fileName, method: entry.compressionMethod } },
          ),
        );
        return;
      }
      const name = lastComponent(entry.fileName);
      try {
        assertBaseImageName(name);
      } catch (cause) {
        reject(cause);
        return;
      }
      resolve({ entry, name });
    });
    zip.readEntry();
  });
}

/**
 * The uncompressed bytes of `entry`, checked against its CRC-32 (`ETCH_DIGEST_MISMATCH`) — yauzl checks the
 * size. The zip is closed when the iteration ends.
 */
export async function* entryBytes(zip: yauzl.ZipFile, entry: yauzl.Entry, what: string): AsyncGenerator<Buffer> {
  try {
    const stream = await new Promise<Readable>((resolve, reject) =>
      zip.openReadStream(entry, (err, s) => (err ? reject(zipError(err, what)) : resolve(s))),
    );
    try {
      yield* crcChecked(stream, entry.crc32, `${what} (entry ${entry.fileName})`);
    } catch (error) {
      throw zipError(error, what);
    } finally {
      stream.destroy();
    }
  } finally {
    zip.close();
  }
}
