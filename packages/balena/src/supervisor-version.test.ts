import { describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { appsJsonFormatFor, compareSupervisorVersions, parseSupervisorVersion } from './supervisor-version.js';

describe('supervisor versions', () => {
  it('parses tags with v, build metadata and pre-releases', () => {
    expect(parseSupervisorVersion('v14.11.2')).toMatchObject({
      major: 14,
      minor: 11,
      patch: 2,
      prerelease: [],
      build: '',
    });
    expect(parseSupervisorVersion('12.3.5+rev1')).toMatchObject({ major: 12, minor: 3, patch: 5, build: 'rev1' });
    expect(parseSupervisorVersion(' 7.0.0-beta.2 ')).toMatchObject({ major: 7, prerelease: ['beta', '2'] });
  });

  it('compares by semver precedence, ignoring build metadata', () => {
    expect(compareSupervisorVersions('v14.11.2', '14.2.10')).toBe(1);
    expect(compareSupervisorVersions('12.3.5+rev1', '12.3.5')).toBe(0);
    expect(compareSupervisorVersions('6.6.0', 'v7.0.0')).toBe(-1);
    expect(compareSupervisorVersions('7.0.0-beta', '7.0.0')).toBe(-1);
    expect(compareSupervisorVersions('7.0.0-beta.2', '7.0.0-beta.11')).toBe(-1);
    expect(compareSupervisorVersions('7.0.0-1', '7.0.0-alpha')).toBe(-1);
    expect(compareSupervisorVersions('7.0.0-alpha', '7.0.0-alpha.1')).toBe(-1);
    expect(compareSupervisorVersions('10.0.0', '9.99.99')).toBe(1);
  });

  it('chooses the format at 7.0.0 and 13.0.0', () => {
    expect(appsJsonFormatFor('v6.6.11')).toBe(1);
    expect(appsJsonFormatFor('7.0.0-beta.1')).toBe(1);
    expect(appsJsonFormatFor('7.0.0')).toBe(2);
    expect(appsJsonFormatFor('v12.11.38+rev2')).toBe(2);
    expect(appsJsonFormatFor('13.0.0')).toBe(3);
    expect(appsJsonFormatFor('v14.11.2')).toBe(3);
  });

  it.each([
    '',
    'latest',
    '14',
    '14.1',
    'v14.1.x',
    '014.1.2',
    '14.1.2.3',
    'vv14.1.2',
    // semver: numeric identifiers never have leading zeros, and numbers stay exact
    '7.0.0-01',
    '99999999999999999999.0.0',
  ])('refuses %j instead of guessing', (v) => {
    let thrown: unknown;
    try {
      parseSupervisorVersion(v);
    } catch (err) {
      thrown = err;
    }
    expect(isEtchError(thrown, 'ETCH_USAGE'), `${JSON.stringify(v)}: ${String(thrown)}`).toBe(true);
    expect((thrown as Error).message).toMatch(/Unknown supervisor version.*never guessed/);
  });
});
