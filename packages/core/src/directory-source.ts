import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { EtchError, normalizeRelativePath, throwIfAborted } from '@etch/format';
import type { EntryHeader } from '@etch/tar';
import type { FileToInject } from './lifecycle.js';

/** Options for {@link walkDirectory}. */
export interface WalkOptions {
  signal?: AbortSignal;
}

// Opening at iteration time means no descriptor is held for files an aborted run never reaches.
function openLazily(path: string): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => createReadStream(path)[Symbol.asyncIterator]() };
}

function join2(dest: string, rel: string): string {
  return dest === '' ? rel : rel === '' ? dest : `${dest}/${rel}`;
}

/**
 * Yields the entries that reproduce `localDir` under `dest` (relative to a partition root): directories,
 * files (streamed lazily), symlinks with their targets untouched, hardlinks among the walked files, and
 * whiteout character devices (0:0). Modes, owners and mtimes are kept. Entries come in a stable order
 * (parents first, names sorted), so the same tree always gives the same archive.
 *
 * @throws EtchError `ETCH_BAD_ENTRY` for sockets, FIFOs and real device files, which have no place in a partition preload.
 */
export async function* walkDirectory(
  localDir: string,
  dest = '',
  options: WalkOptions = {},
): AsyncGenerator<FileToInject> {
  const destPath = normalizeRelativePath(dest.replace(/^\/+/, ''), dest);
  const seenInodes = new Map<string, string>();
  let root;
  try {
    root = await lstat(localDir);
  } catch (cause) {
    throw new EtchError('ETCH_IO', `Cannot read ${localDir}: ${(cause as Error).message}.`, {
      cause,
      details: { path: localDir },
    });
  }
  if (!root.isDirectory())
    throw new EtchError('ETCH_USAGE', `${localDir} is not a directory.`, { details: { path: localDir } });
  // The partition root's own metadata belongs to the base image; only a named destination gets the folder's.
  if (destPath !== '') {
    yield {
      header: {
        name: destPath,
        type: 'directory',
        mode: root.mode & 0o7777,
        uid: root.uid,
        gid: root.gid,
        mtime: root.mtime,
      },
    };
  }
  const pending: string[] = [''];
  while (pending.length > 0) {
    const rel = pending.shift() as string;
    const abs = join(localDir, rel);
    let names: string[];
    try {
      names = (await readdir(abs)).sort();
    } catch (cause) {
      throw new EtchError('ETCH_IO', `Cannot list ${abs}: ${(cause as Error).message}.`, {
        cause,
        details: { path: abs },
      });
    }
    const subdirs: string[] = [];
    for (const name of names) {
      throwIfAborted(options.signal);
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const childAbs = join(localDir, childRel);
      const info = await lstat(childAbs);
      const header: EntryHeader = {
        name: join2(destPath, childRel),
        mode: info.mode & 0o7777,
        uid: info.uid,
        gid: info.gid,
        mtime: info.mtime,
      };
      if (info.isDirectory()) {
        subdirs.push(childRel);
        yield { header: { ...header, type: 'directory' } };
      } else if (info.isSymbolicLink()) {
        yield { header: { ...header, type: 'symlink', linkname: await readlink(childAbs) } };
      } else if (info.isFile()) {
        const key = `${info.dev}:${info.ino}`;
        const first = info.nlink > 1 ? seenInodes.get(key) : undefined;
        if (first !== undefined) {
          yield { header: { ...header, type: 'link', linkname: first } };
        } else {
          if (info.nlink > 1) seenInodes.set(key, header.name);
          yield { header: { ...header, type: 'file', size: info.size }, content: openLazily(childAbs) };
        }
      } else if (info.isCharacterDevice() && info.rdev === 0) {
        yield { header: { ...header, type: 'character-device', devmajor: 0, devminor: 0 } };
      } else {
        throw new EtchError(
          'ETCH_BAD_ENTRY',
          `${childAbs} is a socket, FIFO or device file; a folder to inject may hold files, directories, links and whiteouts (devices and FIFOs reach a .etch from image layers).`,
          {
            details: { path: childAbs },
          },
        );
      }
    }
    // Breadth-first within a folder keeps parents before children; sorted for reproducible archives.
    pending.unshift(...subdirs);
  }
}
