import { assertBaseImageName, type BaseImageContainer } from './base-image.js';
import { EtchError } from './errors.js';
import { INJECT_ROOT, parseInjectName, resolveHardlinkTarget } from './paths.js';
import { REQUIREMENTS_ENTRY_NAME } from './requirements.js';
import {
  assertSupportedVersion,
  isAtLeast,
  isNewerMinor,
  isVersionEntryName,
  parseVersion,
  VERSION_1_1,
  VERSION_1_2,
  type FormatVersion,
} from './version.js';

/** Tar entry types, named as tar-stream names them. */
export type TarEntryType =
  'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'contiguous-file';

/** The entry types an `inject/` entry may have. */
export type InjectEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';

/**
 * Entry types allowed under `inject/`. Before 1.2 character devices only as overlay whiteouts (`c 0:0`), and
 * no block devices or FIFOs.
 */
export const INJECT_ENTRY_TYPES: readonly InjectEntryType[] = Object.freeze([
  'file',
  'directory',
  'symlink',
  'link',
  'character-device',
  'block-device',
  'fifo',
]);

/** The device node types 1.2 adds (a `c 0:0` whiteout is allowed in every version). */
export const DEVICE_ENTRY_TYPES: readonly InjectEntryType[] = Object.freeze([
  'character-device',
  'block-device',
  'fifo',
]);

/** The header fields the format rules look at. */
export interface EntryHeaderLike {
  name: string;
  /** A {@link TarEntryType}, or whatever else a tar reader reports (refused by the rules). */
  type: string;
  size?: number;
  linkname?: string | null;
  devmajor?: number;
  devminor?: number;
}

/** What an entry is, once the format rules have been applied. */
export type ClassifiedEntry =
  | { kind: 'version' }
  | { kind: 'base-image'; name: string; container: BaseImageContainer }
  | {
      kind: 'inject';
      partition: number;
      /** Path relative to the partition root; `''` is the root directory itself. */
      path: string;
      type: InjectEntryType;
      /** For hardlinks: the target path relative to the same partition. */
      hardlinkTarget?: string;
    }
  /** The bare `inject/` directory that generic tar tools emit; carries nothing. */
  | { kind: 'inject-root' }
  /** 1.1: `requirements.json`, between the base image and the first inject entry. */
  | { kind: 'requirements' }
  /** An entry from a newer minor version that this reader does not know; skip it. */
  | { kind: 'unknown'; name: string };

function badEntry(name: string, message: string): EtchError {
  return new EtchError('ETCH_BAD_ENTRY', message, { details: { entryName: name } });
}

/**
 * Applies the per-entry rules to an entry under `inject/`: allowed type, safe path, hardlink target in the
 * same partition; device nodes and FIFOs only in a 1.2 (or newer) file, else character devices only as
 * whiteouts (`c 0:0`).
 *
 * @param version the file's VERSION; without it, the rules every 1.x file follows (no devices but whiteouts).
 */
export function classifyInjectEntry(header: EntryHeaderLike, version?: FormatVersion): ClassifiedEntry {
  const parsed = parseInjectName(header.name);
  if (parsed === undefined)
    throw badEntry(header.name, `Entry ${JSON.stringify(header.name)} is not under ${INJECT_ROOT}/.`);
  const { partition, path } = parsed;
  const type = header.type as InjectEntryType;
  if (!INJECT_ENTRY_TYPES.includes(type)) {
    throw badEntry(
      header.name,
      `Entry ${JSON.stringify(header.name)} is a ${header.type}; inject entries may be files, directories, symlinks, hardlinks, whiteouts (c 0:0), and from format 1.2 devices and FIFOs.`,
    );
  }
  const devices = version !== undefined && isAtLeast(version, VERSION_1_2);
  if (!devices && (type === 'block-device' || type === 'fifo')) {
    throw badEntry(
      header.name,
      `Entry ${JSON.stringify(header.name)} is a ${type}, which a .etch carries only from format 1.2 (this file is ${version ? `${version.major}.${version.minor}` : 'older'}).`,
    );
  }
  if (path === '' && type !== 'directory') {
    throw badEntry(
      header.name,
      `Entry ${JSON.stringify(header.name)} names a partition root, which can only be a directory.`,
    );
  }
  if (!devices && type === 'character-device' && ((header.devmajor ?? 0) !== 0 || (header.devminor ?? 0) !== 0)) {
    throw badEntry(
      header.name,
      `Entry ${JSON.stringify(header.name)} is device ${header.devmajor}:${header.devminor}; before format 1.2 only whiteouts (0:0) are allowed.`,
    );
  }
  if (type === 'symlink') {
    const target = header.linkname ?? '';
    if (target === '' || target.includes('\0')) {
      throw badEntry(header.name, `Symlink ${JSON.stringify(header.name)} has an empty or invalid target.`);
    }
    return { kind: 'inject', partition, path, type };
  }
  if (type === 'link') {
    const hardlinkTarget = resolveHardlinkTarget(header.linkname ?? '', partition, header.name);
    if (hardlinkTarget === path)
      throw badEntry(header.name, `Hardlink ${JSON.stringify(header.name)} points to itself.`);
    return { kind: 'inject', partition, path, type, hardlinkTarget };
  }
  return { kind: 'inject', partition, path, type };
}

type State = 'expect-version' | 'expect-version-content' | 'expect-base' | 'after-base' | 'finished';

/**
 * Enforces the order of a `.etch`: VERSION first, exactly one base image, then only `inject/` entries.
 * Feed it every header in archive order; it classifies each entry or throws a typed error.
 *
 * @example
 * ```ts
 * const order = new EtchOrderValidator()
 * for (const header of headers) {
 *   const entry = order.accept(header)
 *   if (entry.kind === 'version') order.acceptVersion(await readText())
 * }
 * order.finish()
 * ```
 */
export class EtchOrderValidator {
  #state: State = 'expect-version';
  #version: FormatVersion | undefined;
  #reader: FormatVersion | undefined;
  readonly #symlinks = new Map<number, Set<string>>();
  #sawInject = false;
  #sawRequirements = false;

  /** @param reader the version the calling reader implements (defaults to this package's). */
  constructor(reader?: FormatVersion) {
    this.#reader = reader;
  }

  /** The file's version, once read. */
  get version(): FormatVersion | undefined {
    return this.#version;
  }

  /** Classifies the next entry, or throws `ETCH_BAD_VERSION`, `ETCH_BAD_ORDER`, `ETCH_BAD_ENTRY`, `ETCH_UNSAFE_PATH`. */
  accept(header: EntryHeaderLike): ClassifiedEntry {
    const { name } = header;
    switch (this.#state) {
      case 'expect-version':
        if (!isVersionEntryName(name) || header.type !== 'file') {
          throw new EtchError(
            'ETCH_BAD_VERSION',
            `The first entry must be the VERSION file, found ${JSON.stringify(name)}. Is this a .etch file?`,
            {
              details: { entryName: name },
            },
          );
        }
        this.#state = 'expect-version-content';
        return { kind: 'version' };
      case 'expect-version-content':
        throw new EtchError(
          'ETCH_BAD_VERSION',
          'The VERSION content must be read before the next entry (call acceptVersion).',
        );
      case 'finished':
        throw new EtchError('ETCH_BAD_ORDER', `Entry ${JSON.stringify(name)} follows the end of the archive.`);
      default:
        break;
    }
    if (isVersionEntryName(name)) {
      throw new EtchError('ETCH_BAD_ORDER', 'A second VERSION entry was found; VERSION appears once, first.', {
        details: { entryName: name },
      });
    }
    const newer = this.#version !== undefined && isNewerMinor(this.#version, this.#reader);
    const underInject = name === INJECT_ROOT || name.startsWith(`${INJECT_ROOT}/`);
    if (this.#state === 'expect-base') {
      if (underInject) {
        throw new EtchError(
          'ETCH_BAD_ORDER',
          `Entry ${JSON.stringify(name)} comes before the base image; inject entries must follow it.`,
          {
            details: { entryName: name },
          },
        );
      }
      try {
        const container = assertBaseImageName(name);
        if (header.type !== 'file')
          throw badEntry(name, `The base image ${JSON.stringify(name)} must be a regular file, not a ${header.type}.`);
        this.#state = 'after-base';
        return { kind: 'base-image', name, container };
      } catch (err) {
        if (newer) return { kind: 'unknown', name };
        throw err;
      }
    }
    if (name === REQUIREMENTS_ENTRY_NAME && this.#version !== undefined && isAtLeast(this.#version, VERSION_1_1)) {
      if (header.type !== 'file') throw badEntry(name, `${REQUIREMENTS_ENTRY_NAME} must be a regular file.`);
      // A streaming flasher must know the sizes before it injects anything, so the entry comes first.
      if (this.#sawInject || this.#sawRequirements) {
        throw new EtchError(
          'ETCH_BAD_ORDER',
          `${REQUIREMENTS_ENTRY_NAME} must appear once, right after the base image and before any inject entry.`,
          { details: { entryName: name } },
        );
      }
      this.#sawRequirements = true;
      return { kind: 'requirements' };
    }
    if (underInject) {
      this.#sawInject = true;
      if (name === INJECT_ROOT || name === `${INJECT_ROOT}/`) {
        if (header.type !== 'directory') throw badEntry(name, `${JSON.stringify(name)} must be a directory.`);
        return { kind: 'inject-root' };
      }
      const entry = classifyInjectEntry(header, this.#version);
      if (entry.kind === 'inject') this.#guardSymlinkParents(entry, name);
      return entry;
    }
    if (newer) return { kind: 'unknown', name };
    if (!name.includes('/') && header.type === 'file') {
      try {
        assertBaseImageName(name);
        throw new EtchError(
          'ETCH_BAD_ORDER',
          `A second base image ${JSON.stringify(name)} was found; a .etch holds exactly one.`,
          {
            details: { entryName: name },
          },
        );
      } catch (err) {
        if ((err as EtchError).code === 'ETCH_BAD_ORDER') throw err;
      }
    }
    throw badEntry(
      name,
      `Unexpected entry ${JSON.stringify(name)} after the base image; only inject/<partition>/<path> entries may follow it.`,
    );
  }

  // Writing `a/b` after `a` became a symlink would write wherever `a` points: outside the partition.
  #guardSymlinkParents(entry: Extract<ClassifiedEntry, { kind: 'inject' }>, name: string): void {
    let links = this.#symlinks.get(entry.partition);
    if (links === undefined) {
      links = new Set();
      this.#symlinks.set(entry.partition, links);
    }
    for (const path of entry.hardlinkTarget === undefined ? [entry.path] : [entry.path, entry.hardlinkTarget]) {
      for (let slash = path.indexOf('/'); slash !== -1; slash = path.indexOf('/', slash + 1)) {
        if (links.has(path.slice(0, slash))) {
          throw new EtchError(
            'ETCH_UNSAFE_PATH',
            `Entry ${JSON.stringify(name)} goes through ${JSON.stringify(path.slice(0, slash))}, which this archive made a symlink; that could write outside the partition.`,
            { details: { entryName: name } },
          );
        }
      }
    }
    if (entry.type === 'symlink') links.add(entry.path);
    else links.delete(entry.path);
  }

  /** Records the VERSION content read after {@link accept} returned `version`. */
  acceptVersion(text: string): FormatVersion {
    if (this.#state !== 'expect-version-content') {
      throw new EtchError('ETCH_BAD_VERSION', 'acceptVersion() called without a VERSION entry.');
    }
    const version = parseVersion(text);
    assertSupportedVersion(version, this.#reader);
    this.#version = version;
    this.#state = 'expect-base';
    return version;
  }

  /** Call at the end of the archive; throws when VERSION or the base image never came. */
  finish(): void {
    if (this.#state === 'expect-version' || this.#state === 'expect-version-content') {
      throw new EtchError('ETCH_BAD_VERSION', 'The archive has no VERSION entry; it is not a .etch file.');
    }
    if (this.#state === 'expect-base') {
      throw new EtchError('ETCH_BAD_ORDER', 'The archive has no base image after VERSION.');
    }
    this.#state = 'finished';
  }
}
