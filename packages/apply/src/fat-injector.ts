import { mkdir, rm, utimes } from 'node:fs/promises';
import { join, posix } from 'node:path';
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
  /** Directories known to exist, lower-cased. */
  private readonly madeDirs = new Set<string>(['/']);
  /** What each directory holds, by case-folded name (FAT names are case-insensitive): read once, then kept. */
  private readonly listings = new Map<string, Map<string, { name: string; kind: 'directory' | 'file' }>>();
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

  /** The entries of `dir` (which exists), keyed by lower-cased name. */
  private async listing(dir: string): Promise<Map<string, { name: string; kind: 'directory' | 'file' }>> {
    const key = dir.toLowerCase();
    let listing = this.listings.get(key);
    if (listing !== undefined) return listing;
    listing = new Map();
    const result = await runTool('mdir', ['-b', '-i', this.drive, `::${dir}`], {
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
      allowFailure: true,
      ...(this.options.signal ? { signal: this.options.signal } : {}),
    });
    // `mdir -b` prints one full path per line, folders with a trailing slash.
    for (const line of result.code === 0 ? result.stdout.split('\n') : []) {
      if (!line.startsWith('::')) continue;
      const kind = line.endsWith('/') ? 'directory' : 'file';
      const name = posix.basename(line.slice(2).replace(/\/$/, ''));
      if (name !== '') listing.set(name.toLowerCase(), { name, kind });
    }
    this.listings.set(key, listing);
    return listing;
  }

  private clash(path: string, what: string): EtchError {
    return new EtchError(
      'ETCH_BAD_ENTRY',
      `${path} ${what} in partition ${this.partition.number} (FAT names ignore case); the entry cannot go there.`,
      { details: { entryName: path } },
    );
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir.toLowerCase())) return;
    const parent = posix.dirname(dir);
    await this.ensureDir(parent);
    const listing = await this.listing(parent);
    const existing = listing.get(posix.basename(dir).toLowerCase());
    if (existing?.kind === 'file') throw this.clash(dir, 'is a file');
    // -D s: an existing directory is kept (merged), not an error.
    if (existing === undefined) await this.mtools('mmd', ['-D', 's', `::${dir}`]);
    listing.set(posix.basename(dir).toLowerCase(), { name: posix.basename(dir), kind: 'directory' });
    this.madeDirs.add(dir.toLowerCase());
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
      .find(
        (name) =>
          /[:*?"<>|\\]/.test(name) || hasControlCharacter(name) || /[. ]$/.test(name) || Buffer.byteLength(name) > 255,
      );
    if (bad !== undefined) {
      throw new EtchError(
        'ETCH_BAD_ENTRY',
        `Partition ${this.partition.number} holds a FAT filesystem, which cannot store the name ${JSON.stringify(bad)} of ${entry.path} (no : * ? " < > | \\ or control characters, no trailing dot or space, at most 255 bytes).`,
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
    const parent = posix.dirname(path);
    await this.ensureDir(parent);
    const listing = await this.listing(parent);
    const existing = listing.get(posix.basename(path).toLowerCase());
    // mcopy would put the file inside a directory of that name, or keep the old name's spelling.
    if (existing?.kind === 'directory') throw this.clash(path, 'is a directory');
    if (existing !== undefined && existing.name !== posix.basename(path))
      await this.mtools('mdel', [`::${posix.join(parent, existing.name)}`]);
    await mkdir(this.staging, { recursive: true });
    const staged = join(this.staging, String(this.sequence++));
    const { size, sha256 } = await stageFile(entry, staged, this.options.signal);
    await utimes(staged, entry.mtime, entry.mtime);
    // -D o overwrites a file the base image has; -m keeps the entry's mtime.
    await this.mtools('mcopy', ['-D', 'o', '-m', staged, `::${path}`]);
    await rm(staged);
    listing.set(posix.basename(path).toLowerCase(), { name: posix.basename(path), kind: 'file' });
    this.files.set(path.toLowerCase(), { path, size, sha256 });
  }

  async finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }> {
    return { files: [...this.files.values()], partition: this.partition };
  }
}

/** FAT refuses names with control characters (code points below 0x20). */
function hasControlCharacter(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) < 0x20) return true;
  return false;
}
