import { EtchError } from './errors.js';

/** Longest name of one path component a flasher writes (ext4, FAT long names: 255 bytes). */
export const MAX_NAME_BYTES = 255;
/** Longest path inside a partition a flasher writes (Linux `PATH_MAX` less the terminator). */
export const MAX_PATH_BYTES = 4095;
/** Largest uid or gid (32 bits, as ext4 stores them). */
export const MAX_OWNER_ID = 0xffff_ffff;
/**
 * The mtimes ext4 stores (seconds): 32 signed bits plus two epoch bits, 1901 to 2446. Beyond them a date
 * would wrap around silently.
 */
export const MIN_MTIME = -(2 ** 31);
export const MAX_MTIME = 2 ** 34 - 2 ** 31 - 1;
const S_IFMT = 0o170000;
// Namespaces Linux knows; a name outside them is refused by every filesystem (and by debugfs's parser).
const XATTR_NAMESPACES = ['user.', 'trusted.', 'security.', 'system.'];

function refuse(entryName: string, message: string): EtchError {
  return new EtchError('ETCH_BAD_ENTRY', `${entryName.slice(0, 200)}: ${message}`, {
    details: { entryName: entryName.slice(0, 200) },
  });
}

/** What {@link assertFlashable} checks of an inject entry. */
export interface FlashableEntry {
  /** The path inside the partition. */
  path: string;
  /** For messages: the archive name. Defaults to `path`. */
  entryName?: string;
  symlinkTarget?: string;
  xattrNames?: Iterable<string>;
}

/**
 * The limits a flasher must honour to write an inject entry into a filesystem: component names of at most
 * 255 bytes, paths of at most 4095, no line breaks in names or symlink targets (no filesystem tool takes
 * them safely), extended attributes in a Linux namespace. The writer (`etch create`) checks them too, so
 * it never produces a `.etch` its own flasher refuses.
 * @throws EtchError `ETCH_BAD_ENTRY` naming the entry.
 */
export function assertFlashable(entry: FlashableEntry): void {
  const name = entry.entryName ?? entry.path;
  if (Buffer.byteLength(entry.path) > MAX_PATH_BYTES)
    throw refuse(name, `the path is longer than ${MAX_PATH_BYTES} bytes, which no flasher can write.`);
  for (const component of entry.path.split('/')) {
    if (Buffer.byteLength(component) > MAX_NAME_BYTES)
      throw refuse(name, `a name in the path is longer than ${MAX_NAME_BYTES} bytes, which filesystems cannot store.`);
  }
  if (/[\n\r]/.test(entry.path)) throw refuse(name, 'the path contains a line break, which a flasher cannot write.');
  if (entry.symlinkTarget !== undefined) {
    if (Buffer.byteLength(entry.symlinkTarget) > MAX_PATH_BYTES)
      throw refuse(name, `the symlink target is longer than ${MAX_PATH_BYTES} bytes.`);
    if (/[\n\r\0]/.test(entry.symlinkTarget))
      throw refuse(name, 'the symlink target contains a line break or NUL, which a flasher cannot write.');
  }
  for (const xattr of entry.xattrNames ?? []) {
    if (
      !XATTR_NAMESPACES.some((ns) => xattr.startsWith(ns) && xattr.length > ns.length) ||
      Buffer.byteLength(xattr) > MAX_NAME_BYTES ||
      /[\0\n\r]/.test(xattr)
    )
      throw refuse(
        name,
        `extended attribute ${JSON.stringify(xattr.slice(0, 80))} is not a valid name (user., trusted., security. or system., at most ${MAX_NAME_BYTES} bytes, no line breaks).`,
      );
  }
}

/** Owner, mode and time of an inject entry, as a reader takes them from its header. */
export interface InjectMetadata {
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

/**
 * Checks the owner, mode and time of an inject entry against what a filesystem stores, and returns the
 * permission bits (with setuid, setgid, sticky). File-type bits some writers put in the mode (`0o100644`)
 * are dropped: the entry's type says what it is, and a mode with them would make a flasher write a
 * different kind of inode.
 * @throws EtchError `ETCH_BAD_ENTRY` when a value is out of range.
 */
export function checkInjectMetadata(metadata: InjectMetadata, entryName: string): number {
  const { mode, uid, gid, mtime } = metadata;
  if (!Number.isSafeInteger(mode) || mode < 0 || mode > (S_IFMT | 0o7777))
    throw refuse(entryName, `mode 0${mode.toString(8)} is not a file mode.`);
  for (const [field, value] of [
    ['uid', uid],
    ['gid', gid],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0 || value > MAX_OWNER_ID)
      throw refuse(entryName, `${field} ${value} is outside 0 to ${MAX_OWNER_ID}.`);
  }
  if (!Number.isFinite(mtime) || mtime < MIN_MTIME || mtime > MAX_MTIME)
    throw refuse(entryName, `mtime ${mtime} is outside what filesystems store (${MIN_MTIME} to ${MAX_MTIME} seconds).`);
  return mode & 0o7777;
}
