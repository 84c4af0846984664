/**
 * Tar numeric fields: octal text, or GNU base-256 when the high bit of the first byte is set.
 */
export function decodeNumber(field: Buffer): number {
  const first = field[0] ?? 0;
  if (first & 0x80) return decodeBase256(field);
  let text = '';
  for (const byte of field) {
    if (byte === 0) break;
    text += String.fromCharCode(byte);
  }
  text = text.trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return Number.NaN;
  return Number.parseInt(text, 8);
}

function decodeBase256(field: Buffer): number {
  const negative = (field[0] ?? 0) === 0xff;
  let value = 0;
  for (let i = 0; i < field.length; i++) {
    let byte = field[i] ?? 0;
    if (i === 0) byte &= 0x7f;
    if (negative) byte ^= 0xff;
    value = value * 256 + byte;
  }
  return negative ? -(value + 1) : value;
}

/** Writes `value` as zero-padded octal followed by NUL into `field` (ustar style). */
export function encodeOctal(value: number, field: Buffer): void {
  const digits = Math.trunc(value)
    .toString(8)
    .padStart(field.length - 1, '0');
  if (digits.length > field.length - 1)
    throw new RangeError(`${value} does not fit an octal field of ${field.length} bytes`);
  field.write(digits, 0, 'ascii');
  field[field.length - 1] = 0;
}

/** The largest value an octal field of `length` bytes holds (one byte is the terminator). */
export function maxOctal(length: number): number {
  return 8 ** (length - 1) - 1;
}
