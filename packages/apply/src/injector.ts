import type { PartitionInfo } from '@etch/disk';
import type { EtchInjectEntry } from '@etch/tar';

/** A regular file written into a partition, for verification. */
export interface InjectedFile {
  /** Absolute path in the partition. */
  path: string;
  size: number;
  sha256: string;
}

/** Writes the inject entries of one partition; one implementation per filesystem. */
export interface PartitionInjector {
  add(entry: EtchInjectEntry): Promise<void>;
  /** Writes what is still pending; resolves with the regular files written and the partition's final extent. */
  finish(): Promise<{ files: InjectedFile[]; partition: PartitionInfo }>;
  /** Waits for writing still under way in the background, if any, whatever its outcome: before cleaning up after a failure. */
  settle?(): Promise<void>;
}
