import { describe, expect, it } from 'vitest';
import { decodeNumber } from './numbers.js';

/** `text` as a tar field of `length` bytes, NUL-padded, at offset 3 of a larger block. */
function field(text: string | number[], length = 12): { block: Buffer; start: number; length: number } {
  const block = Buffer.alloc(length + 6, 0x41);
  block.fill(0, 3, 3 + length);
  (typeof text === 'string' ? Buffer.from(text, 'latin1') : Buffer.from(text)).copy(block, 3);
  return { block, start: 3, length };
}

const decode = (text: string | number[], length?: number) => {
  const f = field(text, length);
  return decodeNumber(f.block, f.start, f.length);
};

describe('decodeNumber', () => {
  it('reads octal text up to its first NUL, within the field only', () => {
    expect(decode('0000644'), '0000644').toBe(0o644);
    expect(decode('17\u000055'), 'digits after a NUL').toBe(0o17);
    expect(decode('77777777777', 11), 'a field filled to its end').toBe(0o77777777777);
    expect(decode(''), 'an empty field').toBe(0);
  });

  it('allows the white space writers pad with on either side, and nothing else', () => {
    expect(decode('  644 '), 'spaces').toBe(0o644);
    expect(decode('\t644\n'), 'tab and newline').toBe(0o644);
    expect(decode([0x36, 0x34, 0x34, 0xa0]), 'no-break space').toBe(0o644);
    expect(decode('   '), 'only blanks').toBe(0);
    for (const bad of ['6 44', '+644', '-644', '0x1f', '648', '1e3', '64.4', '\u001c644'])
      expect(decode(bad), JSON.stringify(bad)).toBeNaN();
  });

  it('refuses values beyond what a JavaScript number holds exactly', () => {
    expect(decode('377777777777777777', 18), '2^53 - 1').toBe(Number.MAX_SAFE_INTEGER);
    expect(decode('400000000000000000', 18), '2^53').toBeNaN();
  });

  it('reads GNU base-256, positive and negative, and refuses what is not exact', () => {
    expect(decode([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]), '256').toBe(256);
    expect(decode([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), '-1').toBe(-1);
    // GNU tar's pre-1970 mtime: -86400 (one day before the epoch).
    expect(decode([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xae, 0x80]), '-86400').toBe(-86400);
    expect(decode([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), '2^88 - 1').toBeNaN();
  });

  it('reads a whole buffer when given no range', () => {
    expect(decodeNumber(Buffer.from('0000755\0')), 'whole buffer').toBe(0o755);
  });
});
