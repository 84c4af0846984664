import { Ext4Reader, findPartition, readPartitionFile, readPartitionTable, type ReadAt } from '@etch/disk';
import { parseRepositories, type RepositoriesJson } from './repositories.js';

/** Options for {@link readBaseRepositories}. */
export interface ReadBaseRepositoriesOptions {
  /** The data partition (6 on balenaOS). */
  partition: number;
  /** The engine's data root inside that partition (default `docker`). */
  root?: string;
}

/** Reads the engine's repositories.json from partition `options.partition` of a disk image given as a random-access reader. */
export async function readRepositoriesAt(
  read: ReadAt,
  options: ReadBaseRepositoriesOptions,
): Promise<RepositoriesJson | undefined> {
  const partition = findPartition(await readPartitionTable(read), options.partition);
  const fs = await Ext4Reader.open(read, partition.offset);
  const path = `/${(options.root ?? 'docker').replace(/^\/+|\/+$/g, '')}/image/overlay2/repositories.json`;
  const text = await fs.readFile(path);
  return text === undefined
    ? undefined
    : parseRepositories(text, `${path} in partition ${options.partition} of the base image`);
}

/**
 * Reads the base OS's own `repositories.json` straight from the data partition of a raw disk image, without
 * mounting it. balenaOS ships the supervisor (and sometimes more) there; a preload must merge with it, since
 * the flasher replaces the file with ours. Resolves to `undefined` when the partition has no engine store yet.
 * @throws EtchError `ETCH_BAD_DISK_IMAGE` when the image has no such partition or it is not ext2/3/4,
 * `ETCH_BAD_ENTRY` when the file is not a valid reference store, `ETCH_IO` when the image cannot be read.
 */
export async function readBaseRepositories(
  imagePath: string,
  options: ReadBaseRepositoriesOptions,
): Promise<RepositoriesJson | undefined> {
  const path = `/${(options.root ?? 'docker').replace(/^\/+|\/+$/g, '')}/image/overlay2/repositories.json`;
  const text = await readPartitionFile(imagePath, options.partition, path);
  return text === undefined
    ? undefined
    : parseRepositories(text, `${path} in partition ${options.partition} of the base image`);
}
