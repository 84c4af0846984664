/**
 * What `etch create` and `etch apply` check before the first byte is written, so a typo costs a second
 * instead of a base image's worth of writing.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { findPartition, openReadAt, readPartitionTable } from '@etch/disk';
import { EtchError, isEtchError, type Logger } from '@etch/format';
import { parseReference } from '@etch/registry';
import { usageError } from './args.js';

async function statOrUndefined(path: string) {
  return stat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined;
    throw new EtchError('ETCH_IO', `Cannot read ${path}: ${error.message}`, { cause: error, details: { path } });
  });
}

/**
 * A file to be written at `path` (`shown` is how the user typed it): its folder must exist and take new
 * files, and the path must not be a folder.
 */
export async function checkOutputFile(path: string, shown: string, flag: string): Promise<void> {
  const info = await statOrUndefined(path);
  if (info?.isDirectory())
    throw usageError(`${flag} ${shown} is a folder; name the file to write in it (for example ${shown}/out.etch).`);
  const folder = dirname(path);
  const parent = await statOrUndefined(folder);
  if (parent === undefined) throw usageError(`${flag} ${shown}: the folder ${folder} does not exist.`);
  if (!parent.isDirectory()) throw usageError(`${flag} ${shown}: ${folder} is not a folder.`);
  try {
    await access(folder, constants.W_OK);
  } catch (cause) {
    throw new EtchError(
      'ETCH_IO',
      `${flag} ${shown}: cannot write into ${folder} (${(cause as NodeJS.ErrnoException).code}).`,
      {
        cause,
        details: { path: folder },
      },
    );
  }
}

/** Each `--inject PART:DIR` folder exists and is a folder. */
export async function checkInjectFolders(folders: readonly { spec: string; path: string }[]): Promise<void> {
  for (const { spec, path } of folders) {
    const info = await statOrUndefined(path);
    if (info === undefined) throw usageError(`--inject ${spec}: ${path} does not exist.`);
    if (!info.isDirectory())
      throw usageError(
        `--inject ${spec}: ${path} is not a folder (its contents are copied; put the file in a folder).`,
      );
  }
}

/**
 * Each partition the flags name exists in the base image's partition table and can hold files (not the
 * MBR extended container). A base image whose table cannot be read here (not a disk image, say) is not
 * checked: the flasher will be.
 */
export async function checkPartitions(
  baseImage: string,
  wanted: readonly { partition: number; flag: string }[],
  logger: Logger,
): Promise<void> {
  if (wanted.length === 0) return;
  let disk;
  try {
    disk = await openReadAt(baseImage);
  } catch {
    return; // Reported when the base image is opened, with the error of its own.
  }
  try {
    let table;
    try {
      table = await readPartitionTable(disk.read);
    } catch (error) {
      if (!isEtchError(error, 'ETCH_BAD_DISK_IMAGE')) throw error;
      logger.debug('the base image has no partition table readable here; partition numbers are not checked', {
        reason: error.message,
      });
      return;
    }
    // A file cut short (a partial download, a copy that ran out of room) still has its whole partition table.
    const info = await stat(baseImage);
    const end = Math.max(...table.partitions.map((p) => p.offset + p.size));
    if (info.isFile() && end > info.size) {
      const last = table.partitions.find((p) => p.offset + p.size === end);
      logger.warn(
        `the base image is ${end - info.size} bytes shorter than its partition table says (partition ${last?.number} ends at byte ${end}, the file has ${info.size}); it may be truncated`,
        { path: baseImage },
      );
    }
    for (const { partition, flag } of wanted) {
      try {
        findPartition(table, partition);
      } catch (error) {
        if (!isEtchError(error, 'ETCH_BAD_DISK_IMAGE')) throw error;
        throw usageError(`${flag}: ${error.message}`);
      }
    }
  } finally {
    await disk.close();
  }
}

/**
 * Each image to preload can be found: a registry reference parses, an `oci:` or `docker-archive:` path
 * exists. Whether the registry has it is learnt while the base image streams (or, for stdout, before).
 */
export async function checkImageSpecs(specs: readonly string[]): Promise<void> {
  for (const spec of specs) {
    const local = /^(oci|docker-archive):(.*)$/.exec(spec);
    if (local === null) {
      parseReference(spec.startsWith('docker://') ? spec.slice('docker://'.length) : spec);
      continue;
    }
    const rest = local[2] as string;
    // The path is the longest prefix before a `:` that exists (the rest is a tag or reference).
    const candidates = [rest, ...[...rest.matchAll(/:/g)].map((m) => rest.slice(0, m.index))].filter(Boolean);
    let found = false;
    for (const candidate of candidates) if ((await statOrUndefined(resolve(candidate))) !== undefined) found = true;
    if (!found) {
      const path = resolve(rest.replace(/:[^/]*$/, ''));
      throw new EtchError('ETCH_NOT_FOUND', `The image ${spec} cannot be read: ${path} does not exist.`, {
        details: { path },
      });
    }
  }
}
