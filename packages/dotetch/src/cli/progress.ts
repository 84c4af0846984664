import type { Writable } from 'node:stream';
import type { ApplyProgress } from '@etch/apply';
import type { EtchProgress } from '@etch/core';
import { formatBytes } from './format-bytes.js';

/** How progress is shown: a redrawn bar on a terminal, a line per phase otherwise, or nothing. */
export type ProgressMode = 'tty' | 'plain' | 'none';

/** What the display draws: progress of `etch create` (writing a .etch) and of `etch apply` (flashing one). */
export type DisplayedProgress = EtchProgress | ApplyProgress;

/** Receives progress events and draws them. */
export interface ProgressDisplay {
  onProgress: (event: DisplayedProgress) => void;
  /** Clears the bar, so the next line starts clean. */
  finish(): void;
}

const REDRAW_MS = 100;
const BAR_WIDTH = 28;

function bar(fraction: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
}

/** Picks the mode from the stream and flags: bars only when stderr is a terminal. */
export function progressModeFor(stderr: { isTTY?: boolean }, quiet: boolean): ProgressMode {
  if (quiet) return 'none';
  return stderr.isTTY ? 'tty' : 'plain';
}

export function createProgressDisplay(stderr: Writable, mode: ProgressMode, now: () => number = Date.now): ProgressDisplay {
  if (mode === 'none') return { onProgress: () => {}, finish: () => {} };
  let phaseKey = '';
  let lastDraw = 0;
  let drawn = false;
  const started = now();

  function describe(event: DisplayedProgress): string {
    switch (event.phase) {
      case 'base-image': {
        const seconds = Math.max(0.001, (now() - started) / 1000);
        const rate = `${formatBytes(event.bytes / seconds)}/s`;
        const percent = event.total === 0 ? 100 : Math.floor((event.bytes / event.total) * 100);
        return `base image ${bar(event.total === 0 ? 1 : event.bytes / event.total)} ${percent}% ${formatBytes(event.bytes)}/${formatBytes(event.total)} ${rate}`;
      }
      case 'inject':
        return `partition ${event.partition}: ${event.entries} entries, ${formatBytes(event.bytes)}`;
      case 'layer': {
        const name = `layer ${event.digest.slice(7, 19)}`;
        if (event.state === 'shared') return `${name} already written (shared with an earlier image)`;
        const percent = event.total === 0 ? 100 : Math.floor((event.bytes / event.total) * 100);
        return `${name} ${bar(event.total === 0 ? 1 : event.bytes / event.total)} ${percent}% ${formatBytes(event.bytes)}/${formatBytes(event.total)}${event.state === 'done' ? ' done' : ''}`;
      }
      case 'finalize':
        return `done: ${formatBytes(event.bytesWritten)} written`;
      case 'grow':
        return `partition ${event.partition} grown to ${formatBytes(event.size)}`;
      case 'verify':
        return 'verifying what was written';
    }
  }

  function key(event: DisplayedProgress): string {
    if (event.phase === 'inject') return `inject:${event.partition}`;
    // One line per layer: each gets its own bar, kept on screen when the next one starts.
    if (event.phase === 'layer') return `layer:${event.image}:${event.layer}`;
    if (event.phase === 'grow') return `grow:${event.partition}:${event.size}`;
    return event.phase;
  }

  return {
    onProgress(event) {
      const changed = key(event) !== phaseKey;
      if (mode === 'plain') {
        if (!changed) return;
        phaseKey = key(event);
        if (event.phase === 'base-image') stderr.write(`etch: writing base image ${event.name} (${formatBytes(event.total)})\n`);
        else if (event.phase === 'inject') stderr.write(`etch: injecting into partition ${event.partition}\n`);
        else if (event.phase === 'layer') {
          const what = event.state === 'shared' ? 'already written' : `${formatBytes(event.total)} compressed`;
          stderr.write(`etch: image ${event.image + 1} layer ${event.layer + 1} ${event.digest.slice(0, 19)} (${what})\n`);
        } else if (event.phase === 'grow') stderr.write(`etch: grew partition ${event.partition} to ${formatBytes(event.size)}\n`);
        else if (event.phase === 'verify') stderr.write('etch: verifying what was written\n');
        return;
      }
      const time = now();
      const complete = (event.phase === 'base-image' && event.bytes === event.total) || (event.phase === 'layer' && event.state !== 'writing');
      if (!changed && !complete && time - lastDraw < REDRAW_MS) return;
      if (changed && drawn) stderr.write('\n');
      phaseKey = key(event);
      lastDraw = time;
      drawn = true;
      stderr.write(`\r\x1b[2K${describe(event)}`);
    },
    finish() {
      if (mode === 'tty' && drawn) stderr.write('\n');
      drawn = false;
    },
  };
}
