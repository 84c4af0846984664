import { EtchError } from '@etch/format';
import type { ReadAt } from './partition-table.js';

/**
 * A read-only ext2/3/4 reader, just enough to read a small file by path from a filesystem inside a disk
 * image without mounting it (no root, no loop device, any OS): superblock, group descriptors, inodes,
 * extent trees and classic block maps, linear directories (htree directories read linearly too, since
 * their leaves are ordinary directory blocks).
 */

const SUPERBLOCK_OFFSET = 1024;
const EXT_MAGIC = 0xef53;
const EXTENT_MAGIC = 0xf30a;
const INCOMPAT_64BIT = 0x80;
/** s_feature_compat bit of the dir_index feature (hashed directories). */
const COMPAT_DIR_INDEX = 0x20;
/** s_feature_ro_compat bit of the quota feature (usage kept in hidden quota inodes). */
const RO_COMPAT_QUOTA = 0x100;
const INODE_FLAG_EXTENTS = 0x80000;
const INODE_FLAG_INLINE = 0x10000000;
const ROOT_INODE = 2;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const MAX_EXTENT_DEPTH = 5;
// Extent tree nodes a walk may visit beyond one per block of the file: a valid tree has far fewer nodes
// than blocks, so a crafted one (fan-out, revisits) is cut off long before it costs memory or time.
const EXTENT_NODE_SLACK = 64;
const EXTENT_RUN_SLACK = 1024;

function bad(message: string): EtchError {
  return new EtchError('ETCH_BAD_DISK_IMAGE', message);
}

interface Inode {
  mode: number;
  size: number;
  flags: number;
  block: Buffer;
  uid: number;
  gid: number;
  mtime: number;
  links: number;
}

/** What {@link Ext4Reader.stat} tells about a path. */
export interface Ext4Stat {
  inode: number;
  type: 'file' | 'directory' | 'symlink' | 'character-device' | 'block-device' | 'fifo' | 'socket';
  /** Permission bits with setuid, setgid and sticky (`0o4755`). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Hard link count. */
  links: number;
}

const TYPES: Record<number, Ext4Stat['type']> = {
  0o100000: 'file',
  0o040000: 'directory',
  0o120000: 'symlink',
  0o020000: 'character-device',
  0o060000: 'block-device',
  0o010000: 'fifo',
  0o140000: 'socket',
};

/** A mapped run of file blocks: `count` blocks from logical `logical` at physical block `physical` (0: a hole). */
interface Run {
  logical: number;
  physical: number;
  count: number;
}

/** Sizes and free space of a filesystem, from its superblock. */
export interface Ext4Info {
  blockSize: number;
  blocks: number;
  freeBlocks: number;
  inodes: number;
  freeInodes: number;
  /** Blocks per block group: the unit resize2fs adds inodes in. */
  blocksPerGroup: number;
  /** Inodes per block group: fixed at mkfs time, so growing a filesystem adds inodes only group by group. */
  inodesPerGroup: number;
  /** Bytes per inode: above 128 there is room for nanosecond times. */
  inodeSize: number;
  /** The `quota` feature: the filesystem keeps per-owner usage that a writer bypassing the kernel must recount. */
  quota: boolean;
  /** The `dir_index` feature: the kernel gives a directory of more than one block a hashed index (htree). */
  dirIndex: boolean;
}

/**
 * A small read-only reader of ext2/3/4 filesystems inside a disk image: extents, block maps and hashed
 * directories; symlinks are never followed. Enough to read a file (an `apps.json`, the engine's
 * `repositories.json`) or to check what a writer put there, without mounting anything.
 */
export class Ext4Reader {
  private constructor(
    private readonly readAt: ReadAt,
    private readonly base: number,
    private readonly blockSize: number,
    private readonly inodeSize: number,
    private readonly inodesPerGroup: number,
    private readonly descSize: number,
    private readonly descTable: number,
    private readonly inodeCount: number,
  ) {}

  /**
   * Opens the filesystem that starts at byte `offset` of the image.
   * @throws EtchError `ETCH_BAD_DISK_IMAGE` when it is not ext2/3/4 or uses a feature this reader cannot read.
   */
  static async open(read: ReadAt, offset = 0): Promise<Ext4Reader> {
    const sb = Buffer.from(await read(offset + SUPERBLOCK_OFFSET, 1024));
    if (sb.length < 1024 || sb.readUInt16LE(56) !== EXT_MAGIC)
      throw bad('The partition holds no ext2/3/4 filesystem (no superblock magic).');
    const logBlockSize = sb.readUInt32LE(24);
    if (logBlockSize > 6) throw bad(`The ext4 superblock declares an impossible block size (2^${10 + logBlockSize}).`);
    const blockSize = 1024 << logBlockSize;
    const revision = sb.readUInt32LE(76);
    const inodeSize = revision === 0 ? 128 : sb.readUInt16LE(88);
    const incompat = sb.readUInt32LE(96);
    const descSize = incompat & INCOMPAT_64BIT ? sb.readUInt16LE(254) : 32;
    const firstDataBlock = sb.readUInt32LE(20);
    const inodesPerGroup = sb.readUInt32LE(40);
    const inodeCount = sb.readUInt32LE(0);
    if (inodeSize < 128 || inodeSize > blockSize || inodesPerGroup === 0 || descSize < 32 || descSize > 1024)
      throw bad('The ext4 superblock is inconsistent; the filesystem is corrupt.');
    return new Ext4Reader(
      read,
      offset,
      blockSize,
      inodeSize,
      inodesPerGroup,
      descSize,
      (firstDataBlock + 1) * blockSize,
      inodeCount,
    );
  }

  /** Block size, block and inode counts and what is free, as the superblock records them. */
  async info(): Promise<Ext4Info> {
    const sb = await this.bytes(SUPERBLOCK_OFFSET, 1024);
    const wide = this.descSize >= 64;
    const high = (at: number) => (wide ? sb.readUInt32LE(at) * 2 ** 32 : 0);
    return {
      blockSize: this.blockSize,
      blocks: high(0x150) + sb.readUInt32LE(4),
      freeBlocks: high(0x158) + sb.readUInt32LE(12),
      inodes: sb.readUInt32LE(0),
      freeInodes: sb.readUInt32LE(16),
      blocksPerGroup: sb.readUInt32LE(32),
      inodesPerGroup: this.inodesPerGroup,
      inodeSize: this.inodeSize,
      quota: (sb.readUInt32LE(100) & RO_COMPAT_QUOTA) !== 0,
      dirIndex: (sb.readUInt32LE(92) & COMPAT_DIR_INDEX) !== 0,
    };
  }

  private async bytes(offset: number, length: number): Promise<Buffer> {
    const data = Buffer.from(await this.readAt(this.base + offset, length));
    if (data.length < length)
      throw bad('The ext4 filesystem points past the end of the image; it is truncated or corrupt.');
    return data;
  }

  private async inode(number: number): Promise<Inode> {
    if (number < 1 || number > this.inodeCount)
      throw bad(`A directory entry points to inode ${number}, which does not exist; the filesystem is corrupt.`);
    const group = Math.floor((number - 1) / this.inodesPerGroup);
    const index = (number - 1) % this.inodesPerGroup;
    const desc = await this.bytes(this.descTable + group * this.descSize, this.descSize);
    const tableLo = desc.readUInt32LE(8);
    const tableHi = this.descSize >= 64 ? desc.readUInt32LE(0x28) : 0;
    const table = tableHi * 2 ** 32 + tableLo;
    const raw = await this.bytes(table * this.blockSize + index * this.inodeSize, 128);
    return {
      mode: raw.readUInt16LE(0),
      size: raw.readUInt32LE(108) * 2 ** 32 + raw.readUInt32LE(4),
      flags: raw.readUInt32LE(32),
      block: raw.subarray(40, 100),
      // The high 16 bits of owner ids live in the OS-dependent tail of the inode (Linux layout).
      uid: raw.readUInt16LE(120) * 65536 + raw.readUInt16LE(2),
      gid: raw.readUInt16LE(122) * 65536 + raw.readUInt16LE(24),
      mtime: raw.readUInt32LE(16),
      links: raw.readUInt16LE(26),
    };
  }

  /**
   * Collects the leaf extents of a tree. Each node's depth must be one less than its parent's, entries
   * must fit the node and its declared capacity, no node is read twice, and the walk stops after `budget`
   * nodes or runs: a crafted tree cannot make it loop, fan out or fill memory.
   */
  private async extentRuns(
    node: Buffer,
    expectedDepth: number | undefined,
    runs: Run[],
    budget: { nodes: number; runs: number; visited: Set<number> },
  ): Promise<void> {
    const corrupt = () => bad('An ext4 extent tree is corrupt.');
    if (node.length < 12 || node.readUInt16LE(0) !== EXTENT_MAGIC) throw corrupt();
    const entries = node.readUInt16LE(2);
    const capacity = node.readUInt16LE(4);
    const treeDepth = node.readUInt16LE(6);
    if (entries > capacity || 12 + entries * 12 > node.length) throw corrupt();
    if (treeDepth > MAX_EXTENT_DEPTH || (expectedDepth !== undefined && treeDepth !== expectedDepth)) throw corrupt();
    for (let i = 0; i < entries; i++) {
      const at = 12 + i * 12;
      if (treeDepth === 0) {
        if (runs.length >= budget.runs) throw bad('An ext4 extent tree has more extents than its file has blocks.');
        const length = node.readUInt16LE(at + 4);
        // Lengths above 32768 mark unwritten (preallocated) extents: they read as zeros, like holes.
        const unwritten = length > 32768;
        const physical = node.readUInt16LE(at + 6) * 2 ** 32 + node.readUInt32LE(at + 8);
        runs.push({
          logical: node.readUInt32LE(at),
          physical: unwritten ? 0 : physical,
          count: unwritten ? length - 32768 : length,
        });
      } else {
        const child = node.readUInt16LE(at + 8) * 2 ** 32 + node.readUInt32LE(at + 4);
        if (budget.visited.has(child) || budget.visited.size >= budget.nodes) throw corrupt();
        budget.visited.add(child);
        const block = await this.bytes(child * this.blockSize, this.blockSize);
        await this.extentRuns(block, treeDepth - 1, runs, budget);
      }
    }
  }

  private async mappedRuns(
    pointers: number[],
    level: number,
    logical: { next: number },
    runs: Run[],
    limit: number,
  ): Promise<void> {
    const perBlock = this.blockSize / 4;
    for (const pointer of pointers) {
      if (logical.next >= limit) return;
      const span = perBlock ** level;
      if (pointer === 0) {
        logical.next += span;
        continue;
      }
      if (level === 0) {
        runs.push({ logical: logical.next, physical: pointer, count: 1 });
        logical.next += 1;
        continue;
      }
      const block = await this.bytes(pointer * this.blockSize, this.blockSize);
      const children = Array.from({ length: perBlock }, (_, i) => block.readUInt32LE(i * 4));
      await this.mappedRuns(children, level - 1, logical, runs, limit);
    }
  }

  private async runsOf(inode: Inode): Promise<Run[]> {
    const runs: Run[] = [];
    if (inode.flags & INODE_FLAG_EXTENTS) {
      const blocks = Math.ceil(inode.size / this.blockSize);
      await this.extentRuns(inode.block, undefined, runs, {
        nodes: blocks + EXTENT_NODE_SLACK,
        runs: blocks + EXTENT_RUN_SLACK,
        visited: new Set(),
      });
      return runs;
    }
    const limit = Math.ceil(inode.size / this.blockSize);
    const pointer = (i: number) => inode.block.readUInt32LE(i * 4);
    const logical = { next: 0 };
    await this.mappedRuns(
      Array.from({ length: 12 }, (_, i) => pointer(i)),
      0,
      logical,
      runs,
      limit,
    );
    for (let level = 1; level <= 3; level++) await this.mappedRuns([pointer(11 + level)], level, logical, runs, limit);
    return runs;
  }

  private async content(inode: Inode, maxBytes: number, path: string): Promise<Buffer> {
    if (inode.size > maxBytes)
      throw bad(`${path} is ${inode.size} bytes, more than the ${maxBytes} this reader loads.`);
    if (inode.flags & INODE_FLAG_INLINE)
      throw bad(`${path} is stored inline in its inode (ext4 inline_data), which this reader does not support.`);
    const out = Buffer.alloc(inode.size);
    for (const run of await this.runsOf(inode)) {
      const start = run.logical * this.blockSize;
      if (start >= out.length || run.physical === 0) continue;
      const length = Math.min(run.count * this.blockSize, out.length - start);
      (await this.bytes(run.physical * this.blockSize, length)).copy(out, start);
    }
    return out;
  }

  private async lookup(directory: Inode, name: string, path: string): Promise<number | undefined> {
    const data = await this.content(directory, 64 * 1024 * 1024, path);
    let at = 0;
    while (at + 8 <= data.length) {
      const inode = data.readUInt32LE(at);
      const recordLength = data.readUInt16LE(at + 4);
      const nameLength = data[at + 6] as number;
      if (recordLength < 8) throw bad(`The directory ${path} is corrupt.`);
      // inode 0 marks deleted entries, htree index blocks and checksum tails: none of them name a file.
      if (inode !== 0 && data.toString('utf8', at + 8, at + 8 + nameLength) === name) return inode;
      at += recordLength;
    }
    return undefined;
  }

  /** Finds the inode of an absolute path without following symlinks anywhere; `undefined` when missing. */
  private async resolve(path: string): Promise<{ number: number; inode: Inode; path: string } | undefined> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    let number = ROOT_INODE;
    let current = await this.inode(number);
    let walked = '';
    for (const part of parts) {
      if ((current.mode & S_IFMT) === S_IFLNK)
        throw bad(`${walked} is a symlink in the filesystem; it is not followed.`);
      if ((current.mode & S_IFMT) !== S_IFDIR) throw bad(`${walked || '/'} is not a directory in the filesystem.`);
      const next = await this.lookup(current, part, walked || '/');
      if (next === undefined) return undefined;
      walked += `/${part}`;
      number = next;
      current = await this.inode(next);
    }
    return { number, inode: current, path: walked || '/' };
  }

  /** Type, mode, owner, size, mtime and link count of a path (the last component is not followed); `undefined` when missing. */
  async stat(path: string): Promise<Ext4Stat | undefined> {
    const found = await this.resolve(path);
    if (found === undefined) return undefined;
    const { inode } = found;
    return {
      inode: found.number,
      type: TYPES[inode.mode & S_IFMT] ?? 'file',
      mode: inode.mode & 0o7777,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.size,
      mtime: inode.mtime,
      links: inode.links,
    };
  }

  /** The target of a symlink. */
  async readlink(path: string): Promise<string> {
    const found = await this.resolve(path);
    if (found === undefined || (found.inode.mode & S_IFMT) !== S_IFLNK)
      throw bad(`${path} is not a symlink in the filesystem.`);
    const { inode } = found;
    // Short targets live in the inode's block array ("fast" symlinks); longer ones in a data block.
    if (inode.size < 60 && !(inode.flags & INODE_FLAG_EXTENTS)) return inode.block.toString('utf8', 0, inode.size);
    return (await this.content(inode, 4096, path)).toString('utf8');
  }

  /**
   * Streams a regular file's content, block run by block run (holes as zeros), in bounded memory.
   * @throws EtchError `ETCH_BAD_DISK_IMAGE` when the path is missing or not a regular file.
   */
  async *readFileStream(path: string, chunkSize = 1024 * 1024): AsyncGenerator<Buffer> {
    const found = await this.resolve(path);
    if (found === undefined) throw bad(`${path} does not exist in the filesystem.`);
    if ((found.inode.mode & S_IFMT) !== S_IFREG) throw bad(`${path} is not a regular file in the filesystem.`);
    if (found.inode.flags & INODE_FLAG_INLINE)
      throw bad(`${path} is stored inline in its inode (ext4 inline_data), which this reader does not support.`);
    const runs = (await this.runsOf(found.inode)).filter((r) => r.physical !== 0).sort((a, b) => a.logical - b.logical);
    const size = found.inode.size;
    let position = 0;
    for (const run of runs) {
      const start = run.logical * this.blockSize;
      if (start >= size) break;
      if (start < position) throw bad(`${path} has overlapping extents; the filesystem is corrupt.`);
      for (; position < start; position += Math.min(chunkSize, start - position))
        yield Buffer.alloc(Math.min(chunkSize, start - position));
      const end = Math.min(size, start + run.count * this.blockSize);
      for (let at = start; at < end; at += chunkSize) {
        const length = Math.min(chunkSize, end - at);
        yield await this.bytes(run.physical * this.blockSize + (at - start), length);
      }
      position = end;
    }
    for (; position < size; position += Math.min(chunkSize, size - position))
      yield Buffer.alloc(Math.min(chunkSize, size - position));
  }

  /**
   * Reads a regular file by its absolute path in the filesystem, up to `maxBytes`. Resolves to `undefined`
   * when a component does not exist. Symlinks are not followed (an error): a path inside a disk image must
   * not be steered elsewhere by the image.
   */
  async readFile(path: string, maxBytes = 16 * 1024 * 1024): Promise<Buffer | undefined> {
    const found = await this.resolve(path);
    if (found === undefined) return undefined;
    if ((found.inode.mode & S_IFMT) === S_IFLNK)
      throw bad(`${found.path} is a symlink in the filesystem; it is not followed.`);
    if ((found.inode.mode & S_IFMT) !== S_IFREG) throw bad(`${found.path} is not a regular file in the filesystem.`);
    return this.content(found.inode, maxBytes, found.path);
  }
}
