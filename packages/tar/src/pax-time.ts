import { EtchError } from '@etch/format';

/** A point in time as tar and ext4 keep it: whole seconds since the epoch (floored) and nanoseconds on top. */
export interface ExactTime {
  seconds: number;
  /** 0 to 999 999 999. */
  nanoseconds: number;
}

const PAX_TIME = /^(-?)([0-9]{1,16})(?:\.([0-9]+))?$/;

/**
 * Parses a PAX time record (`mtime`, `atime`): decimal seconds with an optional fraction, possibly negative.
 * Digits beyond nanoseconds are dropped (towards zero, as GNU tar reads them). Parsed as text, not as a
 * float: a double cannot hold 10 digits of seconds and 9 of nanoseconds.
 */
export function parsePaxTime(value: string, offset: number): ExactTime {
  const match = PAX_TIME.exec(value);
  if (match === null) {
    throw new EtchError(
      'ETCH_BAD_ARCHIVE',
      `PAX time record ${JSON.stringify(value.slice(0, 40))} at byte ${offset} is not a number.`,
    );
  }
  const [, sign, whole, fraction = ''] = match;
  const seconds = Number(whole);
  const nanoseconds = Number(fraction.slice(0, 9).padEnd(9, '0'));
  if (sign === '') return { seconds, nanoseconds };
  // Floored seconds and a positive fraction: -1.25 s is -2 s + 0.75 s.
  return nanoseconds === 0
    ? { seconds: -seconds, nanoseconds: 0 }
    : { seconds: -seconds - 1, nanoseconds: 1_000_000_000 - nanoseconds };
}

/** Formats a time as a PAX record value: `1700000000`, `1700000000.5`, `-1.25`; the fraction without trailing zeros. */
export function formatPaxTime(seconds: number, nanoseconds: number): string {
  if (nanoseconds === 0) return String(seconds);
  if (seconds >= 0) return `${seconds}.${String(nanoseconds).padStart(9, '0').replace(/0+$/, '')}`;
  // seconds + ns/1e9 is negative: write its magnitude, -(|seconds| - 1) and 1e9 - ns.
  const magnitude = -seconds - 1;
  return `-${magnitude}.${String(1_000_000_000 - nanoseconds)
    .padStart(9, '0')
    .replace(/0+$/, '')}`;
}
