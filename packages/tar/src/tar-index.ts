import { EtchError, type TarEntryType } from '@etch/format';
import { BLOCK_SIZE, decodeHeader, isZeroBlock } from './header.js';
import { ExtensionHeaders, isExtensionType } from './extension-headers.js';

/** An entry of a tar file found by {@link indexTar}: where its data starts and how long it is. */
export interface TarIndexEntry {
  name: string;
  type: TarEntryType;
  size: number;
  /** Byte offset of the entry's data in the archive. */
  dataOffset: number;
  linkname: string;
}

const MAX_EXTENSION = 1024 * 1024;

/**
 * Lists a seekable tar file by reading its headers only, jumping over data: a multi-gigabyte `docker save`
 * archive is indexed in a few reads. Long names (PAX `path`/`linkpath`, GNU `L`/`K`) and PAX `size` apply.
 * @param read reads `length` bytes at `offset`, fewer only at the end (`readAtHandle` of `@etch/disk` is one).
 * @throws EtchError `ETCH_BAD_ARCHIVE` when a header is corrupt or the file ends without its end marker.
 */
export async function indexTar(
  read: (offset: number, length: number) => Promise<Uint8Array>,
): Promise<TarIndexEntry[]> {
  const entries: TarIndexEntry[] = [];
  let offset = 0;
  const extensions = new ExtensionHeaders();
  const readExact = async (at: number, length: number): Promise<Buffer> => {
    const data = Buffer.from(await read(at, length));
    if (data.length < length)
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `The tar file ends at byte ${at + data.length}, inside an entry: it is truncated.`,
        { details: { offset: at } },
      );
    return data;
  };
  for (;;) {
    const block = await readExact(offset, BLOCK_SIZE);
    if (isZeroBlock(block)) return entries;
    const raw = decodeHeader(block, offset);
    const dataOffset = offset + BLOCK_SIZE;
    const skip = (size: number) => dataOffset + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
    if (isExtensionType(raw.type)) {
      if (raw.size > MAX_EXTENSION)
        throw new EtchError(
          'ETCH_BAD_ARCHIVE',
          `Extended header of ${raw.size} bytes at byte ${offset} is larger than allowed.`,
        );
      extensions.absorb(raw, await readExact(dataOffset, raw.size), offset);
      offset = skip(raw.size);
      continue;
    }
    if (raw.type === 'unsupported')
      throw new EtchError(
        'ETCH_BAD_ARCHIVE',
        `Unsupported tar entry type ${JSON.stringify(raw.typeflag)} at byte ${offset}.`,
      );
    extensions.applyTo(raw, offset);
    const size = raw.size;
    if (!Number.isSafeInteger(size) || size < 0)
      throw new EtchError('ETCH_BAD_ARCHIVE', `Invalid size for the tar entry at byte ${offset}.`);
    const type = raw.type;
    const dataSize = type === 'file' || type === 'contiguous-file' ? size : 0;
    entries.push({ name: raw.name, type, size: dataSize, dataOffset, linkname: raw.linkname });
    offset = skip(size);
  }
}
