import { compare, parse, satisfies as semverSatisfies, validRange } from 'semver';
import { EtchError } from '@etch/format';

/**
 * A balenaOS / semver version: `2.58.3`, `v2.58.3+rev1`, `2.58.3+rev1.prod`, `2.58.3.rev1` (old style),
 * `2.80.0-beta.1`, ESR `2021.10.2`. Tags spell `+` as `_` (registries do not allow `+` in tags).
 */
export interface Version {
  major: number;
  minor: number;
  patch: number;
  /** Pre-release identifiers (`beta.1` → ['beta', 1]); empty for a release. */
  prerelease: (string | number)[];
  /** Build metadata identifiers (`rev1.prod` → ['rev1', 'prod']). */
  build: string[];
  /** The `revN` of balenaOS, from `+revN` or `.revN`; it orders builds of the same version. */
  rev: number | undefined;
  /** The text parsed. */
  raw: string;
}

// The old balenaOS spelling of a build revision, `2.58.3.rev1` (today `2.58.3+rev1`): semver reads it once it is cut.
const OLD_REV = /^(v?\d+\.\d+\.\d+)\.rev(0|[1-9]\d*)(?=[-+]|$)/;
const REV = /^rev(\d+)$/;

/**
 * Parses a whole version string, strictly as semver reads it (anchored: `foo-1.2.3` is not a version), with
 * balenaOS's spellings: `_` for `+` (tags), `.revN` after the patch number. Undefined when it is not one.
 */
export function parseVersion(text: string): Version | undefined {
  const spelled = text.trim().replace(/_/g, '+');
  const oldRev = OLD_REV.exec(spelled);
  const parsed = parse(oldRev ? spelled.replace(OLD_REV, '$1') : spelled);
  if (parsed === null) return undefined;
  const revText = oldRev?.[2] ?? parsed.build.map((id) => REV.exec(id)?.[1]).find((n) => n !== undefined);
  return {
    major: parsed.major,
    minor: parsed.minor,
    patch: parsed.patch,
    prerelease: [...parsed.prerelease],
    build: [...parsed.build],
    rev: revText === undefined ? undefined : Number(revText),
    raw: text,
  };
}

/** ESR versions are year-based: major ≥ 2018 (`2021.10.2`). */
export function isEsr(version: Version): boolean {
  return version.major >= 2018;
}

/** The version as semver compares it: without build metadata, which precedence ignores. */
function precedenceText(version: Version): string {
  const { major, minor, patch, prerelease } = version;
  return `${major}.${minor}.${patch}${prerelease.length > 0 ? `-${prerelease.join('.')}` : ''}`;
}

/** Semver precedence without build metadata: negative when a < b. */
export function comparePrecedence(a: Version, b: Version): number {
  return compare(precedenceText(a), precedenceText(b));
}

/** Orders versions: semver precedence, then balenaOS `revN` (no rev < rev1 < rev2), then the text. */
export function compareVersions(a: Version, b: Version): number {
  return (
    comparePrecedence(a, b) || Math.sign((a.rev ?? 0) - (b.rev ?? 0)) || (a.raw < b.raw ? -1 : a.raw > b.raw ? 1 : 0)
  );
}

/** A range, as {@link parseRange} reads it. */
export interface Range {
  /** The range as semver spells it out: `^2.58` is `>=2.58.0 <3.0.0-0`. */
  readonly normalized: string;
}

/**
 * Parses an npm-style range, as semver reads it: `^2.58`, `~2.58.3`, `>=2.50 <2.60`, `2.x`, `2.58.*`,
 * `1.2.3 - 2.3.4`, `a || b`. Undefined when it is not a range (garbage is refused, not matched loosely; so is
 * an empty alternative, which semver would read as "anything").
 */
export function parseRange(text: string): Range | undefined {
  if (text.split('||').some((alternative) => alternative.trim() === '')) return undefined;
  const normalized = validRange(text.replace(/_/g, '+'));
  return normalized === null ? undefined : { normalized };
}

/**
 * True when `version` is in `range`, with npm's rule for pre-releases: a pre-release only matches a set that
 * names a pre-release of the same major.minor.patch (`>=2.80.0-beta.0` admits `2.80.0-beta.3`, `^2.80` does not).
 */
export function satisfies(version: Version, range: Range): boolean {
  return semverSatisfies(precedenceText(version), range.normalized);
}

/** A version selector, as {@link parseSelector} reads it. */
export type Selector =
  | { kind: 'latest' }
  | { kind: 'recommended' }
  | { kind: 'default' }
  | { kind: 'exact'; version: Version }
  | { kind: 'range'; range: Range; text: string };

/**
 * Reads a version selector: `latest`, `recommended`, `default`, an exact version (`2.58.3+rev1`,
 * `2021.10.2`) or a range (`^2.58`). Anything else fails with `ETCH_USAGE`.
 */
export function parseSelector(text: string): Selector {
  const trimmed = text.trim();
  if (trimmed === 'latest' || trimmed === 'recommended' || trimmed === 'default') return { kind: trimmed };
  const exact = parseVersion(trimmed);
  if (exact) return { kind: 'exact', version: exact };
  const range =
    /^[\s0-9a-zA-Z.*^~<>=|+_-]+$/.test(trimmed) && /\d|[xX*]/.test(trimmed) ? parseRange(trimmed) : undefined;
  if (range) return { kind: 'range', range, text: trimmed };
  throw new EtchError(
    'ETCH_USAGE',
    `${JSON.stringify(text)} is not a version, a range (^2.58, >=2.50 <3, 2.x), latest, recommended or default.`,
    { details: { selector: text } },
  );
}

/** Tags of a repository that are versions, newest first (tags that are not versions are left out). */
export function versionTags(tags: readonly string[]): { tag: string; version: Version }[] {
  return tags
    .map((tag) => ({ tag, version: parseVersion(tag) }))
    .filter((t): t is { tag: string; version: Version } => t.version !== undefined)
    .sort((a, b) => compareVersions(b.version, a.version));
}

/**
 * Picks a tag for a selector, as balena-image-manager does: exact (the tag spelled the same, else the highest
 * build of that version: `2.58.3` picks `2.58.3_rev2` over `2.58.3_rev1`), range (highest match), `latest`
 * (newest, pre-releases included), `recommended` (newest release; an error when there are only pre-releases),
 * `default` (recommended, else latest).
 * @throws EtchError `ETCH_NOT_FOUND` listing the newest versions when nothing matches.
 */
export function selectTag(tags: readonly string[], selector: Selector, what = 'The repository'): string {
  const candidates = versionTags(tags);
  const releases = candidates.filter((c) => c.version.prerelease.length === 0);
  let found: { tag: string } | undefined;
  switch (selector.kind) {
    case 'latest':
      found = candidates[0];
      break;
    case 'recommended':
      found = releases[0];
      break;
    case 'default':
      found = releases[0] ?? candidates[0];
      break;
    case 'exact': {
      const wanted = selector.version;
      found =
        candidates.find((c) => c.tag === wanted.raw || c.tag === wanted.raw.replace(/\+/g, '_')) ??
        candidates.find(
          (c) =>
            comparePrecedence(c.version, wanted) === 0 &&
            (wanted.rev === undefined || c.version.rev === wanted.rev) &&
            wanted.build.filter((b) => !/^rev\d+$/.test(b)).every((b) => c.version.build.includes(b)),
        );
      break;
    }
    case 'range':
      found = candidates.find((c) => satisfies(c.version, selector.range));
      break;
  }
  if (found === undefined) {
    const newest = candidates.slice(0, 8).map((c) => c.tag);
    const asked =
      selector.kind === 'exact' ? selector.version.raw : selector.kind === 'range' ? selector.text : selector.kind;
    const why =
      selector.kind === 'recommended' && candidates.length > 0
        ? ' (only pre-releases are available; use latest or default)'
        : '';
    throw new EtchError(
      'ETCH_NOT_FOUND',
      `${what} has no version matching ${asked}${why}; ${newest.length ? `newest: ${newest.join(', ')}` : 'it has no version tags'}.`,
      { details: { selector: asked, available: newest } },
    );
  }
  return found.tag;
}
