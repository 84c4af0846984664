import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join, posix, relative, sep } from 'node:path';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { constants, createGzip } from 'node:zlib';
import { EtchError, ignoreRejection } from '@etch/format';
import { IgnoreRules } from './ignore.js';

/** Options of {@link filesLayer} (and `Image.addFiles`). */
export interface AddFilesOptions {
  /** `.dockerignore`-style globs, relative to each local directory. */
  ignores?: readonly string[];
  /** Files at the root of each local directory to read more ignore globs from (e.g. `['.dockerignore']`). */
  ignoreFiles?: readonly string[];
  /** Replace symlinks with what they point to, as the seed did (default false: symlinks stay symlinks). */
  followSymlinks?: boolean;
  /** Owner written for every entry (default 0). */
  uid?: number;
  /** Group written for every entry (default 0). */
  gid?: number;
  /** Modification time of every entry (default: the image's `created`, so the layer is reproducible). */
  mtime?: Date;
}

/** A layer made from local files: its compressed bytes, then what they were. */
export interface FilesLayer {
  /** The gzip-compressed tar; read it once. */
  stream: AsyncIterable<Buffer>;
  /** Resolves once the stream has been read: the sha256 of the uncompressed tar (the config's diff_id). */
  diffId: Promise<string>;
}

interface Planned {
  /** Archive path, no leading slash; directories without a trailing one. */
  name: string;
  type: 'directory' | 'file' | 'symlink';
  mode: number;
  size: number;
  source?: string;
  linkname?: string;
}

function toArchivePath(dest: string): string {
  const clean = posix
    .normalize(`/${dest.split(sep).join('/')}`)
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
  if (clean.split('/').includes('..'))
    throw new EtchError('ETCH_USAGE', `The destination ${JSON.stringify(dest)} leaves the image root.`);
  return clean;
}

/** Every file, directory and symlink under `root`, with archive names under `dest`, ignores applied. */
async function plan(root: string, dest: string, options: AddFilesOptions, into: Map<string, Planned>): Promise<void> {
  const top = await stat(root).catch((cause: unknown) => {
    throw new EtchError('ETCH_NOT_FOUND', `${root} cannot be read: ${(cause as Error).message}`, {
      cause,
      details: { path: root },
    });
  });
  const base = toArchivePath(dest);
  const addParents = (name: string) => {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i += 1) {
      const parent = parts.slice(0, i).join('/');
      if (!into.has(parent)) into.set(parent, { name: parent, type: 'directory', mode: 0o755, size: 0 });
    }
  };
  if (!top.isDirectory()) {
    // A single file: `dest` names the file itself.
    if (base === '') throw new EtchError('ETCH_USAGE', `A file (${root}) needs a destination path, not /.`);
    addParents(base);
    into.set(base, { name: base, type: 'file', mode: top.mode & 0o7777, size: top.size, source: root });
    return;
  }
  const rules = new IgnoreRules(options.ignores ?? []);
  await rules.addFiles(root, options.ignoreFiles ?? []);
  if (base !== '') {
    addParents(base);
    into.set(base, { name: base, type: 'directory', mode: top.mode & 0o7777, size: 0 });
  }
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const entry of names) {
      const path = join(dir, entry);
      const rel = relative(root, path).split(sep).join('/');
      const info = options.followSymlinks ? await stat(path) : await lstat(path);
      const ignored = rules.ignores(rel);
      const name = base === '' ? rel : `${base}/${rel}`;
      if (info.isDirectory()) {
        // Walked even when ignored: a `!` rule may bring back something inside.
        if (!ignored) into.set(name, { name, type: 'directory', mode: info.mode & 0o7777, size: 0 });
        await walk(path);
        continue;
      }
      if (ignored) continue;
      addParents(name);
      if (info.isSymbolicLink())
        into.set(name, { name, type: 'symlink', mode: info.mode & 0o7777, size: 0, linkname: await readlink(path) });
      else if (info.isFile())
        into.set(name, { name, type: 'file', mode: info.mode & 0o7777, size: info.size, source: path });
      // Sockets, FIFOs and devices have no place in an image layer built from a source tree.
    }
  };
  await walk(root);
}

/** Hashes what flows through (the uncompressed tar) without changing it. */
class Digest extends Transform {
  readonly hash = createHash('sha256');
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }
}

/**
 * A reproducible gzip layer from local directories or files: `{ '/app': './build' }` puts the contents of
 * `./build` under `/app`. Entries are sorted by name, owners and times fixed (root and `mtime`), modes kept,
 * symlinks kept as symlinks (unless `followSymlinks`), parent directories written 0755; gzip has no name and no
 * time in its header. The same inputs give the same bytes, so the same digest, on every run.
 */
export async function filesLayer(
  files: Readonly<Record<string, string>>,
  options: AddFilesOptions & { signal?: AbortSignal } = {},
): Promise<FilesLayer> {
  const planned = new Map<string, Planned>();
  for (const [dest, local] of Object.entries(files)) await plan(local, dest, options, planned);
  const entries = [...planned.values()].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const mtime = options.mtime ?? new Date(0);
  const owner = { uid: options.uid ?? 0, gid: options.gid ?? 0, uname: '', gname: '' };
  // Loaded when used: `etch copy` and `push` never write a layer, so they start without the tar packages.
  const [{ pack: tarPack }, { promisePacker, whenPackerIdle }] = await Promise.all([
    import('tar-stream'),
    import('@etch/tar'),
  ]);
  const pack = tarPack();
  const write = promisePacker(pack, undefined, options.signal ? { signal: options.signal } : {});
  const digest = new Digest();
  // Level 9 and no header name or time: gzip output depends only on the tar and zlib.
  const gzip = createGzip({ level: constants.Z_BEST_COMPRESSION });
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  pack.pipe(digest).pipe(gzip).pipe(out);
  const fail = (error: Error) => out.destroy(error);
  pack.on('error', fail);
  digest.on('error', fail);
  gzip.on('error', fail);
  const diffId = new Promise<string>((resolve, reject) => {
    digest.on('end', () => resolve(`sha256:${digest.hash.digest('hex')}`));
    out.on('error', reject);
  });
  ignoreRejection(diffId, 'a failed layer is reported by its stream, which the caller reads');
  const writing = (async () => {
    for (const entry of entries) {
      const header = { name: entry.name, mode: entry.mode, mtime, ...owner };
      if (entry.type === 'directory') await write({ ...header, type: 'directory' });
      else if (entry.type === 'symlink') await write({ ...header, type: 'symlink', linkname: entry.linkname ?? '' });
      else await write({ ...header, size: entry.size }, createReadStream(entry.source as string));
    }
    await whenPackerIdle(pack);
    pack.finalize();
  })();
  writing.catch((error: unknown) => out.destroy(error as Error));
  return { stream: out, diffId };
}
