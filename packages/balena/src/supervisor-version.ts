import { compare, parse } from 'semver';
import { EtchError } from '@etch/format';

/** A parsed supervisor version: `v14.11.2`, `12.3.5+rev1`, `7.0.0-beta.1`. */
export interface SupervisorVersion {
  major: number;
  minor: number;
  patch: number;
  /** Pre-release identifiers (`beta.1` → `['beta', '1']`); empty for a release. */
  prerelease: string[];
  /** Build metadata after `+` (`rev1`); ignored when comparing, as semver says. */
  build: string;
  /** The text as given. */
  raw: string;
}

/** The apps.json format a supervisor reads: 1 (array), 2 (apps by id) or 3 (apps by uuid, with releases). */
export type AppsJsonFormat = 1 | 2 | 3;

/**
 * Parses a supervisor version as the supervisor images are tagged: an optional `v`, three numbers, an
 * optional `-prerelease` and an optional `+build` (`v14.11.2`, `12.3.5+rev1`), strictly as semver reads it.
 *
 * @throws EtchError `ETCH_USAGE` when the text is not such a version; the message says so rather than
 *   guessing a format (balena-preload assumed v2 for unparseable versions, which broke v13 devices).
 */
export function parseSupervisorVersion(version: string): SupervisorVersion {
  const raw = typeof version === 'string' ? version.trim() : '';
  const parsed = parse(raw);
  if (parsed === null) {
    throw new EtchError(
      'ETCH_USAGE',
      `Unknown supervisor version ${JSON.stringify(version)}: expected MAJOR.MINOR.PATCH such as v14.11.2 or 12.3.5+rev1. ` +
        'The apps.json format depends on it, so it is never guessed.',
      { details: { supervisorVersion: version } },
    );
  }
  return {
    major: parsed.major,
    minor: parsed.minor,
    patch: parsed.patch,
    prerelease: parsed.prerelease.map(String),
    build: parsed.build.join('.'),
    raw,
  };
}

/** The text semver compares: the build metadata is left out, as precedence ignores it. */
function precedenceText(v: string | SupervisorVersion): string {
  const { major, minor, patch, prerelease } = typeof v === 'string' ? parseSupervisorVersion(v) : v;
  return `${major}.${minor}.${patch}${prerelease.length > 0 ? `-${prerelease.join('.')}` : ''}`;
}

/**
 * Semver precedence of two supervisor versions: negative, zero or positive. Build metadata is ignored
 * (`12.3.5+rev1` equals `12.3.5`); a pre-release ranks below its release (`7.0.0-beta` < `7.0.0`).
 *
 * @throws EtchError `ETCH_USAGE` when either text is not a version.
 */
export function compareSupervisorVersions(a: string | SupervisorVersion, b: string | SupervisorVersion): number {
  return compare(precedenceText(a), precedenceText(b));
}

/**
 * The apps.json format a supervisor version reads, as balena-preload's `_getStateVersion()` decides:
 * 1 below 7.0.0, 2 from 7.0.0 below 13.0.0, 3 from 13.0.0.
 *
 * @throws EtchError `ETCH_USAGE` when the version cannot be parsed.
 */
export function appsJsonFormatFor(supervisorVersion: string | SupervisorVersion): AppsJsonFormat {
  const v = typeof supervisorVersion === 'string' ? parseSupervisorVersion(supervisorVersion) : supervisorVersion;
  if (compareSupervisorVersions(v, '7.0.0') < 0) return 1;
  if (compareSupervisorVersions(v, '13.0.0') < 0) return 2;
  return 3;
}
