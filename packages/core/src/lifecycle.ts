import type { Readable } from 'node:stream';
import { VERSION_1_0, VERSION_ENTRY_NAME, assertBaseImageName, formatVersion, injectPath } from '@etch/format';
import {
  createTarPack,
  promisePacker,
  whenPackerIdle,
  type EntryContent,
  type EntryHeader,
  type TarPack,
} from '@etch/tar';
import { dockerStoreEntries, type DockerStoreOptions, type StoreImage, type StoredImage } from '@etch/docker-store';

/** A file for {@link streamFiles}: a header (name relative to the partition) and its content. */
export interface FileToInject {
  header: EntryHeader;
  content?: EntryContent;
}

/**
 * Step 1 of the original lifecycle: creates the tar stream (a tar-stream `pack`, see `createTarPack` in
 * `@etch/tar`) a `.etch` is written into. Pipe it to your output (file, HTTP response…) before writing entries.
 */
export async function prepareEtchStream(): Promise<TarPack> {
  return createTarPack();
}

/**
 * Step 3: writes VERSION and the base image. Resolves once the whole base image entry is in the pack, after
 * which inject entries may follow.
 *
 * @param baseImageStream the image (raw, or a zip holding one), exactly `baseImageSize` bytes.
 * @param baseImageName a plain file name with an image or `.zip` extension.
 */
export async function startEtchStream(
  packStream: TarPack,
  baseImageStream: Readable,
  baseImageSize: number,
  baseImageName: string,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  assertBaseImageName(baseImageName);
  const write = promisePacker(packStream, undefined, options);
  await write({ name: VERSION_ENTRY_NAME, mode: 0o644 }, formatVersion(VERSION_1_0));
  await write({ name: baseImageName, mode: 0o644, size: baseImageSize }, baseImageStream);
}

/**
 * Writes files into partition `partition` (names relative to the partition root), one after another.
 * Parent directories need not be listed: flashers create them.
 */
export async function streamFiles(
  packStream: TarPack,
  partition: number,
  files: Iterable<FileToInject> | AsyncIterable<FileToInject>,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const write = promisePacker(packStream, injectPath(partition, '/'), options);
  for await (const { header, content } of files) await write(header, content);
}

/**
 * Writes the engine store for `images` into the data partition: every file `docker pull` of them would leave
 * under `docker/` (the seed's name for this step). Resolves with what was stored once the last entry
 * (`repositories.json`) is in the pack.
 * @param images resolved for the device's platform, e.g. from `getManifestsForImages`.
 */
export async function streamDockerAssets(
  packStream: TarPack,
  dataPartition: number,
  images: readonly StoreImage[],
  options: DockerStoreOptions = {},
): Promise<StoredImage[]> {
  let stored: StoredImage[] = [];
  // yield* hands over the generator's return value once its last entry has been consumed.
  const entries = async function* () {
    stored = yield* dockerStoreEntries(images, options);
  };
  await streamFiles(packStream, dataPartition, entries(), options.signal ? { signal: options.signal } : {});
  return stored;
}

/** Last step: ends the archive (after every queued entry is written). */
export async function closeEtchStream(packStream: TarPack): Promise<void> {
  await whenPackerIdle(packStream);
  packStream.finalize();
}
