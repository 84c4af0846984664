import { open } from 'node:fs/promises';
import { run } from './run.js';

const SECTOR = 512;

function mbrSlot(sector: Buffer, index: number, type: number, start: number, sectors: number): void {
  const at = 446 + index * 16;
  sector[at + 4] = type;
  sector.writeUInt32LE(start, at + 8);
  sector.writeUInt32LE(sectors, at + 12);
}

/**
 * A small disk whose protective MBR leads to a GPT header declaring `count` entries of `entrySize` bytes:
 * with a huge entry size, a reader that trusts it asks for gigabytes at once.
 */
export function gptWithEntries(entrySize: number, count = 128, sectors = 128): Buffer {
  const disk = Buffer.alloc(sectors * SECTOR);
  mbrSlot(disk, 0, 0xee, 1, sectors - 1);
  disk.writeUInt16LE(0xaa55, 510);
  const header = disk.subarray(SECTOR, 2 * SECTOR);
  header.write('EFI PART', 0, 'latin1');
  header.writeUInt32LE(0x00010000, 8);
  header.writeUInt32LE(92, 12);
  header.writeBigUInt64LE(1n, 24);
  header.writeBigUInt64LE(BigInt(sectors - 1), 32);
  header.writeBigUInt64LE(34n, 40);
  header.writeBigUInt64LE(BigInt(sectors - 34), 48);
  header.writeBigUInt64LE(2n, 72);
  header.writeUInt32LE(count, 80);
  header.writeUInt32LE(entrySize, 84);
  return disk;
}

/** A small MBR disk whose two primary partitions share sectors. */
export function overlappingMbr(sectors = 4096): Buffer {
  const disk = Buffer.alloc(sectors * SECTOR);
  mbrSlot(disk, 0, 0x83, 2048, 1024);
  mbrSlot(disk, 1, 0x83, 2560, 1024);
  disk.writeUInt16LE(0xaa55, 510);
  return disk;
}

function extentHeader(node: Buffer, entries: number, capacity: number, depth: number): void {
  node.writeUInt16LE(0xf30a, 0);
  node.writeUInt16LE(entries, 2);
  node.writeUInt16LE(capacity, 4);
  node.writeUInt16LE(depth, 6);
}

function indexEntry(node: Buffer, slot: number, child: number): void {
  const at = 12 + slot * 12;
  node.writeUInt32LE(slot, at);
  node.writeUInt32LE(child, at + 4);
  node.writeUInt16LE(0, at + 8);
}

/**
 * Rewrites the extent tree of `target` (a file) in the ext4 filesystem at byte `offset` of `image` into a
 * "bomb": a depth-5 tree whose every index node lists the same child 340 times, on blocks borrowed from
 * `spare` (a file of at least 5 data blocks in the same filesystem). Walked naively it has 340^5 leaves.
 * The filesystem is otherwise intact; the checksums of the inode and nodes are not updated.
 */
export async function plantExtentBomb(image: string, offset: number, target: string, spare: string): Promise<void> {
  const device = `${image}?offset=${offset}`;
  const imap = await run('debugfs', ['-R', `imap ${target}`, device]);
  const located = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(imap.stdout);
  if (located === null) throw new Error(`debugfs imap ${target}: ${imap.stdout}${imap.stderr}`);
  const blocks = (await run('debugfs', ['-R', `blocks ${spare}`, device])).stdout.trim().split(/\s+/).map(Number);
  if (blocks.length < 5) throw new Error(`${spare} has ${blocks.length} blocks; 5 are needed`);
  const sb = Buffer.alloc(1024);
  const handle = await open(image, 'r+');
  try {
    await handle.read(sb, 0, 1024, offset + 1024);
    const blockSize = 1024 << sb.readUInt32LE(24);
    const perNode = Math.floor((blockSize - 12) / 12);
    // Index nodes at depths 4..1 on the spare blocks, a leaf of `perNode` one-block extents last.
    const [d4, d3, d2, d1, leaf] = blocks as [number, number, number, number, number];
    const chain: [number, number, number | undefined][] = [
      [d4, 4, d3],
      [d3, 3, d2],
      [d2, 2, d1],
      [d1, 1, leaf],
      [leaf, 0, undefined],
    ];
    for (const [block, depth, child] of chain) {
      const node = Buffer.alloc(blockSize);
      extentHeader(node, perNode, perNode, depth);
      for (let slot = 0; slot < perNode; slot++) {
        if (child !== undefined) indexEntry(node, slot, child);
        else {
          const at = 12 + slot * 12;
          node.writeUInt32LE(slot, at);
          node.writeUInt16LE(1, at + 4);
          node.writeUInt32LE(leaf, at + 8);
        }
      }
      await handle.write(node, 0, blockSize, offset + block * blockSize);
    }
    const root = Buffer.alloc(60);
    extentHeader(root, 4, 4, 5);
    for (let slot = 0; slot < 4; slot++) indexEntry(root, slot, d4);
    const inodeAt = offset + Number(located[1]) * blockSize + Number.parseInt(located[2] as string, 16);
    await handle.write(root, 0, 60, inodeAt + 40);
  } finally {
    await handle.close();
  }
}
