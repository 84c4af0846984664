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
  it('agrees with a bit-at-a-time reference for lengths around every path (short, 8-byte steps, tails, chunks)', () => {
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 2654435761) >>> 24));
    for (const length of [0, 1, 7, 8, 9, 63, 64, 65, 1023, 114_687, 114_688, 114_689, 300_000]) {
      const slice = data.subarray(0, length);
      expect(new Crc64().update(slice).digest().toString('hex'), `CRC-64 of ${length} bytes`).toBe(reference(slice));
    }
  });
  it('of nothing is zero', () => {
    expect(new Crc64().digest().toString('hex')).toBe('0000000000000000');
  });
});

/** CRC-64/GO-ISO one bit at a time, straight from the definition. */
function reference(data: Uint8Array): string {
  let crc = 0xffffffffffffffffn;
  for (const byte of data) {
    crc ^= BigInt(byte);
    for (let bit = 0; bit < 8; bit++) crc = crc & 1n ? (crc >> 1n) ^ 0xd800000000000000n : crc >> 1n;
  }
  return (crc ^ 0xffffffffffffffffn).toString(16).padStart(16, '0');
}
