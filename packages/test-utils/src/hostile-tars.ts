/**
 * Tar bytes written field by field, exactly as given: for tests that need headers no tar writer produces
 * (fractional or negative sizes, hex, exponents, base-256, bad checksums). Numbers given as numbers are
 * written as ustar octal; strings and buffers go in verbatim.
 */
export interface RawTarFields {
  name: string;
  /** `'0'` file, `'5'` directory, `'x'` PAX, `'g'` global PAX, `'L'` GNU long name… Default `'0'`. */
  typeflag?: string;
  mode?: number | string | Buffer;
  uid?: number | string | Buffer;
  gid?: number | string | Buffer;
  size?: number | string | Buffer;
  mtime?: number | string | Buffer;
  linkname?: string;
  /** Overrides the computed checksum field. */
  checksum?: string;
}

const BLOCK = 512;

function put(block: Buffer, at: number, length: number, value: number | string | Buffer | undefined): void {
  if (value === undefined) return;
  const bytes =
    typeof value === 'number'
      ? Buffer.from(`${value.toString(8).padStart(length - 1, '0')}\0`, 'latin1')
      : typeof value === 'string'
        ? Buffer.from(value, 'latin1')
        : value;
  bytes.copy(block, at, 0, Math.min(length, bytes.length));
}

/** One 512-byte ustar header with the fields as given and (unless overridden) a correct checksum. */
export function rawTarHeader(fields: RawTarFields): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(fields.name, 0, 100, 'utf8');
  put(block, 100, 8, fields.mode ?? 0o644);
  put(block, 108, 8, fields.uid ?? 0);
  put(block, 116, 8, fields.gid ?? 0);
  put(block, 124, 12, fields.size ?? 0);
  put(block, 136, 12, fields.mtime ?? 0);
  block.write(fields.typeflag ?? '0', 156, 1, 'latin1');
  if (fields.linkname) block.write(fields.linkname, 157, 100, 'utf8');
  block.write('ustar\u000000', 257, 8, 'latin1');
  if (fields.checksum !== undefined) {
    put(block, 148, 8, fields.checksum);
    return block;
  }
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return block;
}

/** A header and its data, padded to whole blocks. `data.length` is used as the size unless one is given. */
export function rawTarEntry(fields: RawTarFields, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = rawTarHeader({ size: data.length, ...fields });
  const padding = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return Buffer.concat([header, data, Buffer.alloc(padding)]);
}

/** PAX records (`"<len> key=value\n"`) with their self-counting lengths. */
export function paxRecords(records: Record<string, string | Buffer> | [string, string | Buffer][]): Buffer {
  const list = Array.isArray(records) ? records : Object.entries(records);
  return Buffer.concat(
    list.map(([key, value]) => {
      const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
      let length = body.length + 1;
      while (String(length).length + body.length !== length) length = String(length).length + body.length;
      return Buffer.concat([Buffer.from(String(length)), body]);
    }),
  );
}

/** A PAX extended header entry (`x`, or `g` when global) carrying `records`. */
export function paxEntry(records: Parameters<typeof paxRecords>[0], global = false): Buffer {
  return rawTarEntry(
    { name: global ? 'GlobalHead' : 'PaxHeaders/entry', typeflag: global ? 'g' : 'x' },
    paxRecords(records),
  );
}

/** The end-of-archive marker: two zero blocks. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/** The start of a valid `.etch`: VERSION 1.0 and a small zeroed raw base image named `base.img`. */
export function etchPrelude(baseImage: Buffer = Buffer.alloc(BLOCK), name = 'base.img'): Buffer {
  return Buffer.concat([rawTarEntry({ name: 'VERSION' }, Buffer.from('1.0')), rawTarEntry({ name }, baseImage)]);
}
