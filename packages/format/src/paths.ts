import { EtchError } from './errors.js';

/** The folder every injected entry lives under. */
export const INJECT_ROOT = 'inject';

/**
 * The largest partition number accepted. GPT allows 128 entries by default; MBR logical partitions are
 * numbered from 5 upward. Anything beyond this is a typo rather than a disk.
 */
export const MAX_PARTITION = 1024;

const PARTITION_PATTERN = /^[1-9][0-9]*$/;

/**
 * Parses the `<partition>` component of an inject name: a 1-based decimal number without leading zeros.
 * @throws EtchError `ETCH_BAD_ENTRY` for `0`, leading zeros, non-numbers and numbers above {@link MAX_PARTITION}.
 */
export function parsePartition(text: string, entryName?: string): number {
  const value = PARTITION_PATTERN.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value > MAX_PARTITION) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `Partition must be a number from 1 to ${MAX_PARTITION} (MBR logical partitions start at 5), found ${JSON.stringify(text)}.`,
      { details: entryName === undefined ? {} : { entryName } },
    );
  }
  return value;
}

/** Validates a partition number given as a number (for builders). */
export function assertPartition(partition: number): number {
  if (!Number.isSafeInteger(partition) || partition < 1 || partition > MAX_PARTITION) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `Partition must be an integer from 1 to ${MAX_PARTITION}, got ${String(partition)}.`,
    );
  }
  return partition;
}

/**
 * Normalises a path relative to a root: folds `//` and `.` segments and a trailing `/`.
 * Returns `''` for the root itself.
 * @throws EtchError `ETCH_UNSAFE_PATH` when the path is absolute, has a `..` segment or a NUL byte.
 */
export function normalizeRelativePath(path: string, entryName: string = path): string {
  if (path.includes('\0')) {
    throw new EtchError('ETCH_UNSAFE_PATH', `Path ${JSON.stringify(entryName)} contains a NUL byte.`, {
      details: { entryName },
    });
  }
  if (path.startsWith('/')) {
    throw new EtchError('ETCH_UNSAFE_PATH', `Path ${JSON.stringify(entryName)} is absolute; paths must be relative.`, {
      details: { entryName },
    });
  }
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      throw new EtchError(
        'ETCH_UNSAFE_PATH',
        `Path ${JSON.stringify(entryName)} contains "..", which could escape its root.`,
        {
          details: { entryName },
        },
      );
    }
    segments.push(segment);
  }
  return segments.join('/');
}

/**
 * Builds the archive name of a file injected into a partition: `inject/<partition>/<path>`.
 * A leading `/` on `path` is allowed here (it means "from the partition root") and dropped.
 *
 * @example
 * ```ts
 * injectPath(1, '/config.json') // 'inject/1/config.json'
 * injectPath(6, 'docker/image') // 'inject/6/docker/image'
 * ```
 */
export function injectPath(partition: number, path: string): string {
  assertPartition(partition);
  const relative = normalizeRelativePath(path.replace(/^\/+/, ''), path);
  return relative === '' ? `${INJECT_ROOT}/${partition}/` : `${INJECT_ROOT}/${partition}/${relative}`;
}

/** A parsed `inject/<partition>/<path>` name. */
export interface InjectName {
  partition: number;
  /** Normalised path relative to the partition root; `''` for the root directory itself. */
  path: string;
}

/**
 * Parses `inject/<partition>/<path>`; returns undefined when the name is not under `inject/`.
 * @throws EtchError `ETCH_BAD_ENTRY` or `ETCH_UNSAFE_PATH` when it is under `inject/` but malformed.
 */
export function parseInjectName(name: string): InjectName | undefined {
  if (name !== INJECT_ROOT && !name.startsWith(`${INJECT_ROOT}/`)) return undefined;
  const rest = name.slice(INJECT_ROOT.length + 1);
  const slash = rest.indexOf('/');
  const partitionText = slash === -1 ? rest : rest.slice(0, slash);
  if (partitionText === '') {
    throw new EtchError('ETCH_BAD_ENTRY', `Entry ${JSON.stringify(name)} has no partition number after "inject/".`, {
      details: { entryName: name },
    });
  }
  const partition = parsePartition(partitionText, name);
  // `inject/6//x` is `inject/6/x`: readers fold repeated slashes (format §5), here too.
  const path = slash === -1 ? '' : normalizeRelativePath(rest.slice(slash + 1).replace(/^\/+/, ''), name);
  return { partition, path };
}

/**
 * Resolves a hardlink's `linkname`. In a `.etch` it is the archive name of another entry in the same
 * `inject/<partition>/` tree; the result is the target path relative to that partition.
 * @throws EtchError `ETCH_UNSAFE_PATH` when the target is elsewhere or escapes.
 */
export function resolveHardlinkTarget(linkname: string, partition: number, entryName: string): string {
  let target: InjectName | undefined;
  try {
    target = parseInjectName(linkname);
  } catch (cause) {
    throw new EtchError(
      'ETCH_UNSAFE_PATH',
      `Hardlink ${JSON.stringify(entryName)} has an invalid target ${JSON.stringify(linkname)}.`,
      {
        cause,
        details: { entryName },
      },
    );
  }
  if (target === undefined || target.partition !== partition || target.path === '') {
    throw new EtchError(
      'ETCH_UNSAFE_PATH',
      `Hardlink ${JSON.stringify(entryName)} points to ${JSON.stringify(linkname)}; a hardlink target must be a file in the same inject/${partition}/ tree.`,
      { details: { entryName } },
    );
  }
  return target.path;
}
