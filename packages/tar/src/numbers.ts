/**
 * Tar numeric fields: octal text, or GNU base-256 when the high bit of the first byte is set. Anything else
 * (signs, hex, exponents, stray characters, values beyond what a JavaScript number holds exactly) is `NaN`,
 * so a hostile header can never yield a fraction, a negative size or an imprecise offset.
 * Reads the `length` bytes at `start` of `block` in place: a layer of a million entries decodes seven of these
 * per header, and a string or a view per field was the largest share of the garbage of parsing a layer.
 */
export function decodeNumber(block: Uint8Array, start = 0, length = block.length - start): number {
  const first = block[start] ?? 0;
  if (first & 0x80) return decodeBase256(block, start, length);
  let end = start;
  while (end < start + length && block[end] !== 0) end++;
  // The text up to the first NUL, without the white space JavaScript's trim() removes from Latin-1 text.
  let from = start;
  while (from < end && isBlank(block[from] as number)) from++;
  while (end > from && isBlank(block[end - 1] as number)) end--;
  let value = 0;
  for (let i = from; i < end; i++) {
    const digit = (block[i] as number) - 0x30;
    if (digit < 0 || digit > 7) return Number.NaN;
    value = value * 8 + digit;
  }
  return Number.isSafeInteger(value) ? value : Number.NaN;
}

/** Tab, line feed, vertical tab, form feed, carriage return, space and no-break space. */
function isBlank(byte: number): boolean {
  return (byte >= 0x09 && byte <= 0x0d) || byte === 0x20 || byte === 0xa0;
}

function decodeBase256(block: Uint8Array, start: number, length: number): number {
  const negative = (block[start] ?? 0) === 0xff;
  let value = 0;
  for (let i = 0; i < length; i++) {
    // A negative number is the two's complement of the field, its marker bit aside.
    const mask = i === 0 ? 0x7f : 0xff;
    let byte = (block[start + i] ?? 0) & mask;
    if (negative) byte ^= mask;
    value = value * 256 + byte;
    if (value > Number.MAX_SAFE_INTEGER) return Number.NaN;
  }
  return negative ? -(value + 1) : value;
}

/**
 * A PAX decimal record value that must be a non-negative integer (`size`, `uid`, `gid`): digits only, at most
 * `max`. `undefined` when it is anything else (PAX has no signs, fractions, hex or exponents there).
 */
export function parsePaxInteger(text: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (!/^[0-9]{1,16}$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) && value <= max ? value : undefined;
}

/**
 * A PAX time value (`mtime`): optionally negative, decimal seconds with an optional fraction, as POSIX
 * allows. `undefined` for anything else or a magnitude beyond `max` seconds.
 */
export function parsePaxTime(text: string, max = 2 ** 40): number | undefined {
  if (!/^-?[0-9]{1,16}(\.[0-9]{1,12})?$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isFinite(value) && Math.abs(value) <= max ? value : undefined;
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
