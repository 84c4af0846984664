import yauzl from 'yauzl';
import { toEtchError, type EtchError } from '@etch/format';

/** Turns yauzl's plain errors into `ETCH_BAD_ARCHIVE` naming the zip. */
function zipError(error: unknown, what: string): EtchError {
  return toEtchError(error, { code: 'ETCH_BAD_ARCHIVE', message: (m) => `${what} is not a readable zip: ${m}.` });
}

// Lazy entries: `findZipImage` of @etch/disk lists them with `eachEntry()`.
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
