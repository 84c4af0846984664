import type { Writable } from 'node:stream';
import type { ApplyProgress } from '@etch/apply';
import type { EtchProgress } from '@etch/core';
import type { PrefetchProgress } from '@etch/docker-store';
import { formatBytes } from './format-bytes.js';

/** How progress is shown: redrawn bars on a terminal, a line per step otherwise, or nothing. */
export type ProgressMode = 'tty' | 'plain' | 'none';

/** What the display draws: `etch create` (base image, layer downloads, layers written) and `etch apply`. */
export type DisplayedProgress = EtchProgress | ApplyProgress | PrefetchProgress;

/** Receives progress events and draws them. */
export interface ProgressDisplay {
  onProgress: (event: DisplayedProgress) => void;
  /** Draws the final state and moves below it, so the next line starts clean. */
  finish(): void;
}

const REDRAW_MS = 100;
const BAR_WIDTH = 24;
// On a terminal only the most recent lines are redrawn; older finished ones scroll away as plain text.
const MAX_LIVE_LINES = 12;

function bar(fraction: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
}

function amount(bytes: number, total: number): string {
  const percent = total === 0 ? 100 : Math.floor((bytes / total) * 100);
  return `${bar(total === 0 ? 1 : bytes / total)} ${String(percent).padStart(3)}% ${formatBytes(bytes)}/${formatBytes(total)}`;
}

/** Picks the mode from the stream and flags: bars only when stderr is a terminal. */
export function progressModeFor(stderr: { isTTY?: boolean }, quiet: boolean): ProgressMode {
  if (quiet) return 'none';
  return stderr.isTTY ? 'tty' : 'plain';
}

/** One line per thing in progress: the base image, each layer download and write, each partition. */
function lineKey(event: DisplayedProgress): string {
  switch (event.phase) {
    case 'inject':
      return `inject:${event.partition}`;
    case 'layer':
      return event.state === 'converting' ? `convert:${event.digest}` : `layer:${event.digest}`;
    case 'download':
      return `download:${event.digest}`;
    case 'grow':
      return `grow:${event.partition}:${event.size}`;
    default:
      return event.phase;
  }
}

function describe(event: DisplayedProgress, elapsedSeconds: number): string {
  switch (event.phase) {
    case 'base-image':
      return `base image      ${amount(event.bytes, event.total)} ${formatBytes(event.bytes / Math.max(0.001, elapsedSeconds))}/s`;
    case 'download':
      return `download ${event.digest.slice(7, 19)} ${amount(event.bytes, event.total)}${event.bytes === event.total ? ' done' : ''}`;
    case 'layer': {
      const name = `layer    ${event.digest.slice(7, 19)}`;
      if (event.state === 'shared') return `${name} already written (shared with an earlier image)`;
      if (event.state === 'converting')
        return `convert  ${event.digest.slice(7, 19)} ${amount(event.bytes, event.total)}${event.bytes === event.total ? ' ready' : ''}`;
      return `${name} ${amount(event.bytes, event.total)}${event.state === 'done' ? ' written' : ''}`;
    }
    case 'inject':
      return `partition ${event.partition}: ${event.entries} entries, ${formatBytes(event.bytes)}`;
    case 'finalize':
      return `done: ${formatBytes(event.bytesWritten)} written`;
    case 'grow':
      return `partition ${event.partition} grown to ${formatBytes(event.size)}`;
    case 'verify':
      return 'verifying what was written';
  }
}

/** The one line plain mode prints when something starts (or, for downloads, ends); undefined for nothing. */
function plainLine(event: DisplayedProgress, first: boolean): string | undefined {
  switch (event.phase) {
    case 'base-image':
      return first ? `etch: writing base image ${event.name} (${formatBytes(event.total)})` : undefined;
    case 'download':
      return event.bytes === event.total
        ? `etch: downloaded ${event.digest.slice(0, 19)} (${formatBytes(event.total)})`
        : undefined;
    case 'layer':
      if (!first) return undefined;
      if (event.state === 'converting')
        return `etch: converting image ${event.image + 1} layer ${event.layer + 1} ${event.digest.slice(0, 19)} ahead (${formatBytes(event.total)} compressed)`;
      return `etch: image ${event.image + 1} layer ${event.layer + 1} ${event.digest.slice(0, 19)} (${event.state === 'shared' ? 'already written' : `${formatBytes(event.total)} compressed`})`;
    case 'inject':
      return first ? `etch: injecting into partition ${event.partition}` : undefined;
    case 'grow':
      return first ? `etch: grew partition ${event.partition} to ${formatBytes(event.size)}` : undefined;
    case 'verify':
      return first ? 'etch: verifying what was written' : undefined;
    case 'finalize':
      return undefined;
  }
}

/**
 * Draws progress on stderr. On a terminal every item in flight has its own line (the base image, each layer
 * download, each layer written), redrawn in place at most every 100 ms; elsewhere one line per step.
 */
export function createProgressDisplay(
  stderr: Writable,
  mode: ProgressMode,
  now: () => number = Date.now,
): ProgressDisplay {
  if (mode === 'none') return { onProgress: () => {}, finish: () => {} };
  const started = now();
  if (mode === 'plain') {
    const seen = new Set<string>();
    const printed = new Set<string>();
    return {
      onProgress(event) {
        const key = lineKey(event);
        const line = plainLine(event, !seen.has(key));
        seen.add(key);
        if (line !== undefined && !printed.has(`${key}:${line}`)) {
          printed.add(`${key}:${line}`);
          stderr.write(`${line}\n`);
        }
      },
      finish() {},
    };
  }

  const lines = new Map<string, string>();
  let drawnLines = 0;
  let lastDraw = 0;
  const draw = () => {
    const live = [...lines.values()].slice(-MAX_LIVE_LINES);
    // Move to the first line drawn last time, then rewrite every live line.
    let out = drawnLines > 1 ? `\r\x1b[${drawnLines - 1}A` : '\r';
    out += live.map((line) => `\x1b[2K${line}`).join('\n');
    stderr.write(out);
    drawnLines = live.length;
    lastDraw = now();
  };
  return {
    onProgress(event) {
      const key = lineKey(event);
      const isNew = !lines.has(key);
      lines.set(key, describe(event, (now() - started) / 1000));
      const complete =
        (event.phase === 'base-image' && event.bytes === event.total) ||
        (event.phase === 'layer' &&
          (event.state === 'done' ||
            event.state === 'shared' ||
            (event.state === 'converting' && event.bytes === event.total))) ||
        (event.phase === 'download' && event.bytes === event.total);
      if (isNew || complete || now() - lastDraw >= REDRAW_MS) draw();
    },
    finish() {
      if (lines.size > 0) {
        draw();
        stderr.write('\n');
      }
      lines.clear();
      drawnLines = 0;
    },
  };
}
