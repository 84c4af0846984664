import { EtchError } from './errors.js';

/**
 * The time a writer gives the entries it makes itself (the engine store's own files and directories, a
 * base image or `apps.json` without a time of their own) when `SOURCE_DATE_EPOCH` is not set:
 * 1980-01-01T00:00:00Z, the earliest time every filesystem a `.etch` writes into can hold (FAT's epoch),
 * so the same inputs give the same bytes.
 */
export const DEFAULT_ENTRY_TIME: Date = new Date(Date.UTC(1980, 0, 1));

/**
 * The time for entries a writer creates: `SOURCE_DATE_EPOCH` (whole seconds since the epoch, the
 * reproducible-builds convention) when given, else {@link DEFAULT_ENTRY_TIME}.
 *
 * @param sourceDateEpoch the variable's value, e.g. `process.env.SOURCE_DATE_EPOCH`.
 * @throws EtchError `ETCH_USAGE` when it is set but not a non-negative whole number.
 * @example
 * ```ts
 * entryTime(process.env.SOURCE_DATE_EPOCH) // Date
 * ```
 */
export function entryTime(sourceDateEpoch: string | undefined): Date {
  if (sourceDateEpoch === undefined || sourceDateEpoch.trim() === '') return new Date(DEFAULT_ENTRY_TIME);
  const text = sourceDateEpoch.trim();
  const seconds = /^[0-9]{1,15}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(seconds) || seconds * 1000 > 8.64e15) {
    throw new EtchError(
      'ETCH_USAGE',
      `SOURCE_DATE_EPOCH must be whole seconds since 1970-01-01 (like 1700000000), found ${JSON.stringify(text.slice(0, 32))}.`,
    );
  }
  return new Date(seconds * 1000);
}
