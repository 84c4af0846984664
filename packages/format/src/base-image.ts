import { EtchError } from './errors.js';
import { INJECT_ROOT } from './paths.js';

/**
 * Extensions of raw disk images, as flashers (etcher-sdk) recognise them, plus the common Yocto ones.
 * Compared case-insensitively.
 */
export const RAW_IMAGE_EXTENSIONS: readonly string[] = Object.freeze([
  'img',
  'raw',
  'bin',
  'dsk',
  'iso',
  'dmg',
  'wic',
  'sdcard',
  'rpi-sdimg',
  'hddimg',
]);

/** How the base image entry holds the disk: as is, or inside a zip the flasher opens. */
export type BaseImageContainer = 'raw' | 'zip';

/** Returns the container of a base image by its extension, or undefined when it is not an image name. */
export function baseImageContainer(name: string): BaseImageContainer | undefined {
  const dot = name.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const extension = name.slice(dot + 1).toLowerCase();
  if (extension === 'zip') return 'zip';
  return RAW_IMAGE_EXTENSIONS.includes(extension) ? 'raw' : undefined;
}

/** True when `name` has a raw image extension (used to pick the image inside a zip). */
export function isRawImageName(name: string): boolean {
  return baseImageContainer(name) === 'raw';
}

/**
 * True for a zip entry that may be the disk image of a zipped base image: a file (not a folder) whose last
 * path component has a raw image extension, leaving out hidden files and macOS `__MACOSX/` resource forks.
 * Of those, the largest is the image: writers and flashers must agree on this choice.
 */
export function isZipImageEntry(fileName: string): boolean {
  if (fileName.endsWith('/') || fileName.startsWith('__MACOSX/')) return false;
  const name = fileName.slice(fileName.lastIndexOf('/') + 1);
  return !name.startsWith('.') && isRawImageName(name);
}

/**
 * Validates the archive name of the base image: one path component (no `/`), not `inject`, not hidden,
 * with a raw image or `.zip` extension.
 * @throws EtchError `ETCH_BAD_ENTRY` otherwise, saying what is accepted.
 */
export function assertBaseImageName(name: string): BaseImageContainer {
  const container =
    name.includes('/') || name.includes('\0') || name.startsWith('.') || name === INJECT_ROOT
      ? undefined
      : baseImageContainer(name);
  if (container === undefined) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `Base image name ${JSON.stringify(name)} is not allowed: use a plain file name ending in .zip or one of ` +
        `${RAW_IMAGE_EXTENSIONS.map((e) => `.${e}`).join(' ')}.`,
      { details: { entryName: name } },
    );
  }
  return container;
}
