import { describe, expect, it } from 'vitest';
import { isEtchError } from './errors.js';
import {
  VERSION_1_0,
  assertSupportedVersion,
  formatVersion,
  isNewerMinor,
  isVersionEntryName,
  parseVersion,
} from './version.js';

describe('VERSION', () => {
  it('writes "1.2" (this implementation) or "1.0", with no newline', () => {
    expect(formatVersion()).toBe('1.2');
    expect(formatVersion(VERSION_1_0)).toBe('1.0');
  });

  it.each([
    ['1.0', 1, 0],
    ['1:0', 1, 0],
    ['1.3\n', 1, 3],
    [' 2.10 ', 2, 10],
  ])('parses %j', (text, major, minor) => {
    expect(parseVersion(text)).toEqual({ major, minor });
  });

  it.each(['', '1', '1.0.0', 'v1.0', '01.0', '1.-1', 'abc', '1,0'])('refuses %j with ETCH_BAD_VERSION', (text) => {
    expect(() => parseVersion(text)).toThrow(expect.objectContaining({ code: 'ETCH_BAD_VERSION' }));
  });

  it('accepts the same major with a newer minor and flags it', () => {
    expect(() => assertSupportedVersion({ major: 1, minor: 7 })).not.toThrow();
    expect(isNewerMinor({ major: 1, minor: 7 })).toBe(true);
    expect(isNewerMinor({ major: 1, minor: 0 })).toBe(false);
  });

  it('refuses another major with ETCH_UNSUPPORTED_VERSION', () => {
    try {
      assertSupportedVersion({ major: 2, minor: 0 });
      expect.unreachable();
    } catch (err) {
      expect(isEtchError(err, 'ETCH_UNSUPPORTED_VERSION')).toBe(true);
      expect((err as Error).message).toContain('2.0');
    }
  });

  it('accepts VERSION and the legacy /VERSION name only', () => {
    expect(isVersionEntryName('VERSION')).toBe(true);
    expect(isVersionEntryName('/VERSION')).toBe(true);
    expect(isVersionEntryName('./VERSION')).toBe(false);
    expect(isVersionEntryName('version')).toBe(false);
  });
});
