import { mkdir, rm, utimes } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { EtchError, throwIfAborted } from '@etch/format';
import { type PartitionInfo } from '@etch/disk';
import type { EtchInjectEntry } from '@etch/tar';
import { runTool } from './exec.js';
import { stageFile } from './stage-file.js';
import type { InjectedFile, PartitionInjector } from './injector.js';

/**
 * Writes inject entries into a FAT filesystem (the boot partition) with mtools: directories and regular files,
 * with their mtimes. FAT has no owners, modes, links, devices or xattrs: such entries are refused, never
 * skipped, because dropping them silently would give a device that does not behave as the `.etch` says.
 */
export class FatInjector implements PartitionInjector {
  private readonly files = new Map<string, InjectedFile>();
  private readonly madeDirs = new Set<string>(['/']);
  private sequence = 0;

  constructor(
    private readonly image: string,
    private readonly partition: PartitionInfo,
    private readonly staging: string,
    private readonly options: { signal?: AbortSignal } = {},
  ) {}

  private get drive(): string {
    return `${this.image}@@${this.partition.offset}`;
  }

  private async mtools(command: string, args: string[]): Promise<void> {
    // mtools checks drive geometry against a config file by default; an image slice has none.
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    await runTool(command, ['-i', this.drive, ...args], {
      env,
      ...(this.options.signal ? { signal: this.options.signal } : {}),
    });
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await this.ensureDir(posix.dirname(dir));
    // -D s: an existing directory is kept (merged), not an error.
    await this.mtools('mmd', ['-D', 's', `::${dir}`]);
    this.madeDirs.add(dir);
  }

  async add(entry: EtchInjectEntry): Promise<void> {
    throwIfAborted(this.options.signal);
    const path = `/${entry.path}`.replace(/\/$/, '') || '/';
    if (entry.type !== 'file' && entry.type !== 'directory') {
      throw new EtchError(
        'ETCH_BAD_ENTRY',
        `Partition ${this.partition.number} holds a FAT filesystem, which cannot store the ${entry.type} ${entry.path}.`,
      );
    }
    // mtools reads `x:` as a drive letter and FAT has no such characters: refuse rather than write elsewhere.
    const bad = entry.path
      .split('/')
      .find((name) => /[:*?"<>|\\\x00-\x1f]/.test(name) || Buffer.byteLength(name) > 255);
    if (bad !== undefined) {
      throw new EtchError(
        'ETCH_BAD_ENTRY',
        `Partition ${this.partition.number} holds a FAT filesystem, which cannot store the name ${JSON.stringify(bad)} of ${entry.path} (no : * ? " < > | \\ or control characters, at most 255 bytes).`,
      );
    }
    if (entry.xattrs.size > 0) {
      throw new EtchError(
        'ETCH_BAD_ENTRY',
        `Partition ${this.partition.number} holds a FAT filesystem, which cannot store the extended attributes of ${entry.path}.`,
      );
    }
    if (entry.type === 'directory') {
      if (path !== '/') await this.ensureDir(path);
      return;
    }
    await this.ensureDir(posix.dirname(path));
    await mkdir(this.staging, { recursive: true });
    const staged = join(this.staging, String(this.sequence++));
    const { size, sha256 } = await stageFile(entry.stream as Readable, staged, this.options.signal);
    await utimes(staged, entry.mtime, entry.mtime);
    // -D o overwrites a file the base image has; -m keeps the entry's mtime.
    await this.mtools('mcopy', ['-D', 'o', '-m', staged, `::${path}`]);
    await rm(staged);
    this.files.set(path, { path, size, sha256 });
  }

  async finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }> {
    return { files: [...this.files.values()], partition: this.partition };
  }
}
