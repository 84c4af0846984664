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

const NUMBER = '(0|[1-9]\\d*)';
const IDENT = '[0-9A-Za-z-]+';
const VERSION_RE = new RegExp(
  `^v?${NUMBER}\\.${NUMBER}\\.${NUMBER}(?:-(${IDENT}(?:\\.${IDENT})*))?(?:\\+(${IDENT}(?:\\.${IDENT})*))?$`,
);

/**
 * Parses a supervisor version as the supervisor images are tagged: an optional `v`, three numbers, an
 * optional `-prerelease` and an optional `+build` (`v14.11.2`, `12.3.5+rev1`).
 *
 * @throws EtchError `ETCH_USAGE` when the text is not such a version; the message says so rather than
 *   guessing a format (balena-preload assumed v2 for unparseable versions, which broke v13 devices).
 */
export function parseSupervisorVersion(version: string): SupervisorVersion {
  const raw = typeof version === 'string' ? version.trim() : '';
  const match = VERSION_RE.exec(raw);
  if (match === null) {
    throw new EtchError(
      'ETCH_USAGE',
      `Unknown supervisor version ${JSON.stringify(version)}: expected MAJOR.MINOR.PATCH such as v14.11.2 or 12.3.5+rev1. ` +
        'The apps.json format depends on it, so it is never guessed.',
      { details: { supervisorVersion: version } },
    );
  }
  const [, major, minor, patch, pre, build] = match;
  return {
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch),
    prerelease: pre === undefined ? [] : pre.split('.'),
    build: build ?? '',
    raw,
  };
}

function asVersion(v: string | SupervisorVersion): SupervisorVersion {
  return typeof v === 'string' ? parseSupervisorVersion(v) : v;
}

function comparePrerelease(a: string[], b: string[]): number {
  if (a.length === 0 || b.length === 0) return b.length - a.length; // a release ranks above its pre-releases
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const xNum = /^\d+$/.test(x);
    const yNum = /^\d+$/.test(y);
    if (xNum && yNum) {
      const d = Number(x) - Number(y);
      if (d !== 0) return Math.sign(d);
    } else if (xNum !== yNum) {
      return xNum ? -1 : 1; // numeric identifiers rank below alphanumeric ones
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/**
 * Semver precedence of two supervisor versions: negative, zero or positive. Build metadata is ignored
 * (`12.3.5+rev1` equals `12.3.5`); a pre-release ranks below its release (`7.0.0-beta` < `7.0.0`).
 *
 * @throws EtchError `ETCH_USAGE` when either text is not a version.
 */
export function compareSupervisorVersions(a: string | SupervisorVersion, b: string | SupervisorVersion): number {
  const x = asVersion(a);
  const y = asVersion(b);
  return Math.sign(
    x.major - y.major || x.minor - y.minor || x.patch - y.patch || comparePrerelease(x.prerelease, y.prerelease),
  );
}

/**
 * The apps.json format a supervisor version reads, as balena-preload's `_getStateVersion()` decides:
 * 1 below 7.0.0, 2 from 7.0.0 below 13.0.0, 3 from 13.0.0.
 *
 * @throws EtchError `ETCH_USAGE` when the version cannot be parsed.
 */
export function appsJsonFormatFor(supervisorVersion: string | SupervisorVersion): AppsJsonFormat {
  const v = asVersion(supervisorVersion);
  if (compareSupervisorVersions(v, '7.0.0') < 0) return 1;
  if (compareSupervisorVersions(v, '13.0.0') < 0) return 2;
  return 3;
}
