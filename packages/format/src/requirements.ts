import { EtchError } from './errors.js';
import { parsePartition } from './paths.js';

/** Name of the 1.1 entry that tells a flasher, before any inject entry, how much each partition receives. */
export const REQUIREMENTS_ENTRY_NAME = 'requirements.json';

/** The largest requirements entry a reader accepts (it is read into memory). */
export const MAX_REQUIREMENTS_SIZE = 64 * 1024;

/** What the inject entries of one partition need: an upper estimate a flasher grows the filesystem by. */
export interface PartitionRequirement {
  /** Bytes of regular-file content written into the partition (before filesystem overhead). */
  bytes: number;
  /** Number of entries (files, directories, links, devices): the inodes the flasher needs at most. */
  entries: number;
}

/** The content of `requirements.json`. */
export interface EtchRequirements {
  /** Per partition number (as in `inject/<n>/`). */
  partitions: Record<string, PartitionRequirement>;
}

function bad(message: string): EtchError {
  return new EtchError('ETCH_BAD_ENTRY', `${REQUIREMENTS_ENTRY_NAME}: ${message}`, {
    details: { entryName: REQUIREMENTS_ENTRY_NAME },
  });
}

/**
 * Parses and checks a `requirements.json`: `{"partitions": {"6": {"bytes": N, "entries": M}}}` with partition
 * numbers as in `inject/<n>/` and non-negative safe integers. Unknown fields are ignored (later minors may add some).
 * @throws EtchError `ETCH_BAD_ENTRY` otherwise.
 */
export function parseRequirements(data: Uint8Array | string): EtchRequirements {
  let json: unknown;
  try {
    json = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
  } catch {
    throw bad('is not valid JSON.');
  }
  const partitions = (json as { partitions?: unknown })?.partitions;
  if (typeof partitions !== 'object' || partitions === null || Array.isArray(partitions))
    throw bad('has no "partitions" object.');
  const result: EtchRequirements = { partitions: {} };
  for (const [key, value] of Object.entries(partitions as Record<string, unknown>)) {
    try {
      parsePartition(key);
    } catch {
      throw bad(`${JSON.stringify(key)} is not a partition number.`);
    }
    const { bytes, entries } = (value ?? {}) as { bytes?: unknown; entries?: unknown };
    for (const [field, n] of [
      ['bytes', bytes],
      ['entries', entries],
    ] as const) {
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
        throw bad(`partition ${key}: "${field}" must be a non-negative integer.`);
    }
    result.partitions[key] = { bytes: bytes as number, entries: entries as number };
  }
  return result;
}

/** The entry's content, as writers emit it. */
export function serializeRequirements(requirements: EtchRequirements): string {
  return `${JSON.stringify({ partitions: requirements.partitions }, null, 2)}\n`;
}
