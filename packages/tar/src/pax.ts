import { EtchError } from '@etch/format';

/** The PAX record prefix GNU tar, libarchive and Go use for extended attributes. */
export const XATTR_PREFIX = 'SCHILY.xattr.';

/**
 * Parses PAX records (`"<len> <key>=<value>\n"`). Values stay bytes: xattrs such as `security.capability`
 * are binary and must survive unchanged.
 */
export function decodePaxRecords(data: Buffer, offset: number): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let position = 0;
  while (position < data.length) {
    if (data[position] === 0) break; // some writers pad the record block with NULs
    const space = data.indexOf(0x20, position);
    const length = space === -1 ? Number.NaN : Number(data.subarray(position, space).toString('ascii'));
    const end = position + length;
    if (!Number.isSafeInteger(length) || length <= 0 || end > data.length || data[end - 1] !== 0x0a) {
      throw new EtchError('ETCH_BAD_ARCHIVE', `Malformed PAX record in the extended header at byte ${offset}.`, {
        details: { offset },
      });
    }
    const record = data.subarray(space + 1, end - 1);
    const equals = record.indexOf(0x3d);
    if (equals <= 0) {
      throw new EtchError('ETCH_BAD_ARCHIVE', `PAX record without a key at byte ${offset}.`, { details: { offset } });
    }
    records.set(record.subarray(0, equals).toString('utf8'), Buffer.from(record.subarray(equals + 1)));
    position = end;
  }
  return records;
}

function record(key: string, value: Buffer): Buffer {
  // The length prefix counts itself, so find the fixed point of digits + payload.
  const body = Buffer.byteLength(key) + value.length + 3; // ' ', '=', '\n'
  let length = body + String(body).length;
  if (String(length).length !== String(body).length) length = body + String(length).length;
  return Buffer.concat([Buffer.from(`${length} ${key}=`, 'utf8'), value, Buffer.from('\n')]);
}

/** Serialises records in insertion order. */
export function encodePaxRecords(records: Iterable<[string, Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of records) {
    if (key === '' || key.includes('=') || key.includes('\n'))
      throw new RangeError(`Invalid PAX key ${JSON.stringify(key)}`);
    parts.push(record(key, value));
  }
  return Buffer.concat(parts);
}

/** Extracts `SCHILY.xattr.*` records into a name → value map. */
export function xattrsFromPax(records: ReadonlyMap<string, Buffer>): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of records) {
    if (key.startsWith(XATTR_PREFIX) && key.length > XATTR_PREFIX.length)
      xattrs.set(key.slice(XATTR_PREFIX.length), value);
  }
  return xattrs;
}
