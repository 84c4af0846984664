import { describe, expect, it } from 'vitest';
import { Crc64 } from './crc64.js';

describe('Crc64 (Go hash/crc64 with the ISO table)', () => {
  it('matches the standard check value', () => {
    // CRC-64/GO-ISO of "123456789" is 0xb90956c775a41001.
    expect(new Crc64().update(Buffer.from('123456789')).digest().toString('hex')).toBe('b90956c775a41001');
  });
  it('is the same in one piece or many', () => {
    const data = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 31) & 0xff));
    const whole = new Crc64().update(data).digest();
    const parts = new Crc64();
    for (let i = 0; i < data.length; i += 777) parts.update(data.subarray(i, i + 777));
    expect(parts.digest()).toEqual(whole);
  });
  it('of nothing is zero', () => {
    expect(new Crc64().digest().toString('hex')).toBe('0000000000000000');
  });
});
