import { EtchError, type TarEntryType } from '@etch/format';
import { BLOCK_SIZE, decodeHeader, isZeroBlock } from './header.js';
import { decodePaxRecords } from './pax.js';

/** An entry of a tar file found by {@link indexTar}: where its data starts and how long it is. */
export interface TarIndexEntry {
  name: string;
  type: TarEntryType;
  size: number;
  /** Byte offset of the entry's data in the archive. */
  dataOffset: number;
  linkname: string;
}

/** Reads `length` bytes at `offset`; returns fewer only at the end of the file. */
export type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

const MAX_EXTENSION = 1024 * 1024;

/**
 * Lists a seekable tar file by reading its headers only, jumping over data: a multi-gigabyte `docker save`
 * archive is indexed in a few reads. Long names (PAX `path`/`linkpath`, GNU `L`/`K`) and PAX `size` apply.
 * @throws EtchError `ETCH_BAD_ARCHIVE` when a header is corrupt or the file ends without its end marker.
 */
export async function indexTar(read: ReadAt): Promise<TarIndexEntry[]> {
  const entries: TarIndexEntry[] = [];
  let offset = 0;
  let pax = new Map<string, Buffer>();
  const globalPax = new Map<string, Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  const readExact = async (at: number, length: number): Promise<Buffer> => {
    const data = Buffer.from(await read(at, length));
    if (data.length < length) throw new EtchError('ETCH_BAD_ARCHIVE', `The tar file ends at byte ${at + data.length}, inside an entry: it is truncated.`, { details: { offset: at } });
    return data;
  };
  for (;;) {
    const block = await readExact(offset, BLOCK_SIZE);
    if (isZeroBlock(block)) return entries;
    const raw = decodeHeader(block, offset);
    const dataOffset = offset + BLOCK_SIZE;
    const skip = (size: number) => dataOffset + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
    if (raw.type === 'pax' || raw.type === 'pax-global' || raw.type === 'gnu-long-name' || raw.type === 'gnu-long-link') {
      if (raw.size > MAX_EXTENSION) throw new EtchError('ETCH_BAD_ARCHIVE', `Extended header of ${raw.size} bytes at byte ${offset} is larger than allowed.`);
      const data = await readExact(dataOffset, raw.size);
      if (raw.type === 'pax') pax = decodePaxRecords(data, offset);
      else if (raw.type === 'pax-global') for (const [k, v] of decodePaxRecords(data, offset)) globalPax.set(k, v);
      else {
        const nul = data.indexOf(0);
        const value = data.subarray(0, nul === -1 ? data.length : nul).toString('utf8');
        if (raw.type === 'gnu-long-name') longName = value;
        else longLink = value;
      }
      offset = skip(raw.size);
      continue;
    }
    if (raw.type === 'unsupported') throw new EtchError('ETCH_BAD_ARCHIVE', `Unsupported tar entry type ${JSON.stringify(raw.typeflag)} at byte ${offset}.`);
    const records = new Map([...globalPax, ...pax]);
    const text = (key: string) => records.get(key)?.toString('utf8');
    const paxSize = text('size');
    const size = paxSize !== undefined ? Number(paxSize) : raw.size;
    if (!Number.isSafeInteger(size) || size < 0) throw new EtchError('ETCH_BAD_ARCHIVE', `Invalid size for the tar entry at byte ${offset}.`);
    const type = raw.type;
    const dataSize = type === 'file' || type === 'contiguous-file' ? size : 0;
    entries.push({ name: text('path') ?? longName ?? raw.name, type, size: dataSize, dataOffset, linkname: text('linkpath') ?? longLink ?? raw.linkname });
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    offset = skip(size);
  }
}
