import { EtchError } from './errors.js';

/** A `.etch` format version. */
export interface FormatVersion {
  major: number;
  minor: number;
}

/**
 * The newest version this implementation reads and writes. 1.1 adds the optional `requirements.json` entry;
 * 1.2 adds character devices other than whiteouts, block devices and FIFOs in `inject/`.
 */
export const CURRENT_VERSION: Readonly<FormatVersion> = Object.freeze({ major: 1, minor: 2 });

/** 1.1: adds `requirements.json`. */
export const VERSION_1_1: Readonly<FormatVersion> = Object.freeze({ major: 1, minor: 1 });

/** 1.2: adds device nodes and FIFOs in `inject/`. */
export const VERSION_1_2: Readonly<FormatVersion> = Object.freeze({ major: 1, minor: 2 });

/** 1.0: VERSION, base image, inject entries. Writers use it when they write nothing newer. */
export const VERSION_1_0: Readonly<FormatVersion> = Object.freeze({ major: 1, minor: 0 });

/** True when `version` is at least `minimum` (same major). */
export function isAtLeast(version: FormatVersion, minimum: FormatVersion): boolean {
  return version.major === minimum.major && version.minor >= minimum.minor;
}

/** The name of the first entry. Readers also accept {@link LEGACY_VERSION_ENTRY_NAME}. */
export const VERSION_ENTRY_NAME = 'VERSION';

/** The name the first generator wrote (an absolute path); accepted on read, never written. */
export const LEGACY_VERSION_ENTRY_NAME = '/VERSION';

/** True for the names a reader accepts for the VERSION entry. */
export function isVersionEntryName(name: string): boolean {
  return name === VERSION_ENTRY_NAME || name === LEGACY_VERSION_ENTRY_NAME;
}

/** `"1.0"`: the VERSION entry content for a version (no newline). */
export function formatVersion(version: FormatVersion = CURRENT_VERSION): string {
  return `${version.major}.${version.minor}`;
}

// The seed's prose says "major:minor" while its code wrote "1.0"; both spellings exist in the wild.
const VERSION_PATTERN = /^(0|[1-9][0-9]{0,5})[.:](0|[1-9][0-9]{0,5})$/;

/**
 * Parses VERSION content: `major.minor`, or the `major:minor` spelling; surrounding whitespace is ignored.
 * @throws EtchError `ETCH_BAD_VERSION` when the text is not a version.
 */
export function parseVersion(text: string): FormatVersion {
  const match = VERSION_PATTERN.exec(text.trim());
  if (!match) {
    throw new EtchError(
      'ETCH_BAD_VERSION',
      `VERSION must hold "major.minor" (like "1.0"), found ${JSON.stringify(text.slice(0, 32))}.`,
    );
  }
  return { major: Number(match[1]), minor: Number(match[2]) };
}

/**
 * Checks that a reader implementing {@link CURRENT_VERSION} can read a file of `version`: same major.
 * A newer minor is accepted: minors only add optional features, which a reader skips.
 * @throws EtchError `ETCH_UNSUPPORTED_VERSION` for another major.
 */
export function assertSupportedVersion(version: FormatVersion, reader: FormatVersion = CURRENT_VERSION): void {
  if (version.major !== reader.major) {
    throw new EtchError(
      'ETCH_UNSUPPORTED_VERSION',
      `This .etch is format ${formatVersion(version)}; this reader understands ${reader.major}.x only. ` +
        'Use a reader that supports that major version.',
    );
  }
}

/** True when a file of `version` may contain features newer than `reader` knows (and should skip). */
export function isNewerMinor(version: FormatVersion, reader: FormatVersion = CURRENT_VERSION): boolean {
  return version.major === reader.major && version.minor > reader.minor;
}
