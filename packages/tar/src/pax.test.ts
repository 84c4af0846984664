import { describe, expect, it } from 'vitest';
import { decodePaxRecords, encodePaxRecords, xattrsFromPax } from './pax.js';

describe('PAX records', () => {
  it('round-trips binary values byte for byte', () => {
    const capability = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0xff, 0xfe, 0x80, 0x00]);
    const encoded = encodePaxRecords([
      ['path', Buffer.from('ünïcödé/名前')],
      ['SCHILY.xattr.security.capability', capability],
    ]);
    const decoded = decodePaxRecords(encoded, 0);
    expect(decoded.get('path')?.toString()).toBe('ünïcödé/名前');
    expect(decoded.get('SCHILY.xattr.security.capability')).toEqual(capability);
    expect(xattrsFromPax(decoded).get('security.capability')).toEqual(capability);
  });

  it('gets the self-counting length right across digit boundaries', () => {
    // One assertion over every size (1,200 deep Buffer comparisons took seconds): it names the sizes that fail.
    const wrong: { size: number; declared: number; actual: number; roundTrips: boolean }[] = [];
    for (let size = 0; size < 1200; size++) {
      const value = Buffer.alloc(size, 0x61);
      const encoded = encodePaxRecords([['k', value]]);
      const declared = Number(encoded.subarray(0, encoded.indexOf(0x20)).toString());
      const roundTrips = declared === encoded.length && decodePaxRecords(encoded, 0).get('k')?.equals(value) === true;
      if (declared !== encoded.length || !roundTrips)
        wrong.push({ size, declared, actual: encoded.length, roundTrips });
    }
    expect(wrong).toEqual([]);
  });

  it('refuses malformed records', () => {
    expect(() => decodePaxRecords(Buffer.from('99 path=x\n'), 0)).toThrow(
      expect.objectContaining({ code: 'ETCH_BAD_ARCHIVE' }),
    );
    expect(() => decodePaxRecords(Buffer.from('9 =value\n'), 0)).toThrow(
      expect.objectContaining({ code: 'ETCH_BAD_ARCHIVE' }),
    );
  });
});
