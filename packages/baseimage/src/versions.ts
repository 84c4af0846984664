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

const IDENT = '[0-9A-Za-z-]+';
const NUM = '0|[1-9]\\d*';
const VERSION_RE = new RegExp(
  `^v?(${NUM})\\.(${NUM})\\.(${NUM})(?:\\.rev(${NUM}))?(?:-(${IDENT}(?:\\.${IDENT})*))?(?:\\+(${IDENT}(?:\\.${IDENT})*))?$`,
);

/** Parses a whole version string (anchored: `foo-1.2.3` is not a version). Undefined when it is not one. */
export function parseVersion(text: string): Version | undefined {
  const match = VERSION_RE.exec(text.trim().replace(/_/g, '+'));
  if (!match) return undefined;
  const numbers = [match[1], match[2], match[3]].map(Number) as [number, number, number];
  if (numbers.some((n) => !Number.isSafeInteger(n))) return undefined;
  const prerelease = match[5] ? match[5].split('.').map((id) => (/^(0|[1-9]\d*)$/.test(id) ? Number(id) : id)) : [];
  if (match[5]?.split('.').some((id) => /^0\d+$/.test(id))) return undefined;
  const build = match[6] ? match[6].split('.') : [];
  const revFromBuild = build.map((id) => /^rev(\d+)$/.exec(id)?.[1]).find((n) => n !== undefined);
  const revText = match[4] ?? revFromBuild;
  return {
    major: numbers[0],
    minor: numbers[1],
    patch: numbers[2],
    prerelease,
    build,
    rev: revText === undefined ? undefined : Number(revText),
    raw: text,
  };
}

/** ESR versions are year-based: major ≥ 2018 (`2021.10.2`). */
export function isEsr(version: Version): boolean {
  return version.major >= 2018;
}

function compareIds(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Semver precedence without build metadata: negative when a < b. */
export function comparePrecedence(a: Version, b: Version): number {
  const core = a.major - b.major || a.minor - b.minor || a.patch - b.patch;
  if (core !== 0) return Math.sign(core);
  if (a.prerelease.length === 0 || b.prerelease.length === 0)
    return Math.sign(b.prerelease.length - a.prerelease.length);
  for (let i = 0; i < Math.max(a.prerelease.length, b.prerelease.length); i += 1) {
    const x = a.prerelease[i];
    const y = b.prerelease[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const c = compareIds(x, y);
    if (c !== 0) return Math.sign(c);
  }
  return 0;
}

/** Orders versions: semver precedence, then balenaOS `revN` (no rev < rev1 < rev2), then the text. */
export function compareVersions(a: Version, b: Version): number {
  return (
    comparePrecedence(a, b) || Math.sign((a.rev ?? 0) - (b.rev ?? 0)) || (a.raw < b.raw ? -1 : a.raw > b.raw ? 1 : 0)
  );
}

type Op = '<' | '<=' | '>' | '>=' | '=';
interface Comparator {
  op: Op;
  version: Version;
}
/** A parsed range: OR of AND-sets of comparators. */
export type Range = Comparator[][];

function v(major: number, minor: number, patch: number, prerelease: (string | number)[] = []): Version {
  return { major, minor, patch, prerelease, build: [], rev: undefined, raw: `${major}.${minor}.${patch}` };
}

const PARTIAL_RE = /^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

interface Partial {
  major: number | undefined;
  minor: number | undefined;
  patch: number | undefined;
  prerelease: (string | number)[];
}

function parsePartial(text: string): Partial | undefined {
  const match = PARTIAL_RE.exec(text.replace(/_/g, '+'));
  if (!match) return undefined;
  const part = (s: string | undefined) => (s === undefined || /^[xX*]$/.test(s) ? undefined : Number(s));
  const major = part(match[1]);
  const minor = part(match[2]);
  const patch = part(match[3]);
  if (major === undefined && (minor !== undefined || patch !== undefined)) return undefined;
  if (minor === undefined && patch !== undefined) return undefined;
  const prerelease = match[4] ? match[4].split('.').map((id) => (/^\d+$/.test(id) ? Number(id) : id)) : [];
  return { major, minor, patch, prerelease };
}

function expand(op: string, p: Partial): Comparator[] {
  const { major, minor, patch, prerelease } = p;
  if (major === undefined) return op === '<' || op === '>' ? [{ op: '<', version: v(0, 0, 0, [0]) }] : [];
  if (op === '^') {
    const lower = v(major, minor ?? 0, patch ?? 0, prerelease);
    const upper =
      major > 0 || minor === undefined
        ? v(major + 1, 0, 0, [0])
        : minor > 0 || patch === undefined
          ? v(0, minor + 1, 0, [0])
          : v(0, 0, (patch ?? 0) + 1, [0]);
    return [
      { op: '>=', version: lower },
      { op: '<', version: upper },
    ];
  }
  if (op === '~') {
    const lower = v(major, minor ?? 0, patch ?? 0, prerelease);
    const upper = minor === undefined ? v(major + 1, 0, 0, [0]) : v(major, minor + 1, 0, [0]);
    return [
      { op: '>=', version: lower },
      { op: '<', version: upper },
    ];
  }
  if (minor === undefined || patch === undefined) {
    // x-range: 2 = 2.x = >=2.0.0 <3.0.0-0; with an operator, compare against the range's edges.
    const lower = v(major, minor ?? 0, 0);
    const upper = minor === undefined ? v(major + 1, 0, 0, [0]) : v(major, minor + 1, 0, [0]);
    switch (op) {
      case '':
      case '=':
        return [
          { op: '>=', version: lower },
          { op: '<', version: upper },
        ];
      case '>':
        return [{ op: '>=', version: upper }];
      case '>=':
        return [{ op: '>=', version: lower }];
      case '<':
        return [{ op: '<', version: v(lower.major, lower.minor, 0, [0]) }];
      case '<=':
        return [{ op: '<', version: upper }];
    }
  }
  return [{ op: (op === '' ? '=' : op) as Op, version: v(major, minor as number, patch as number, prerelease) }];
}

/**
 * Parses an npm-style range: `^2.58`, `~2.58.3`, `>=2.50 <2.60`, `2.x`, `2.58.*`, `1.2.3 - 2.3.4`, `a || b`.
 * Undefined when it is not a range (garbage is refused, not matched loosely).
 */
export function parseRange(text: string): Range | undefined {
  const sets: Range = [];
  for (const alternative of text.split('||')) {
    const trimmed = alternative.trim();
    if (trimmed === '') return undefined;
    const set: Comparator[] = [];
    const hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(trimmed);
    if (hyphen) {
      const from = parsePartial(hyphen[1] as string);
      const to = parsePartial(hyphen[2] as string);
      if (!from || !to) return undefined;
      set.push(...expand('>=', from), ...expand('<=', to));
    } else {
      const tokens = trimmed.replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1').split(/\s+/);
      for (const token of tokens) {
        const match = /^(>=|<=|>|<|=|\^|~>?|)(.*)$/.exec(token);
        const partial = match ? parsePartial(match[2] as string) : undefined;
        if (!match || !partial) return undefined;
        set.push(...expand(match[1] === '~>' ? '~' : (match[1] as string), partial));
      }
    }
    sets.push(set);
  }
  return sets;
}

function satisfiesComparator(version: Version, c: Comparator): boolean {
  const cmp = comparePrecedence(version, c.version);
  switch (c.op) {
    case '<':
      return cmp < 0;
    case '<=':
      return cmp <= 0;
    case '>':
      return cmp > 0;
    case '>=':
      return cmp >= 0;
    case '=':
      return cmp === 0;
  }
}

/**
 * True when `version` is in `range`, with npm's rule for pre-releases: a pre-release only matches a set that
 * names a pre-release of the same major.minor.patch (`>=2.80.0-beta.0` admits `2.80.0-beta.3`, `^2.80` does not).
 */
export function satisfies(version: Version, range: Range): boolean {
  return range.some((set) => {
    if (!set.every((c) => satisfiesComparator(version, c))) return false;
    if (version.prerelease.length === 0) return true;
    return set.some(
      (c) =>
        c.version.prerelease.length > 0 &&
        c.version.prerelease[0] !== 0 &&
        c.version.major === version.major &&
        c.version.minor === version.minor &&
        c.version.patch === version.patch,
    );
  });
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
