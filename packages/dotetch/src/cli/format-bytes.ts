const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(?:([KMGTP])(i?B)?|(B))?$/i;
const POWERS: Record<string, number> = { K: 1, M: 2, G: 3, T: 4, P: 5 };

/**
 * Parses a size as people type it: `8G`, `512M`, `1.5GiB`, `4096`. As in coreutils, `K`/`M`/`G`/`T`/`P` and
 * `KiB`/`MiB`/… are powers of 1024 and `KB`/`MB`/… powers of 1000; a bare number is bytes.
 * @returns whole bytes (rounded down), or `undefined` when `text` is not a size.
 */
export function parseBytes(text: string): number | undefined {
  const match = SIZE.exec(text.trim());
  if (!match) return undefined;
  const [, number, unit, suffix] = match;
  const power = unit === undefined ? 0 : (POWERS[unit.toUpperCase()] as number);
  const base = suffix !== undefined && suffix.toUpperCase() === 'B' ? 1000 : 1024;
  const bytes = Math.floor(Number(number) * base ** power);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** `1 entry`, `35 entries`. */
export function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** 1234 → "1.2 s". */
export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A remaining time as people read it: `8s`, `3m05s`, `2h10m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
