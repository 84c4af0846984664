import { writeFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { EtchError, isEtchError, assertFlashable, ignoreRejection, throwIfAborted, type Logger } from '@etch/format';
import { Ext4Reader, openReadAt, type Ext4Info, type PartitionInfo } from '@etch/disk';
import type { EtchInjectEntry } from '@etch/tar';
import { runTool } from './exec.js';
import { DebugfsScript, quote, runDebugfsScript, timeCommands } from './debugfs-script.js';
import { stageFile } from './stage-file.js';
import type { InjectedFile, PartitionInjector } from './injector.js';

/**
 * Hand a batch to debugfs after this much staged content or this many entries: bounds disk and memory.
 * debugfs writes one batch while the next is staged, so two batches may be staged at once.
 */
const BATCH_BYTES = 128 * 1024 * 1024;
// A batch keeps a few fields of each entry and the folders it makes until debugfs runs: 2,500 entries keep
// that to a few MiB, and smaller batches let staging and debugfs overlap for more of the apply.
const BATCH_ENTRIES = 2_500;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
/** debugfs mknod's type letter and the inode's file type bits, per device entry type. */
const DEVICE_KINDS = {
  'character-device': ['c', S_IFCHR],
  'block-device': ['b', S_IFBLK],
  fifo: ['p', S_IFIFO],
} as const;

/**
 * What a staged entry needs until its batch is written: its fields, not the entry itself, whose body stream,
 * header and PAX records would otherwise stay alive for the whole batch (tens of KB per entry).
 */
type StagedEntry = Pick<
  EtchInjectEntry,
  'path' | 'type' | 'mode' | 'uid' | 'gid' | 'mtime' | 'mtimeNanoseconds' | 'symlinkTarget' | 'hardlinkTarget'
> & { devmajor: number; devminor: number };

function slim(entry: EtchInjectEntry): StagedEntry {
  return {
    path: entry.path,
    type: entry.type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    mtime: entry.mtime,
    mtimeNanoseconds: entry.mtimeNanoseconds,
    ...(entry.symlinkTarget !== undefined ? { symlinkTarget: entry.symlinkTarget } : {}),
    ...(entry.hardlinkTarget !== undefined ? { hardlinkTarget: entry.hardlinkTarget } : {}),
    devmajor: entry.header.devmajor ?? 0,
    devminor: entry.header.devminor ?? 0,
  };
}

/** Entries staged for one debugfs run, in a folder of their own. */
interface Batch {
  staged: Staged[];
  bytes: number;
  folder: string;
}

interface Staged {
  entry: StagedEntry;
  /** Local file holding the content (files) or xattr values. */
  content?: string;
  xattrFiles: [string, string][];
}

function absolute(path: string): string {
  return path === '' ? '/' : `/${path}`;
}

/**
 * Writes inject entries into an ext2/3/4 filesystem inside a disk image with e2fsprogs' debugfs: no mount,
 * no root, every entry type and attribute the format allows (files, directories, symlinks, hardlinks,
 * whiteout devices, xattrs, modes with setuid, owners, mtimes). Content is staged to local files and
 * written in batches; directories are merged with what the base image has, files replace.
 */
export class Ext4Injector implements PartitionInjector {
  private batch: Batch;
  private batches = 0;
  private sequence = 0;
  /**
   * The batch debugfs is writing while the next one is staged: the two use both cores. Its failure is
   * thrown by whatever awaits it next (the next batch, finish or settle).
   */
  private writing: Promise<void> | undefined;
  /** Directory metadata, applied once at the end: writing children changes a directory's mtime. */
  private readonly directories = new Map<string, StagedEntry>();
  private readonly files = new Map<string, InjectedFile>();
  /** Whether the filesystem's inodes have room for nanoseconds (more than 128 bytes); learnt on each batch. */
  private extraTimes = false;
  /** Whether the filesystem keeps quota usage, which debugfs does not update; learnt on each batch. */
  private quota = false;
  /** Whether the filesystem indexes large directories (`dir_index`), and its block size; learnt on each batch. */
  private dirIndex = false;
  private blockSize = 4096;
  /**
   * Bytes of directory entries this apply added to each directory, until one outgrows a block: debugfs
   * writes such a directory as a plain list, where the kernel would have given it a hashed index.
   */
  private readonly directoryBytes = new Map<string, number>();
  private largeDirectory = false;

  constructor(
    private readonly image: string,
    private partition: PartitionInfo,
    private readonly staging: string,
    private readonly options: {
      /** Makes room: grows the partition and filesystem by at least `bytes`; returns the partition's new extent. */
      grow?: (bytes: number) => Promise<PartitionInfo>;
      /**
       * Remember every file written (path, size, sha256) for {@link finish}'s list (default true). Off, the
       * list is empty and memory does not grow with the number of files: only `--verify` reads it.
       */
      keepFiles?: boolean;
      signal?: AbortSignal;
      logger?: Logger;
    } = {},
  ) {
    this.batch = this.newBatch();
  }

  private newBatch(): Batch {
    return { staged: [], bytes: 0, folder: join(this.staging, `batch-${this.batches++}`) };
  }

  private get device(): string {
    return `${this.image}?offset=${this.partition.offset}`;
  }

  async add(entry: EtchInjectEntry): Promise<void> {
    throwIfAborted(this.options.signal);
    assertFlashable({
      path: entry.path,
      entryName: entry.header.name,
      ...(entry.symlinkTarget !== undefined ? { symlinkTarget: entry.symlinkTarget } : {}),
      xattrNames: entry.xattrs.keys(),
    });
    // Once a batch, not once an entry: an awaited mkdir is a trip through the thread pool.
    const batch = this.batch;
    if (batch.staged.length === 0) await mkdir(batch.folder, { recursive: true });
    const staged: Staged = { entry: slim(entry), xattrFiles: [] };
    if (entry.type === 'file') {
      const path = join(batch.folder, String(this.sequence++));
      // Only the list of files written (--verify) needs their hashes.
      const keep = this.options.keepFiles !== false;
      const { size, sha256 } = await stageFile(entry, path, this.options.signal, keep);
      staged.content = path;
      batch.bytes += size;
      if (keep) this.files.set(absolute(entry.path), { path: absolute(entry.path), size, sha256 });
    } else {
      this.files.delete(absolute(entry.path));
      // A hardlink has its target's content as the stream has it here; a later batch may replace the target.
      const target = entry.type === 'link' ? this.files.get(absolute(entry.hardlinkTarget ?? '')) : undefined;
      if (target) this.files.set(absolute(entry.path), { ...target, path: absolute(entry.path) });
    }
    for (const [name, value] of entry.xattrs) {
      const path = join(batch.folder, String(this.sequence++));
      // An xattr value is at most a block (4 KiB): written at once, like a small file (see stage-file.ts).
      writeFileSync(path, value);
      staged.xattrFiles.push([name, path]);
    }
    batch.staged.push(staged);
    if (batch.bytes >= BATCH_BYTES || batch.staged.length >= BATCH_ENTRIES) await this.flush();
  }

  async finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }> {
    await this.flush();
    await this.writing;
    if (this.directories.size > 0) {
      await this.debugfs(this.batch.folder, async (script) => {
        for (const [path, entry] of this.directories) {
          script.add(...this.metadata(script.at(path), S_IFDIR, entry));
          await script.drain();
        }
      });
    }
    const index = this.largeDirectory && this.dirIndex;
    if (this.quota || index) await this.tidy(index);
    return { files: [...this.files.values()], partition: this.partition };
  }

  /**
   * Leaves the filesystem as the kernel would have. debugfs writes inodes without charging their owners'
   * quota, which leaves e2fsck reporting "usage inconsistent", and writes a directory of more than a block
   * as a plain list the kernel searches entry by entry. e2fsck's preen pass recounts the quota, and with
   * `index` (-D) gives every directory of more than a block its hashed index; being a preen, it also makes
   * the other safe repairs a base image may need, and exits 1 when it changed anything.
   */
  private async tidy(index: boolean): Promise<void> {
    const result = await runTool('e2fsck', [index ? '-fpD' : '-fp', this.device], {
      allowFailure: true,
      ...(this.options.signal ? { signal: this.options.signal } : {}),
    });
    if (result.code > 1) {
      const said = `${result.stdout}\n${result.stderr}`.split('\n').filter((line) => line.trim() !== '');
      throw new EtchError(
        'ETCH_IO',
        `Checking partition ${this.partition.number} after writing failed: e2fsck -p exited ${result.code} (the filesystem needs repairs a preen may not make; run e2fsck on the base image): ${said.slice(0, 10).join('; ')}`,
      );
    }
  }

  /** Commands that set the mode, owner and times of `p`, a path as {@link DebugfsScript.at} quotes it. */
  private metadata(p: string, type: number, entry: StagedEntry): string[] {
    return [
      `sif ${p} mode 0${(type | (entry.mode & 0o7777)).toString(8)}`,
      `sif ${p} uid ${entry.uid}`,
      `sif ${p} gid ${entry.gid}`,
      ...this.times(p, entry),
    ];
  }

  private times(p: string, entry: StagedEntry): string[] {
    return timeCommands(p, entry.mtime, entry.mtimeNanoseconds ?? 0, this.extraTimes);
  }

  private async reader(): Promise<{ fs: Ext4Reader; close: () => Promise<void> }> {
    const { read, close } = await openReadAt(this.image);
    try {
      return { fs: await Ext4Reader.open(read, this.partition.offset), close };
    } catch (error) {
      await close();
      throw error;
    }
  }

  /**
   * Grows the filesystem once, up front, to hold what the `.etch`'s `requirements.json` announces for this
   * partition (format 1.1), instead of growing batch by batch.
   */
  async reserve(bytes: number, entries: number, maxGrowth = Infinity): Promise<void> {
    const { fs, close } = await this.reader();
    try {
      const info = await fs.info();
      await this.growFor(info, this.blocksFor(info, bytes, entries, entries), entries, maxGrowth);
    } finally {
      await close();
    }
  }

  /** Blocks that `bytes` of content in `entries` entries (with `metadataBlocks` extra) may take. */
  private blocksFor(info: Ext4Info, bytes: number, entries: number, metadataBlocks: number): number {
    // Every entry may need a block of metadata (directory, extent or xattr block), and each file's last
    // block is partly empty. Extent blocks are rare (one per ~340 extents); count one per 340 data blocks.
    const dataBlocks = Math.ceil(bytes / info.blockSize) + entries;
    return metadataBlocks + dataBlocks + Math.ceil(dataBlocks / 340);
  }

  /** Waits for a debugfs run still writing, whatever its outcome: after a failure, before cleaning up. */
  async settle(): Promise<void> {
    await ignoreRejection(this.writing, 'the apply is failing already, with the error that stopped it');
  }

  /** Grows the filesystem first when the batch would not fit (blocks or inodes), with room to spare. */
  private async ensureRoom(fs: Ext4Reader, batch: Batch): Promise<boolean> {
    const info = await fs.info();
    this.extraTimes = info.inodeSize > 128;
    this.quota = info.quota;
    this.dirIndex = info.dirIndex;
    this.blockSize = info.blockSize;
    // The folders the batch may have to make for its entries' parents take inodes and blocks too.
    const parents = new Set<string>();
    for (const { entry } of batch.staged)
      for (let dir = posix.dirname(absolute(entry.path)); dir !== '/' && !parents.has(dir); dir = posix.dirname(dir))
        parents.add(dir);
    const inodes = batch.staged.length + parents.size;
    const metadata = batch.staged.reduce((sum, s) => sum + 1 + s.xattrFiles.length, parents.size);
    return this.growFor(info, this.blocksFor(info, batch.bytes, inodes, metadata), inodes);
  }

  private async growFor(
    info: Ext4Info,
    neededBlocks: number,
    neededInodes: number,
    maxGrowth = Infinity,
  ): Promise<boolean> {
    const reserve = Math.ceil(info.blocks * 0.02);
    const short = neededBlocks + reserve - info.freeBlocks;
    const shortInodes = neededInodes - info.freeInodes;
    if (short <= 0 && shortInodes <= 0) return false;
    if (this.options.grow === undefined) {
      throw new EtchError(
        'ETCH_BAD_DISK_IMAGE',
        `Partition ${this.partition.number} is too small: it has ${info.freeBlocks * info.blockSize} bytes and ${info.freeInodes} inodes free, the entries need about ${neededBlocks * info.blockSize} bytes and ${neededInodes} inodes. Apply onto an image file (it grows) or pass a larger --size.`,
      );
    }
    // Inodes come only with whole block groups (inodes per group is fixed at mkfs time), so enough inodes
    // means enough groups: the filesystem must reach into the last group it needs.
    const groupsForInodes = Math.ceil((info.inodes - info.freeInodes + neededInodes) / info.inodesPerGroup);
    const blocksForInodes = (groupsForInodes - 1) * info.blocksPerGroup + 1024;
    const shortForInodes = shortInodes > 0 ? Math.max(0, blocksForInodes - info.blocks) * info.blockSize : 0;
    const grow = Math.max(Math.max(short, 0) * info.blockSize * 1.25, shortForInodes) + 4 * 1024 * 1024;
    if (grow > maxGrowth)
      throw new EtchError(
        'ETCH_BAD_DISK_IMAGE',
        `Partition ${this.partition.number} would grow by ${Math.ceil(grow)} bytes, more than the ${maxGrowth} allowed here.`,
      );
    this.options.logger?.info('growing partition', { partition: this.partition.number, bytes: Math.ceil(grow) });
    this.partition = await this.options.grow(Math.ceil(grow));
    return true;
  }

  /** Hands the staged batch to debugfs once the batch before it is written, and returns while it writes. */
  private async flush(): Promise<void> {
    const batch = this.batch;
    if (batch.staged.length === 0) return;
    // One batch at a time: its plan reads the filesystem as the batch before left it.
    await this.writing;
    this.batch = this.newBatch();
    this.writing = this.write(batch);
    void ignoreRejection(this.writing, 'awaited by the next flush, finish or settle, which throw its failure');
  }

  private async write(batch: Batch): Promise<void> {
    throwIfAborted(this.options.signal);
    let reader = await this.reader();
    try {
      if (await this.ensureRoom(reader.fs, batch)) {
        await reader.close();
        reader = await this.reader();
      }
      const fs = reader.fs;
      await this.debugfs(batch.folder, (script) => this.plan(fs, script, batch));
    } finally {
      await reader.close();
    }
    await rm(batch.folder, { recursive: true, force: true });
  }

  /** Translates the staged entries into debugfs commands, checking what exists against the filesystem. */
  private async plan(fs: Ext4Reader, commands: DebugfsScript, batch: Batch): Promise<void> {
    // What this batch has made so far, which the reader (reading the image as it was) cannot see yet, and what
    // the reader has already answered.
    const made = new Map<string, 'directory' | 'other'>();
    const linkCounts = new Map<string, number>();
    // Folders this batch makes, absent from the image the reader sees: nothing below them needs looking up.
    const fresh = new Set<string>();
    const kind = async (path: string): Promise<'directory' | 'other' | undefined> => {
      if (made.has(path) || fresh.has(posix.dirname(path))) return made.get(path);
      const stat = await fs.stat(path).catch((error: unknown) => {
        // A symlinked parent in the base image: the path exists behind a link, which is not followed.
        if (isEtchError(error) && /symlink/.test(error.message)) {
          throw new EtchError(
            'ETCH_UNSAFE_PATH',
            `${path} goes through a symlink in partition ${this.partition.number} of the base image; the flasher does not follow it.`,
            { cause: error },
          );
        }
        throw error;
      });
      const found = stat === undefined ? undefined : stat.type === 'directory' ? 'directory' : 'other';
      // Remembered for the batch: every entry below a folder asks about it again, and each answer from the
      // reader walks the path from the root (a 20,000-file batch spent seconds re-reading the same inodes).
      if (found !== undefined) made.set(path, found);
      return found;
    };
    const ensureParents = async (path: string) => {
      const parents: string[] = [];
      for (let dir = posix.dirname(path); dir !== '/'; dir = posix.dirname(dir)) parents.unshift(dir);
      for (const dir of parents) {
        const found = await kind(dir);
        if (found === 'directory') continue;
        if (found === 'other')
          throw new EtchError(
            'ETCH_BAD_ENTRY',
            `${dir} is not a directory in partition ${this.partition.number}, but entries go below it.`,
          );
        commands.add(`mkdir ${commands.at(dir)}`);
        this.countEntry(dir);
        made.set(dir, 'directory');
        fresh.add(dir);
      }
    };
    const replace = async (path: string, p: string) => {
      const found = await kind(path);
      if (found === 'directory') {
        throw new EtchError(
          'ETCH_BAD_ENTRY',
          `${path} is a directory in partition ${this.partition.number}; a file, link or device cannot replace it.`,
        );
      }
      if (found === 'other') commands.add(`rm ${p}`);
    };

    for (const { entry, content, xattrFiles } of batch.staged) {
      const path = absolute(entry.path);
      if (path !== '/') await ensureParents(path);
      // After the parents, which may change debugfs's directory: every command below uses this name.
      const p = commands.at(path);
      if (path !== '/') this.countEntry(path);
      switch (entry.type) {
        case 'directory': {
          const found = path === '/' ? 'directory' : await kind(path);
          if (found === 'other') {
            commands.add(`rm ${p}`);
          }
          if (found !== 'directory') {
            commands.add(`mkdir ${p}`);
            fresh.add(path);
          }
          made.set(path, 'directory');
          this.directories.set(path, entry);
          break;
        }
        case 'file':
          await replace(path, p);
          commands.add(`write ${quote(content as string)} ${p}`, ...this.metadata(p, S_IFREG, entry));
          made.set(path, 'other');
          linkCounts.set(path, 1);
          break;
        case 'symlink':
          await replace(path, p);
          commands.add(`symlink ${p} ${quote(entry.symlinkTarget ?? '')}`);
          commands.add(`sif ${p} uid ${entry.uid}`, `sif ${p} gid ${entry.gid}`, ...this.times(p, entry));
          made.set(path, 'other');
          break;
        case 'link': {
          const target = absolute(entry.hardlinkTarget ?? '');
          if ((await kind(target)) !== 'other') {
            throw new EtchError(
              'ETCH_BAD_ENTRY',
              `Hardlink ${path} points to ${target}, which is not a file in partition ${this.partition.number}.`,
            );
          }
          await replace(path, p);
          let count = linkCounts.get(target);
          if (count === undefined) count = (await fs.stat(target))?.links ?? 1;
          count += 1;
          linkCounts.set(target, count);
          // debugfs's ln adds the name only; the inode's link count is ours to keep right.
          commands.add(`ln ${quote(target)} ${p}`, `sif ${quote(target)} links_count ${count}`);
          made.set(path, 'other');
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo': {
          await replace(path, p);
          const major = entry.devmajor;
          const minor = entry.devminor;
          const [letter, fileType] = DEVICE_KINDS[entry.type];
          // debugfs's mknod takes a name in the current directory (where `at` went), not a path.
          const name = quote(posix.basename(path));
          commands.add(entry.type === 'fifo' ? `mknod ${name} p` : `mknod ${name} ${letter} ${major} ${minor}`);
          commands.add(...this.metadata(p, fileType | entry.mode, entry));
          made.set(path, 'other');
          break;
        }
      }
      for (const [name, file] of xattrFiles) commands.add(`ea_set -f ${quote(file)} ${p} ${quote(name)}`);
      await commands.drain();
    }
  }

  /** Adds a directory entry for `path` to its parent's size: a name, 8 bytes of header, padded to 4 bytes. */
  private countEntry(path: string): void {
    if (this.largeDirectory) return;
    const parent = posix.dirname(path);
    const bytes =
      (this.directoryBytes.get(parent) ?? 0) + 8 + Math.ceil(Buffer.byteLength(posix.basename(path)) / 4) * 4;
    if (bytes <= this.blockSize) {
      this.directoryBytes.set(parent, bytes);
      return;
    }
    this.largeDirectory = true;
    this.directoryBytes.clear();
  }

  /** Runs the commands `write` puts in a script (written as they come), failing on any error debugfs reports. */
  private async debugfs(folder: string, write: (script: DebugfsScript) => Promise<void>): Promise<void> {
    await mkdir(folder, { recursive: true });
    const script = await DebugfsScript.create(join(folder, 'commands'));
    try {
      await write(script);
    } finally {
      await script.close();
    }
    await runDebugfsScript(this.device, script, this.partition.number, this.options);
  }
}
