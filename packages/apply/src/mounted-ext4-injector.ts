/**
 * The fast way into an ext2/3/4 partition, for root: the partition is loop-mounted and bsdtar extracts a tar
 * of the entries into it, so the kernel allocates blocks, indexes directories and keeps quota as it would for
 * any write. Opt-in (`mount: true`), because the kernel then parses the base image's filesystem, and a
 * crafted one can attack the kernel; debugfs reads it in user space.
 *
 * bsdtar (libarchive) rather than GNU tar: without -P it refuses to extract through a symlink already on the
 * target, where GNU tar follows one the base image has, out of the mount and onto the host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
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
import { DebugfsScript, runDebugfsScript, timeCommands } from './debugfs-script.js';
import { runTool } from './exec.js';
import type { InjectedFile, PartitionInjector } from './injector.js';

/** The tar's entries live under this folder, which bsdtar's `-s` maps to the mount's root (`r/` is `./`). */
const ROOT = 'r';
/** bsdtar's stderr lines kept for a report. */
const MAX_ERROR_LINES = 5;

function absolute(path: string): string {
  return path === '' ? '/' : `/${path}`;
}

/** A PAX time: seconds and nine digits of nanoseconds; undefined before 1970, which PAX writes differently. */
function paxTime(seconds: number, nanoseconds: number): string | undefined {
  if (seconds < 0) return undefined;
  return nanoseconds === 0 ? String(seconds) : `${seconds}.${String(nanoseconds).padStart(9, '0')}`;
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

/** Writes one ext partition's inject entries through a loop mount; see the module comment. */
export class MountedExt4Injector implements PartitionInjector {
  private readonly files = new Map<string, InjectedFile>();
  private failure: EtchError | undefined;
  private readonly errorLines: string[] = [];
  private mounted = true;
  /**
   * Each directory entry's time, set again once bsdtar is done: it gives the directories it makes their
   * times after their children, but sets those of directories the base image has (and the root) at once,
   * before the children change them.
   */
  private readonly directories = new Map<string, { mtime: Date; nanoseconds: number }>();

  private constructor(
    private readonly image: string,
    private readonly partition: PartitionInfo,
    private readonly mountpoint: string,
    private readonly child: ChildProcess,
    private readonly exited: Promise<number>,
    private readonly pack: TarPack,
    private readonly piped: Promise<void>,
    private readonly write: EntryWriter,
    private readonly options: MountedExt4Options,
  ) {}

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
    const mountpoint = join(staging, 'mnt');
    await mkdir(mountpoint, { recursive: true, mode: 0o700 });
    // nosuid/nodev/noexec: nothing on it is run or opened as a device while it is mounted here (mknod still
    // works). noinit_itable: no kernel thread zeroing inode tables, which would fill an image file's holes.
    const mountOptions = `loop,offset=${partition.offset},sizelimit=${partition.size},nosuid,nodev,noexec,noinit_itable`;
    // Not stopped by the signal: a mount killed half-way could be left behind with nobody to undo it.
    await runTool('mount', ['-t', 'ext4', '-o', mountOptions, image, mountpoint]).catch((error: unknown) => {
      throw new EtchError(
        'ETCH_IO',
        `Mounting partition ${partition.number} failed (${(error as Error).message}); apply without --mount, which writes it with debugfs.`,
        { cause: error },
      );
    });
    let child: ChildProcess;
    try {
      child = spawn(
        'bsdtar',
        // -p: modes with setuid, xattrs; --numeric-owner: ids as they are, never looked up on this host.
        ['-x', '-p', '--numeric-owner', '-s', `,^${ROOT}/,./,S`, '-C', mountpoint, '-f', '-'],
        // UTF-8 names stay UTF-8 only in a UTF-8 locale; in "C" libarchive cannot translate them.
        {
          stdio: ['pipe', 'ignore', 'pipe'],
          env: { ...process.env, LC_ALL: 'C.UTF-8' },
          ...(options.signal ? { signal: options.signal, killSignal: 'SIGKILL' as const } : {}),
        },
      );
    } catch (error) {
      await runTool('umount', [mountpoint]);
      throw error;
    }
    const exited = new Promise<number>((resolve) => {
      child.once('error', () => resolve(-1));
      child.once('close', (code) => resolve(code ?? -1));
    });
    const pack = createTarPack();
    const piped = pipeline(pack, child.stdin as NodeJS.WritableStream);
    const injector = new MountedExt4Injector(
      image,
      partition,
      mountpoint,
      child,
      exited,
      pack,
      piped,
      promisePacker(pack, ROOT, options.signal ? { signal: options.signal } : {}),
      options,
    );
    void ignoreRejection(piped, 'finish awaits it and reports what bsdtar said, which explains a broken pipe');
    child.once('error', (cause: NodeJS.ErrnoException) =>
      injector.fail(
        new EtchError(
          'ETCH_IO',
          cause.code === 'ENOENT'
            ? 'etch apply --mount needs bsdtar, which is not installed (Debian/Ubuntu: apt-get install libarchive-tools).'
            : `bsdtar failed to run: ${cause.message}`,
          { cause },
        ),
      ),
    );
    child.stderr?.setEncoding('utf8');
    let partial = '';
    child.stderr?.on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = (lines.pop() ?? '').slice(0, 4096);
      for (const line of lines) injector.onError(line);
    });
    child.stderr?.on('end', () => injector.onError(partial));
    return injector;
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
    this.child.kill('SIGKILL');
    this.pack.destroy(error);
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
    const seconds = Math.floor(entry.mtime.getTime() / 1000);
    const time = paxTime(seconds, entry.mtimeNanoseconds);
    const header: EntryHeader = {
      name: entry.path,
      type: entry.type,
      mode: entry.mode,
      uid: entry.uid,
      gid: entry.gid,
      mtime: entry.mtime,
      mtimeNanoseconds: entry.mtimeNanoseconds,
      xattrs: entry.xattrs,
      // atime as mtime: what the engine leaves after extracting a layer (and the debugfs path writes).
      ...(time !== undefined ? { pax: { atime: time } } : {}),
      ...(entry.type === 'symlink' ? { linkname: entry.symlinkTarget ?? '' } : {}),
      ...(entry.type === 'link' ? { linkname: entry.hardlinkTarget ?? '' } : {}),
      ...(entry.type === 'character-device' || entry.type === 'block-device'
        ? { devmajor: entry.header.devmajor ?? 0, devminor: entry.header.devminor ?? 0 }
        : {}),
    };
    if (entry.type === 'directory')
      this.directories.set(absolute(entry.path), { mtime: entry.mtime, nanoseconds: entry.mtimeNanoseconds });
    const path = absolute(entry.path);
    try {
      if (entry.type === 'file') {
        header.size = entry.size;
        const keep = this.options.keepFiles !== false;
        const hash = keep ? createHash('sha256') : undefined;
        const stream = entry.stream as Readable;
        await this.write(header, hash ? hashed(stream, hash, signal) : stream);
        if (hash) this.files.set(path, { path, size: entry.size, sha256: hash.digest('hex') });
      } else {
        await this.write(header);
        this.files.delete(path);
        const target = entry.type === 'link' ? this.files.get(absolute(entry.hardlinkTarget ?? '')) : undefined;
        if (target) this.files.set(path, { ...target, path });
      }
    } catch (error) {
      throw this.failure ?? error;
    }
  }

  async finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }> {
    try {
      await whenPackerIdle(this.pack);
      this.pack.finalize();
      // A broken pipe means bsdtar stopped: what it said, or its exit code, explains why.
      const pipeFailed = await this.piped.then(
        () => false,
        () => true,
      );
      const code = await this.exited;
      if (this.failure) throw this.failure;
      if (code !== 0 || pipeFailed)
        throw new EtchError(
          'ETCH_IO',
          `Writing into partition ${this.partition.number} through the mount failed: bsdtar exited ${code}${this.errorLines.length > 0 ? `: ${this.errorLines.join('; ')}` : ''}.`,
        );
      await this.unmount();
      await this.setDirectoryTimes();
    } catch (error) {
      await this.settle();
      throw error;
    }
    this.options.logger?.debug('partition written through a mount', { partition: this.partition.number });
    return { files: [...this.files.values()], partition: this.partition };
  }

  /** Stops bsdtar if it still runs and unmounts: after a failure, before the image is removed. */
  async settle(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    if (!this.pack.destroyed) this.pack.destroy();
    await this.exited;
    await this.unmount().catch(async (error: unknown) => {
      // Still busy (a process of the host looking inside): detach it lazily rather than leave it mounted.
      this.options.logger?.warn('unmounting failed; detaching lazily', { reason: (error as Error).message });
      await runTool('umount', ['-l', this.mountpoint]);
      this.mounted = false;
    });
  }

  private async unmount(): Promise<void> {
    if (!this.mounted) return;
    // Not aborted by the signal: a mount must never outlive the apply.
    await runTool('umount', [this.mountpoint]);
    this.mounted = false;
  }

  /** The directory times, to the nanosecond, in one debugfs run on the unmounted partition. */
  private async setDirectoryTimes(): Promise<void> {
    if (this.directories.size === 0) return;
    const { read, close } = await openReadAt(this.image);
    const info = await Ext4Reader.open(read, this.partition.offset)
      .then((fs) => fs.info())
      .finally(close);
    const script = await DebugfsScript.create(join(this.mountpoint, '..', 'directory-times'));
    try {
      for (const [path, { mtime, nanoseconds }] of this.directories) {
        throwIfAborted(this.options.signal);
        script.add(...timeCommands(script.at(path), mtime, nanoseconds, info.inodeSize > 128));
        await script.drain();
      }
    } finally {
      await script.close();
    }
    await runDebugfsScript(
      `${this.image}?offset=${this.partition.offset}`,
      script,
      this.partition.number,
      this.options,
    );
  }
}
