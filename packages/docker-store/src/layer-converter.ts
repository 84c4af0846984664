import { createHash } from 'node:crypto';
import { EtchError } from '@etch/format';
import { extractTar, type EntryHeader, type TarHeader } from '@etch/tar';
import { Crc64 } from './crc64.js';
import { ancestors, hardlinkTargetPath, layerPath, parentOf } from './layer-path.js';
import { PathTable } from './path-table.js';
import { TarSplitBuilder } from './tar-split.js';

/** An entry to inject: a header (name relative to the partition root) and its content. */
export interface StoreEntry {
  header: EntryHeader;
  content?: Buffer | string | AsyncIterable<Uint8Array>;
}

/** What converting a layer found out, available once its entries have all been consumed. */
export interface ConvertedLayer {
  /** sha256 of the uncompressed tar: must equal the config's diffID. */
  diffId: string;
  /** What the engine writes to `layerdb/…/size`: content bytes in `diff/`, each inode once. */
  size: number;
  /** gzip-compressed tar-split of the original layer tar. */
  tarSplit: Buffer;
  /** Number of tar entries. */
  entries: number;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const OPAQUE_XATTR = 'trusted.overlay.opaque';
const SEGMENT_LIMIT = 1024 * 1024;
const MAX_TRAILER_BYTES = 16 * 1024 * 1024;

function badLayer(name: string, message: string): EtchError {
  return new EtchError('ETCH_BAD_ENTRY', `Layer entry ${JSON.stringify(name)}: ${message}`, {
    details: { entryName: name },
  });
}

// The engine's last settable time (64-bit timespec nanoseconds): 2262-04-11T23:47:16.854775807Z.
const ENGINE_MAX_SECONDS = 9_223_372_036;

/**
 * The mtime the engine leaves on an extracted entry: the header's, to the nanosecond, except that a time
 * before the epoch (or past what a 64-bit timespec holds) becomes the epoch itself, as its extraction's
 * `Chtimes` does. Symlinks get their times through `lutimes` without that bound.
 */
function engineTime(header: TarHeader): { mtime: Date; mtimeNanoseconds?: number } {
  const seconds = Math.floor(header.mtime.getTime() / 1000);
  if (header.type !== 'symlink' && (seconds < 0 || seconds > ENGINE_MAX_SECONDS)) return { mtime: new Date(0) };
  return header.mtimeNanoseconds > 0
    ? { mtime: new Date(seconds * 1000), mtimeNanoseconds: header.mtimeNanoseconds }
    : { mtime: new Date(seconds * 1000) };
}

/** Files up to this size are read whole (most files of a layer): a body stream each cost more than their bytes. */
const WHOLE_FILE_BYTES = 64 * 1024;

async function* withCrc(body: AsyncIterable<unknown>, crc: Crc64): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    crc.update(chunk as Buffer);
    yield chunk as Buffer;
  }
}

async function* tapHash(
  source: AsyncIterable<Uint8Array>,
  hash: ReturnType<typeof createHash>,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
}

/**
 * Converts an uncompressed layer tar into the entries of its overlay2 `diff/` directory, the way the engine's
 * native overlay2 ApplyDiff lays them out: `.wh.NAME` becomes a 0:0 character device `NAME`; `.wh..wh..opq`
 * becomes the `trusted.overlay.opaque=y` xattr on its directory; hardlinks point at the archive path of their
 * target in the same layer; symlink targets are untouched; xattrs, modes (set-id bits included), owners and
 * mtimes are kept. The original tar is recorded in a tar-split as it streams by.
 *
 * Refused: names that leave the layer (a relative `..` above its root, through a symlink of the same layer), duplicate paths,
 * hardlinks to something not earlier in the layer. Device nodes and FIFOs are kept (format 1.2).
 *
 * @param diffPrefix where `diff/` lives, relative to the partition root (e.g. `docker/overlay2/<id>/diff`).
 * @param done receives the layer's diffID, size and tar-split after the last entry is consumed.
 */
export async function* convertLayer(
  uncompressed: AsyncIterable<Uint8Array>,
  diffPrefix: string,
  done: (layer: ConvertedLayer) => void,
  signal?: AbortSignal,
): AsyncGenerator<StoreEntry> {
  const diffHash = createHash('sha256');
  const split = new TarSplitBuilder();
  // Every path the layer created (duplicates, whiteouts and hardlink targets are checked against it), in
  // flat memory; symlinks are its entries of kind 'symlink'.
  const seen = new PathTable<TarHeader['type']>();
  let symlinks = 0;
  // The last parent directory whose ancestors were all found not to be symlinks, and how many symlinks the
  // layer had then. A tar lists a directory's entries together, so most entries share it, and it stays true
  // until the layer adds a symlink: each entry then skips a lookup per ancestor.
  let clearParent: string | undefined;
  let clearAtSymlinks = 0;
  const directories = new Map<string, EntryHeader>();
  const opaque = new Set<string>();
  let size = 0;
  let entries = 0;
  // What follows the end-of-archive marker goes into the tar-split in 1 MiB segments as it streams by.
  let trailer: Buffer[] = [];
  let trailerPending = 0;
  let trailerTotal = 0;
  const flushTrailer = (all: boolean) => {
    let pending = Buffer.concat(trailer);
    while (pending.length >= SEGMENT_LIMIT || (all && pending.length > 0)) {
      split.segment(pending.subarray(0, SEGMENT_LIMIT));
      pending = pending.subarray(Math.min(SEGMENT_LIMIT, pending.length));
    }
    trailer = pending.length > 0 ? [pending] : [];
    trailerPending = pending.length;
  };
  const at = (path: string) => (path === '' ? diffPrefix : `${diffPrefix}/${path}`);

  const tar = extractTar(tapHash(uncompressed, diffHash), {
    raw: true,
    onTrailer: (bytes) => {
      trailerTotal += bytes.length;
      // The engine records trailing bytes too, but a layer made mostly of them is an attack on memory.
      if (trailerTotal > MAX_TRAILER_BYTES) {
        throw new EtchError(
          'ETCH_BAD_ENTRY',
          `The layer goes on for more than ${MAX_TRAILER_BYTES / 1024 / 1024} MiB after its end-of-archive marker; refusing it.`,
        );
      }
      trailer.push(bytes);
      trailerPending += bytes.length;
      if (trailerPending >= SEGMENT_LIMIT) flushTrailer(false);
    },
    ...(signal ? { signal } : {}),
  });
  for await (const entry of tar) {
    const { header, raw } = entry;
    // A file read whole through bytes() needs no body stream, nor the loop below that drains one.
    let readWhole = false;
    entries += 1;
    split.segment(raw as Buffer);
    const crc = new Crc64();
    const path = layerPath(header.name);
    const parent = parentOf(path);
    if (symlinks > 0 && (parent !== clearParent || symlinks !== clearAtSymlinks)) {
      for (const ancestor of ancestors(path)) {
        if (seen.get(ancestor) === 'symlink') {
          throw new EtchError(
            'ETCH_UNSAFE_PATH',
            `Refusing a malicious layer: ${JSON.stringify(header.name)} goes through the symlink ${JSON.stringify(ancestor)}.`,
            {
              details: { entryName: header.name },
            },
          );
        }
      }
      clearParent = parent;
      clearAtSymlinks = symlinks;
    }
    const base = path.slice(path.lastIndexOf('/') + 1);
    const owner = { uid: header.uid, gid: header.gid, ...engineTime(header) };
    const xattrs = header.xattrs.size > 0 ? new Map(header.xattrs) : undefined;

    if (path === '') {
      // The layer root: the engine skips it, so diff/ keeps its own metadata.
    } else if (base === OPAQUE_MARKER) {
      const dir = parent;
      opaque.add(dir);
      const known = directories.get(dir);
      // A directory the layer never listed gets the marker's time, not the time of the run: the same layer
      // must give the same bytes, staged or not.
      const header0: EntryHeader = known ?? {
        name: at(dir),
        type: 'directory',
        mode: 0o755,
        uid: 0,
        gid: 0,
        ...engineTime(header),
      };
      const dirXattrs = new Map(header0.xattrs instanceof Map ? header0.xattrs : []);
      dirXattrs.set(OPAQUE_XATTR, Buffer.from('y'));
      yield { header: { ...header0, xattrs: dirXattrs } };
    } else if (base.startsWith(WHITEOUT_PREFIX)) {
      const original = base.slice(WHITEOUT_PREFIX.length);
      if (original === '' || original === '.' || original === '..')
        throw badLayer(header.name, 'is not a valid whiteout name.');
      const target = parent === '' ? original : `${parent}/${original}`;
      if (!seen.add(target, 'character-device'))
        throw badLayer(
          header.name,
          `whites out ${JSON.stringify(target)}, which this same layer created; the engine refuses that.`,
        );
      yield { header: { name: at(target), type: 'character-device', mode: 0, devmajor: 0, devminor: 0, ...owner } };
    } else {
      if (!seen.add(path, header.type))
        throw badLayer(header.name, 'appears twice in the layer; the engine refuses duplicate paths.');
      const common = { name: at(path), mode: header.mode & 0o7777, ...owner, ...(xattrs ? { xattrs } : {}) };
      switch (header.type) {
        case 'directory': {
          const dirHeader: EntryHeader = { ...common, type: 'directory' };
          if (opaque.has(path)) dirHeader.xattrs = new Map([...(xattrs ?? []), [OPAQUE_XATTR, Buffer.from('y')]]);
          directories.set(path, dirHeader);
          yield { header: dirHeader };
          break;
        }
        case 'file': {
          size += header.size;
          const fileHeader: EntryHeader = { ...common, type: 'file', size: header.size };
          if (header.size <= WHOLE_FILE_BYTES) {
            const data = await entry.bytes();
            crc.update(data);
            readWhole = true;
            yield { header: fileHeader, content: data };
          } else yield { header: fileHeader, content: withCrc(entry.body, crc) };
          break;
        }
        case 'symlink':
          symlinks += 1;
          size += Buffer.byteLength(header.linkname);
          yield { header: { ...common, type: 'symlink', linkname: header.linkname } };
          break;
        case 'link': {
          const target = hardlinkTargetPath(header.linkname, header.name);
          const targetType = seen.get(target);
          if (targetType === undefined || targetType === 'directory' || target === path) {
            throw badLayer(
              header.name,
              `is a hardlink to ${JSON.stringify(header.linkname)}, which is not a file earlier in the same layer.`,
            );
          }
          for (const ancestor of symlinks > 0 ? ancestors(target) : []) {
            if (seen.get(ancestor) === 'symlink')
              throw new EtchError(
                'ETCH_UNSAFE_PATH',
                `Refusing a malicious layer: hardlink ${JSON.stringify(header.name)} goes through a symlink.`,
              );
          }
          if (targetType === 'symlink') {
            // A second name of a symlink's inode is a symlink too: writes below it go through it.
            seen.set(path, 'symlink');
            symlinks += 1;
          }
          yield { header: { ...common, type: 'link', linkname: at(target) } };
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo':
          // Format 1.2: the engine mknods them with the header's numbers; a c 0:0 is also how whiteouts look.
          yield {
            header: {
              ...common,
              type: header.type,
              devmajor: header.type === 'fifo' ? 0 : header.devmajor,
              devminor: header.type === 'fifo' ? 0 : header.devminor,
            },
          };
          break;
        default:
          throw badLayer(header.name, `is a ${header.type}, which a .etch cannot carry.`);
      }
    }
    // Whatever was not forwarded still counts for the tar-split checksum.
    if (!readWhole && header.size > 0) for await (const chunk of entry.body) crc.update(chunk as Buffer);
    split.file(header.name, header.size, header.size > 0 ? crc.digest() : null);
    const draining = split.drained();
    if (draining !== undefined) await draining;
  }
  flushTrailer(true);
  done({ diffId: `sha256:${diffHash.digest('hex')}`, size, tarSplit: await split.finish(), entries });
}
