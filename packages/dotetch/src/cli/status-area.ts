import type { Writable } from 'node:stream';

/** Lines a terminal display keeps redrawing at the bottom of stderr. */
export interface StatusArea {
  /** Erases the lines, leaving the cursor where the first was. */
  clear(): void;
  /** Draws them again below whatever was written meanwhile. */
  redraw(): void;
}

const areas = new WeakMap<Writable, StatusArea>();

/** Registers (or, with undefined, removes) the redrawn lines of `stderr`. */
export function setStatusArea(stderr: Writable, area: StatusArea | undefined): void {
  if (area === undefined) areas.delete(stderr);
  else areas.set(stderr, area);
}

/**
 * Writes whole lines to stderr above its redrawn progress lines, if any: a warning or a debug line in the
 * middle of them would otherwise be overwritten, or leave copies of them behind.
 */
export function writeAbove(stderr: Writable, text: string): void {
  const area = areas.get(stderr);
  if (area === undefined) {
    stderr.write(text);
    return;
  }
  area.clear();
  stderr.write(text);
  area.redraw();
}
