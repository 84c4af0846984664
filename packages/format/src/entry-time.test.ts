import { describe, expect, it } from 'vitest';
import { DEFAULT_ENTRY_TIME, entryTime } from './entry-time.js';
import { isEtchError } from './errors.js';

describe('entryTime', () => {
  it('is SOURCE_DATE_EPOCH when set, else 1980-01-01T00:00:00Z', () => {
    expect(entryTime('1700000000').toISOString()).toBe('2023-11-14T22:13:20.000Z');
    expect(entryTime(' 0 ').getTime()).toBe(0);
    expect(entryTime(undefined).toISOString()).toBe('1980-01-01T00:00:00.000Z');
    expect(entryTime('').getTime()).toBe(DEFAULT_ENTRY_TIME.getTime());
  });

  it('refuses what is not whole seconds', () => {
    for (const bad of ['-1', '1.5', 'now', '1e9', '99999999999999999']) {
      let error: unknown;
      try {
        entryTime(bad);
      } catch (err) {
        error = err;
      }
      expect(isEtchError(error, 'ETCH_USAGE'), `SOURCE_DATE_EPOCH=${bad}`).toBe(true);
    }
  });
});
