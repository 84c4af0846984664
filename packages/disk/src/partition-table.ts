import { EtchError } from '@etch/format';

/**
 * Reads `length` bytes at `offset` of a disk image (a file handle, an HTTP range, a buffer…). May return
 * fewer bytes only at the end of the image.
 */
export type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

/** One partition, numbered as `inject/<n>/` means it. */
export interface PartitionInfo {
  /** 1-based: MBR primaries 1–4, logical partitions from 5 in chain order; GPT: slot index + 1. */
  number: number;
  /** Byte offset of the partition in the image. */
  offset: number;
  /** Size in bytes. */
  size: number;
  /** `primary`, `extended` (the container of logical partitions, never a filesystem) or `logical` for MBR; `gpt` otherwise. */
  kind: 'primary' | 'extended' | 'logical' | 'gpt';
  /** MBR type byte as `0x83`, or the GPT type GUID in lower case. */
  type: string;
  /** GPT partition name, when set. */
  name?: string;
  /** For a logical partition: byte offset of the extended boot record that describes it. */
  recordOffset?: number;
}

/** A disk's partition table. */
export interface PartitionTable {
  scheme: 'mbr' | 'gpt';
  sectorSize: number;
  partitions: PartitionInfo[];
}

const SECTOR = 512;
const MBR_EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const GPT_PROTECTIVE = 0xee;
// A logical chain longer than this is a loop or garbage; real disks stay far below.
const MAX_LOGICAL = 128;
const MAX_GPT_ENTRY_SIZE = 4096;
// Sector numbers beyond this (8 EiB / 512 … well beyond any disk) would lose precision as byte offsets.
const MAX_SECTOR = Math.floor(Number.MAX_SAFE_INTEGER / SECTOR);

function bad(message: string): EtchError {
  return new EtchError('ETCH_BAD_DISK_IMAGE', message);
}

async function readExactly(read: ReadAt, offset: number, length: number, what: string): Promise<Buffer> {
  const bytes = await read(offset, length);
  if (bytes.length < length)
    throw bad(`The disk image ends before its ${what} (byte ${offset}); it is truncated or not a disk image.`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, length);
}

function hex(type: number): string {
  return `0x${type.toString(16).padStart(2, '0')}`;
}

function guid(bytes: Buffer): string {
  // The first three fields are little-endian, the last two big-endian (the on-disk mixed-endian GUID form).
  const le = (start: number, end: number) => Buffer.from(bytes.subarray(start, end)).reverse().toString('hex');
  const be = (start: number, end: number) => bytes.subarray(start, end).toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${be(8, 10)}-${be(10, 16)}`;
}

interface MbrSlot {
  type: number;
  start: number;
  sectors: number;
}

function mbrSlots(sector: Buffer): MbrSlot[] {
  const slots: MbrSlot[] = [];
  for (let i = 0; i < 4; i++) {
    const at = 446 + i * 16;
    slots.push({
      type: sector[at + 4] as number,
      start: sector.readUInt32LE(at + 8),
      sectors: sector.readUInt32LE(at + 12),
    });
  }
  return slots;
}

async function readGpt(read: ReadAt): Promise<PartitionTable> {
  const header = await readExactly(read, SECTOR, 92, 'GPT header');
  if (header.toString('latin1', 0, 8) !== 'EFI PART')
    throw bad(
      'The MBR is a GPT protective MBR, but there is no GPT header at sector 1 (only 512-byte sectors are supported).',
    );
  const entriesLba = Number(header.readBigUInt64LE(72));
  const count = header.readUInt32LE(80);
  const entrySize = header.readUInt32LE(84);
  // UEFI: entries are 128 × 2^n bytes. Both numbers come from the disk, so both are capped before a read
  // is sized from them (an unchecked entry size once asked for a 4 GiB buffer and aborted Node).
  if (entrySize < 128 || entrySize > MAX_GPT_ENTRY_SIZE || (entrySize & (entrySize - 1)) !== 0 || count > 1024)
    throw bad(`The GPT header declares ${count} entries of ${entrySize} bytes; that is not a valid table.`);
  if (entriesLba < 2 || entriesLba > MAX_SECTOR)
    throw bad(`The GPT header puts its partition entries at sector ${entriesLba}; that is not a valid table.`);
  const table = await readExactly(read, entriesLba * SECTOR, count * entrySize, 'GPT partition entries');
  const partitions: PartitionInfo[] = [];
  for (let i = 0; i < count; i++) {
    const entry = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (entry.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(entry.readBigUInt64LE(32));
    const last = Number(entry.readBigUInt64LE(40));
    if (first > MAX_SECTOR || last > MAX_SECTOR || last < first)
      throw bad(`GPT partition ${i + 1} spans sectors ${first} to ${last}; the partition table is corrupt.`);
    const name = entry.toString('utf16le', 56, 128).replace(/\0.*$/s, '');
    partitions.push({
      number: i + 1,
      offset: first * SECTOR,
      size: (last - first + 1) * SECTOR,
      kind: 'gpt',
      type: guid(entry.subarray(0, 16)),
      ...(name !== '' ? { name } : {}),
    });
  }
  assertNoOverlap(partitions);
  return { scheme: 'gpt', sectorSize: SECTOR, partitions };
}

async function readLogical(read: ReadAt, extendedStart: number, partitions: PartitionInfo[]): Promise<void> {
  let ebr = extendedStart;
  const seen = new Set<number>();
  for (let number = 5; ; number++) {
    if (seen.has(ebr) || seen.size >= MAX_LOGICAL)
      throw bad('The chain of logical partitions loops; the partition table is corrupt.');
    seen.add(ebr);
    const sector = await readExactly(read, ebr * SECTOR, SECTOR, `extended boot record ${number - 4}`);
    if (sector.readUInt16LE(510) !== 0xaa55)
      throw bad(`The extended boot record at sector ${ebr} has no boot signature; the partition table is corrupt.`);
    const [own, next] = mbrSlots(sector) as [MbrSlot, MbrSlot];
    if (own.type !== 0 && own.sectors > 0) {
      partitions.push({
        number,
        offset: (ebr + own.start) * SECTOR,
        size: own.sectors * SECTOR,
        kind: 'logical',
        type: hex(own.type),
        recordOffset: ebr * SECTOR,
      });
    }
    // The link to the next record is relative to the start of the extended partition, not to this record.
    if (next.type === 0 || next.sectors === 0) return;
    ebr = extendedStart + next.start;
  }
}

/**
 * Two partitions that share sectors would have a flasher write one filesystem over another; only logical
 * partitions inside their extended container may (and must) overlap it.
 */
function assertNoOverlap(partitions: readonly PartitionInfo[]): void {
  for (let i = 0; i < partitions.length; i++) {
    for (let j = i + 1; j < partitions.length; j++) {
      const a = partitions[i] as PartitionInfo;
      const b = partitions[j] as PartitionInfo;
      const container =
        (a.kind === 'extended' && b.kind === 'logical') || (b.kind === 'extended' && a.kind === 'logical');
      if (container) continue;
      if (a.offset < b.offset + b.size && b.offset < a.offset + a.size)
        throw bad(`Partitions ${a.number} and ${b.number} overlap; the partition table is corrupt.`);
    }
  }
}

/**
 * Reads an MBR (with its extended and logical partitions) or GPT partition table, numbering partitions the
 * way `inject/<n>/` does: MBR primaries 1–4 by slot, logical partitions from 5 in chain order, GPT entries
 * by slot. Sectors are 512 bytes, as in every image a flasher writes.
 * @throws EtchError `ETCH_BAD_DISK_IMAGE` when there is no valid table.
 */
export async function readPartitionTable(read: ReadAt): Promise<PartitionTable> {
  const mbr = await readExactly(read, 0, SECTOR, 'master boot record');
  if (mbr.readUInt16LE(510) !== 0xaa55)
    throw bad('The image has no partition table (no boot signature in sector 0); it is not a disk image.');
  const slots = mbrSlots(mbr);
  if (slots.some((s) => s.type === GPT_PROTECTIVE)) return readGpt(read);
  const partitions: PartitionInfo[] = [];
  let extended: number | undefined;
  slots.forEach((slot, i) => {
    if (slot.type === 0 || slot.sectors === 0) return;
    const isExtended = MBR_EXTENDED_TYPES.has(slot.type);
    if (isExtended) {
      if (extended !== undefined) throw bad('The MBR has two extended partitions; the partition table is corrupt.');
      extended = slot.start;
    }
    partitions.push({
      number: i + 1,
      offset: slot.start * SECTOR,
      size: slot.sectors * SECTOR,
      kind: isExtended ? 'extended' : 'primary',
      type: hex(slot.type),
    });
  });
  if (extended !== undefined) await readLogical(read, extended, partitions);
  assertNoOverlap(partitions);
  return { scheme: 'mbr', sectorSize: SECTOR, partitions };
}

/**
 * Finds partition `number` in a table.
 * @throws EtchError `ETCH_BAD_DISK_IMAGE` when it does not exist or is an extended container.
 */
export function findPartition(table: PartitionTable, number: number): PartitionInfo {
  const found = table.partitions.find((p) => p.number === number);
  const have =
    table.partitions
      .filter((p) => p.kind !== 'extended')
      .map((p) => p.number)
      .join(', ') || 'none';
  if (found === undefined) throw bad(`The disk image has no partition ${number} (it has: ${have}).`);
  if (found.kind === 'extended')
    throw bad(
      `Partition ${number} is the MBR extended partition, a container for logical partitions 5 and up; files cannot go there (partitions with filesystems: ${have}).`,
    );
  return found;
}
