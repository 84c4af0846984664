/**
 * The fast way into an ext2/3/4 partition, for root: the partition is loop-mounted and bsdtar extracts a tar
 * of the entries into it, so the kernel allocates blocks, indexes directories and keeps quota as it would for
 * any write. Opt-in (`mount: true`), because the kernel then parses the base image's filesystem, and a
 * crafted one can attack the kernel; debugfs reads it in user space.
 *
 * bsdtar (libarchive) rather than GNU tar: without -P it refuses to extract through a symlink already on the
 * target, where GNU tar follows one the base image has, out of the mount and onto the host.
 *
 * What bsdtar or the kernel would write differently from the debugfs path is left out of the tar and written
 * by one debugfs run once the partition is unmounted: every xattr (libarchive skips POSIX ACLs and a hardlink's
 * xattrs without a word, and the kernel refuses `user.*` on a symlink), owner 4294967295 (to chown, -1 means
 * "unchanged"), times before 1970, and the times of directories bsdtar did not make from their own entry (it
 * sets those at once, before their children change them; those it makes, it sets once everything is written).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { lstatSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EtchError, assertFlashable, ignoreRejection, throwIfAborted, type Logger } from '@etch/format';
import { Ext4Reader, openReadAt, type PartitionInfo } from '@etch/disk';
import {
  createTarPack,
  promisePacker,
  whenPackerIdle,
  type EntryHeader,
  type EtchInjectEntry,
  type EntryWriter,
  type TarPack,
} from '@etch/tar';
import { DebugfsScript, quote, runDebugfsScript, timeCommands } from './debugfs-script.js';
import { forEachLine } from './exec.js';
import { loopMount, loopUnmount } from './loop-mount.js';
import type { InjectedFile, PartitionInjector } from './injector.js';

/** The tar's entries live under this folder, which bsdtar's `-s` maps to the mount's root (`r/` is `./`). */
const ROOT = 'r';
/** bsdtar's stderr lines kept for a report. */
const MAX_ERROR_LINES = 5;
/** The owner id chown reads as "leave unchanged". */
const UNCHANGED_ID = 0xffffffff;

function absolute(path: string): string {
  return path === '' ? '/' : `/${path}`;
}

/** Content handed to the tar, hashed on the way for `--verify`. */
async function* hashed(content: Readable, hash: Hash, signal: AbortSignal | undefined): AsyncIterable<Buffer> {
  for await (const chunk of content as AsyncIterable<Buffer>) {
    throwIfAborted(signal);
    hash.update(chunk);
    yield chunk;
  }
}

export interface MountedExt4Options {
  /** Remember every file written (path, size, sha256) for `finish`'s list; only `--verify` reads it. */
  keepFiles?: boolean;
  signal?: AbortSignal;
  logger?: Logger;
}

/** What bsdtar runs in, and writes into. */
interface Extraction {
  child: ChildProcess;
  exited: Promise<number>;
  pack: TarPack;
  piped: Promise<void>;
  write: EntryWriter;
}

/** Writes one ext partition's inject entries through a loop mount; see the module comment. */
export class MountedExt4Injector implements PartitionInjector {
  private readonly files = new Map<string, InjectedFile>();
  private failure: EtchError | undefined;
  private readonly errorLines: string[] = [];
  /** Every directory entry's time, set once bsdtar is done (see the module comment). */
  private readonly directories = new Map<string, { mtime: Date; nanoseconds: number }>();
  /**
   * Directories bsdtar makes from their own entry: not in the base image, and not made earlier for an entry
   * below them. Nothing of the base image lies below them, and bsdtar sets their times once all is written.
   */
  private readonly newDirectories = new Set<string>();
  /** Every folder above an entry so far: bsdtar may have made it before its own entry came. */
  private readonly ancestors = new Set<string>();
  private extraction!: Extraction;
  private xattrFiles = 0;

  private constructor(
    private readonly image: string,
    private readonly partition: PartitionInfo,
    private readonly staging: string,
    /** Commands for debugfs once the partition is unmounted, written as entries come. */
    private readonly after: DebugfsScript,
    /** Whether the inodes keep nanoseconds (larger than 128 bytes). */
    private readonly extraTimes: boolean,
    private readonly options: MountedExt4Options,
  ) {}

  private get mountpoint(): string {
    return join(this.staging, 'mnt');
  }

  /**
   * Mounts partition `partition` of `image` (a file or a block device) in `staging` and starts bsdtar on it.
   * The partition must already have room for the entries: nothing grows while it is mounted.
   */
  static async mount(
    image: string,
    partition: PartitionInfo,
    staging: string,
    options: MountedExt4Options = {},
  ): Promise<MountedExt4Injector> {
    if (process.getuid?.() !== 0) {
      throw new EtchError(
        'ETCH_USAGE',
        `Writing partition ${partition.number} through a mount needs root (it attaches a loop device and mounts the partition); run as root or without --mount.`,
      );
    }
    const { read, close } = await openReadAt(image);
    const info = await Ext4Reader.open(read, partition.offset)
      .then((fs) => fs.info())
      .finally(close);
    await mkdir(join(staging, 'xattrs'), { recursive: true, mode: 0o700 });
    await mkdir(join(staging, 'mnt'), { mode: 0o700 });
    const after = await DebugfsScript.create(join(staging, 'after-unmount'));
    const injector = new MountedExt4Injector(image, partition, staging, after, info.inodeSize > 128, options);
    try {
      await loopMount(image, partition, injector.mountpoint);
    } catch (error) {
      await after.close();
      throw error;
    }
    try {
      injector.extraction = injector.startBsdtar();
    } catch (error) {
      await loopUnmount(injector.mountpoint, options.logger);
      await after.close();
      throw error;
    }
    return injector;
  }

  private startBsdtar(): Extraction {
    const { signal } = this.options;
    const child = spawn(
      'bsdtar',
      // -p: modes with setuid; --numeric-owner: ids as they are, never looked up on this host; no xattrs.
      [
        '-x',
        '-p',
        '--no-xattrs',
        '--no-acls',
        '--numeric-owner',
        '-s',
        `,^${ROOT}/,./,S`,
        '-C',
        this.mountpoint,
        '-f',
        '-',
      ],
      {
        stdio: ['pipe', 'ignore', 'pipe'],
        // UTF-8 names stay UTF-8 only in a UTF-8 locale; in "C" libarchive cannot translate them.
        env: { ...process.env, LC_ALL: 'C.UTF-8' },
        // Its own process group: a Ctrl-C reaches etch, which stops it and unmounts.
        detached: true,
        ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}),
      },
    );
    const exited = new Promise<number>((resolve) => {
      child.once('error', () => resolve(-1));
      child.once('close', (code) => resolve(code ?? -1));
    });
    child.once('error', (cause: NodeJS.ErrnoException) =>
      this.fail(
        new EtchError(
          'ETCH_IO',
          cause.code === 'ENOENT'
            ? 'etch apply --mount needs bsdtar, which is not installed (Debian/Ubuntu: apt-get install libarchive-tools).'
            : `bsdtar failed to run: ${cause.message}`,
          { cause },
        ),
      ),
    );
    if (child.stderr) forEachLine(child.stderr, (line) => this.onError(line));
    const pack = createTarPack();
    const piped = pipeline(pack, child.stdin as NodeJS.WritableStream);
    void ignoreRejection(piped, 'finish awaits it and reports what bsdtar said, which explains a broken pipe');
    return { child, exited, pack, piped, write: promisePacker(pack, ROOT, signal ? { signal } : {}) };
  }

  /** bsdtar reports a refused or failed entry and carries on: the first such line stops the apply. */
  private onError(line: string): void {
    if (line.trim() === '' || this.errorLines.length >= MAX_ERROR_LINES) return;
    this.errorLines.push(line.trim());
    const n = this.partition.number;
    if (/Cannot extract through symlink|contains '\.\.'/.test(line)) {
      this.fail(
        new EtchError(
          'ETCH_UNSAFE_PATH',
          `An entry goes through a symlink in partition ${n} (of the base image or made by the .etch), which the flasher does not follow: ${line.trim()}`,
        ),
      );
    } else if (/No space left on device/.test(line)) {
      this.fail(
        new EtchError(
          'ETCH_BAD_DISK_IMAGE',
          `Partition ${n} is full: the .etch's requirements.json announced less than its entries need. Apply without --mount, which grows the partition as the entries need. (${line.trim()})`,
        ),
      );
    } else {
      this.fail(new EtchError('ETCH_IO', `Writing into partition ${n} through the mount failed: ${line.trim()}`));
    }
  }

  /** Records the first failure and stops bsdtar, so no later entry is written after it. */
  private fail(error: EtchError): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    this.extraction.child.kill('SIGKILL');
    this.extraction.pack.destroy(error);
  }

  /** As the debugfs path: a directory is merged with, never replaced by, anything else. */
  private assertNotDirectory(path: string): void {
    // Under a directory the base image lacks, only the .etch's own directories can be in the way: no lstat.
    const underNew = this.newDirectories.has(dirname(path));
    const inMount = underNew ? undefined : lstatSync(join(this.mountpoint, path), { throwIfNoEntry: false });
    if (this.directories.has(path) || inMount?.isDirectory()) {
      throw new EtchError(
        'ETCH_BAD_ENTRY',
        `${path} is a directory in partition ${this.partition.number}; a file, link or device cannot replace it.`,
      );
    }
  }

  async add(entry: EtchInjectEntry): Promise<void> {
    const { signal } = this.options;
    throwIfAborted(signal);
    if (this.failure) throw this.failure;
    assertFlashable({
      path: entry.path,
      entryName: entry.header.name,
      ...(entry.symlinkTarget !== undefined ? { symlinkTarget: entry.symlinkTarget } : {}),
      xattrNames: entry.xattrs.keys(),
    });
    const path = absolute(entry.path);
    if (entry.type === 'directory') {
      // bsdtar extracts behind this point, so a directory absent now was not in the base image. One named
      // twice is an existing directory to bsdtar the second time, and its times are set by debugfs.
      if (this.directories.has(path)) this.newDirectories.delete(path);
      else if (!this.ancestors.has(path) && !lstatSync(join(this.mountpoint, path), { throwIfNoEntry: false }))
        this.newDirectories.add(path);
      this.directories.set(path, { mtime: entry.mtime, nanoseconds: entry.mtimeNanoseconds });
    } else {
      this.assertNotDirectory(path);
    }
    for (let dir = dirname(path); dir !== '/' && !this.ancestors.has(dir); dir = dirname(dir)) this.ancestors.add(dir);
    const seconds = Math.floor(entry.mtime.getTime() / 1000);
    const header: EntryHeader = {
      name: entry.path,
      type: entry.type,
      mode: entry.mode,
      uid: entry.uid,
      gid: entry.gid,
      mtime: entry.mtime,
      mtimeNanoseconds: entry.mtimeNanoseconds,
      // atime as mtime: what the engine leaves after extracting a layer (and the debugfs path writes).
      ...(seconds >= 0 ? { pax: { atime: `${seconds}.${String(entry.mtimeNanoseconds).padStart(9, '0')}` } } : {}),
      ...(entry.type === 'symlink' ? { linkname: entry.symlinkTarget ?? '' } : {}),
      ...(entry.type === 'link' ? { linkname: entry.hardlinkTarget ?? '' } : {}),
      ...(entry.type === 'character-device' || entry.type === 'block-device'
        ? { devmajor: entry.header.devmajor ?? 0, devminor: entry.header.devminor ?? 0 }
        : {}),
    };
    try {
      const { write } = this.extraction;
      if (entry.type === 'file') {
        header.size = entry.size;
        const keep = this.options.keepFiles !== false;
        const hash = keep ? createHash('sha256') : undefined;
        if (entry.bytes) {
          const bytes = await entry.bytes();
          hash?.update(bytes);
          await write(header, bytes);
        } else {
          const stream = entry.stream as Readable;
          await write(header, hash ? hashed(stream, hash, signal) : stream);
        }
        if (hash) this.files.set(path, { path, size: entry.size, sha256: hash.digest('hex') });
      } else {
        await write(header);
        this.files.delete(path);
        const target = entry.type === 'link' ? this.files.get(absolute(entry.hardlinkTarget ?? '')) : undefined;
        if (target) this.files.set(path, { ...target, path });
      }
    } catch (error) {
      throw this.failure ?? error;
    }
    await this.planAfterUnmount(entry, path, seconds);
  }

  /** The commands for what the tar does not carry (see the module comment); directory times come at the end. */
  private async planAfterUnmount(entry: EtchInjectEntry, path: string, seconds: number): Promise<void> {
    const owner = entry.uid === UNCHANGED_ID || entry.gid === UNCHANGED_ID;
    const early = seconds < 0 && entry.type !== 'directory';
    if (entry.xattrs.size === 0 && !owner && !early) return;
    const p = this.after.at(path);
    if (owner) this.after.add(`sif ${p} uid ${entry.uid}`, `sif ${p} gid ${entry.gid}`);
    if (early) this.after.add(...timeCommands(p, entry.mtime, entry.mtimeNanoseconds, this.extraTimes));
    for (const [name, value] of entry.xattrs) {
      const file = join(this.staging, 'xattrs', String(this.xattrFiles++));
      // An xattr value is at most a block: written at once.
      writeFileSync(file, value);
      this.after.add(`ea_set -f ${quote(file)} ${p} ${quote(name)}`);
    }
    await this.after.drain();
  }

  async finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }> {
    const { pack, piped, exited } = this.extraction;
    try {
      await whenPackerIdle(pack);
      pack.finalize();
      // A broken pipe means bsdtar stopped: what it said, or its exit code, explains why.
      const pipeFailed = await piped.then(
        () => false,
        () => true,
      );
      const code = await exited;
      if (this.failure) throw this.failure;
      if (code !== 0 || pipeFailed)
        throw new EtchError(
          'ETCH_IO',
          `Writing into partition ${this.partition.number} through the mount failed: bsdtar exited ${code}${this.errorLines.length > 0 ? `: ${this.errorLines.join('; ')}` : ''}.`,
        );
      await loopUnmount(this.mountpoint, this.options.logger);
      for (const [path, { mtime, nanoseconds }] of this.directories) {
        throwIfAborted(this.options.signal);
        if (this.newDirectories.has(path)) continue;
        this.after.add(...timeCommands(this.after.at(path), mtime, nanoseconds, this.extraTimes));
        await this.after.drain();
      }
      await this.after.close();
      await runDebugfsScript(
        `${this.image}?offset=${this.partition.offset}`,
        this.after,
        this.partition.number,
        this.options,
      );
    } catch (error) {
      await this.settle();
      throw error;
    }
    this.options.logger?.debug('partition written through a mount', { partition: this.partition.number });
    return { files: [...this.files.values()], partition: this.partition };
  }

  /** Stops bsdtar if it still runs and unmounts: after a failure, before the image is removed. */
  async settle(): Promise<void> {
    const { child, pack, exited } = this.extraction;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (!pack.destroyed) pack.destroy();
    await exited;
    await ignoreRejection(this.after.close(), 'the script is not run after a failure; closing it twice is harmless');
    await loopUnmount(this.mountpoint, this.options.logger);
  }
}
