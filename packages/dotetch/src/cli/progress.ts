import type { Writable } from 'node:stream';
import type { ApplyProgress } from '@etch/apply';
import type { EtchProgress } from '@etch/core';
import type { PrefetchProgress } from '@etch/docker-store';
import { count, formatBytes, formatDuration, formatSeconds } from './format-bytes.js';
import { setStatusArea } from './status-area.js';

/** How progress is shown: redrawn lines on a terminal, a line per step otherwise, or nothing. */
export type ProgressMode = 'tty' | 'plain' | 'none';

/**
 * What the display draws: `etch create` (base image, layer downloads, layers written, files added) and
 * `etch apply`, plus `sync`, the final flush to disk, which the CLI reports for `create` when its output is a file.
 */
export type DisplayedProgress = EtchProgress | ApplyProgress | PrefetchProgress | { phase: 'sync' } | UploadEvent;

/**
 * A blob `etch copy`, `push` and `build` write: bytes going out while `uploading`, then where it went. A layer
 * being made has no digest until it lands: its line is named by `key` (the digest, or e.g. `files`).
 */
export interface UploadEvent {
  phase: 'upload';
  key: string;
  digest?: string;
  state: 'uploading' | 'uploaded' | 'mounted' | 'existed' | 'skipped';
  bytes: number;
  /** Unknown for a layer being made, until it lands. */
  total?: number;
}

/** How an upload's final state reads on its line. */
const UPLOAD_STATES: Record<UploadEvent['state'], string> = {
  uploading: 'uploading',
  uploaded: 'uploaded',
  mounted: 'mounted',
  existed: 'already there',
  skipped: 'skipped (foreign)',
};

/** An image whose layers the display shows: its name and the digests of its layers, in order. */
export interface NamedImage {
  name: string;
  layers: readonly string[];
}

/** Receives progress events and draws them. */
export interface ProgressDisplay {
  onProgress: (event: DisplayedProgress) => void;
  /** Names the images (known once they are resolved), so each layer's line says which image it belongs to. */
  nameImages(images: readonly NamedImage[]): void;
  /**
   * The partitions' final counts, shown on their lines: those lines count files as they are added, while what
   * went in without a line of its own (the engine store, drawn per layer) counts only here, as in the summary.
   */
  partitionTotals(totals: Readonly<Record<number, { entries: number; bytes: number }>>): void;
  /** Draws the final state and moves below it, so the next line starts clean. */
  finish(): void;
}

/** One line: the base image, a layer (from download to written), a partition's files, the sync. */
interface Item {
  id: string;
  /** The base image's name; for a layer, found through `digest` or `image` when drawn. */
  name?: string;
  digest?: string;
  image?: number;
  state: string;
  /** Whether the state is the last one this line will have. */
  final: boolean;
  bytes?: number;
  total?: number;
  /** Instead of bytes: what a partition received, how big a partition grew. */
  detail?: string;
  /** When the current state began, and the bytes then: the speed is measured within one state. */
  since: number;
  sinceBytes: number;
  /** When the state became final. */
  ended?: number;
  /** Bytes per second of the last state that moved bytes: a line whose bytes moved earlier keeps showing it. */
  rate?: number;
}

const REDRAW_MS = 100;

/** `35 entries, 1.4 KiB`: what a partition received. */
const partitionDetail = (total: { entries: number; bytes: number }) =>
  `${count(total.entries, 'entry', 'entries')}, ${formatBytes(total.bytes)}`;
/** What is still open when the sync begins (or the run ends) is done by then. */
const SETTLED: Record<string, string> = {
  'adding files': 'added',
  'reading back': 'verified',
  'flushing to disk': 'synced',
};
/** The state each state ends (the speed of `written` is that of its `writing`). */
const COMPLETES: Record<string, string> = {
  written: 'writing',
  downloaded: 'downloading',
  unpacked: 'unpacking',
  added: 'adding files',
  verified: 'reading back',
  synced: 'flushing to disk',
  uploaded: 'uploading',
};
const ID_WIDTH = 12;
const MAX_NAME_WIDTH = 32;
const MIN_NAME_WIDTH = 8;

/** Picks the mode from the stream and flags: redrawn lines only when stderr is a terminal. */
export function progressModeFor(stderr: { isTTY?: boolean }, quiet: boolean): ProgressMode {
  if (quiet) return 'none';
  return stderr.isTTY ? 'tty' : 'plain';
}

/** The short ID docker shows for a layer: 12 hex digits of its digest. */
const shortId = (digest: string) => digest.slice(digest.indexOf(':') + 1).slice(0, 12);

/** The text cut to `width` columns (with an ellipsis), so a terminal never wraps it. */
function cut(text: string, width: number | undefined): string {
  if (width === undefined || width <= 0 || text.length <= width) return text;
  return width === 1 ? '…' : `${text.slice(0, width - 1)}…`;
}

/** A name shortened from the left (the end of a path or reference says the most). */
function shorten(name: string, width: number): string {
  return name.length <= width ? name : `…${name.slice(name.length - width + 1)}`;
}

/**
 * Bytes per second of an item's current state, from its start until it ended (or now); undefined when no
 * bytes moved in it (a state that began complete, like a layer copied out of its stage in one go).
 */
function rateOf(item: Item, now: number): number | undefined {
  if (item.bytes === undefined) return undefined;
  const moved = item.bytes - item.sinceBytes;
  // At least a millisecond: a small layer can start and end within one.
  const seconds = Math.max(0.001, ((item.ended ?? now) - item.since) / 1000);
  return moved > 0 ? moved / seconds : undefined;
}

/** The line for each event, and the lines in the order they appeared. */
class ProgressModel {
  readonly items = new Map<string, Item>();
  readonly order: string[] = [];
  private readonly imageNames: string[] = [];
  private readonly layerImages = new Map<string, string>();

  constructor(private readonly now: () => number) {}

  nameImages(images: readonly NamedImage[]): void {
    images.forEach((image, i) => {
      this.imageNames[i] = image.name;
      for (const digest of image.layers) if (!this.layerImages.has(digest)) this.layerImages.set(digest, image.name);
    });
  }

  partitionTotals(totals: Readonly<Record<number, { entries: number; bytes: number }>>): void {
    for (const [partition, total] of Object.entries(totals)) {
      const item = this.items.get(`partition:${partition}`);
      if (item !== undefined) item.detail = partitionDetail(total);
    }
  }

  imageOf(item: Item): string | undefined {
    if (item.digest !== undefined) {
      const byDigest = this.layerImages.get(item.digest);
      if (byDigest !== undefined) return byDigest;
    }
    return item.image !== undefined ? (this.imageNames[item.image] ?? `image ${item.image + 1}`) : undefined;
  }

  private set(
    key: string,
    next: Omit<Item, 'since' | 'sinceBytes' | 'ended'>,
  ): { item: Item; isNew: boolean; changed: boolean } {
    const previous = this.items.get(key);
    const now = this.now();
    const changed = previous === undefined || previous.state !== next.state;
    // The end of a state keeps its start, so a finished line shows the speed and time of that state.
    const continues = previous !== undefined && (!changed || COMPLETES[next.state] === previous.state);
    const item: Item = {
      ...next,
      since: continues ? previous.since : now,
      sinceBytes: continues ? previous.sinceBytes : (next.bytes ?? 0),
      ...(next.final ? { ended: previous?.ended ?? now } : {}),
    };
    const rate = previous === undefined ? undefined : (rateOf(previous, now) ?? previous.rate);
    if (rate !== undefined) item.rate = rate;
    if (previous === undefined) this.order.push(key);
    this.items.set(key, item);
    return { item, isNew: previous === undefined, changed };
  }

  /** Applies an event; returns what changed, or undefined when nothing did. */
  apply(event: DisplayedProgress): { key: string; item: Item; isNew: boolean; changed: boolean } | undefined {
    switch (event.phase) {
      case 'base-image': {
        const done = event.bytes >= event.total;
        return {
          key: 'base',
          ...this.set('base', {
            id: 'base image',
            name: event.name,
            state: done ? 'written' : 'writing',
            final: done,
            bytes: event.bytes,
            total: event.total,
          }),
        };
      }
      case 'download': {
        const key = `layer:${event.digest}`;
        const existing = this.items.get(key);
        // A layer already being unpacked or written has moved past its download.
        if (existing !== undefined && !['downloading', 'downloaded'].includes(existing.state)) return undefined;
        return {
          key,
          ...this.set(key, {
            id: shortId(event.digest),
            digest: event.digest,
            state: event.bytes >= event.total ? 'downloaded' : 'downloading',
            final: false,
            bytes: event.bytes,
            total: event.total,
          }),
        };
      }
      case 'layer': {
        const key = `layer:${event.digest}`;
        const existing = this.items.get(key);
        // A layer shared with an earlier image keeps the line of its first write.
        if (event.state === 'shared' && existing !== undefined) return undefined;
        const state =
          event.state === 'converting'
            ? event.bytes >= event.total
              ? 'unpacked'
              : 'unpacking'
            : event.state === 'cached'
              ? 'unpacked (cached)'
              : event.state === 'writing'
                ? 'writing'
                : event.state === 'done'
                  ? 'written'
                  : 'already written';
        return {
          key,
          ...this.set(key, {
            id: shortId(event.digest),
            digest: event.digest,
            image: existing?.image ?? event.image,
            state,
            final: event.state === 'done' || event.state === 'shared',
            bytes: event.bytes,
            total: event.total,
          }),
        };
      }
      case 'inject': {
        const key = `partition:${event.partition}`;
        return {
          key,
          ...this.set(key, {
            id: `partition ${event.partition}`,
            state: 'adding files',
            final: false,
            detail: partitionDetail(event),
          }),
        };
      }
      case 'grow': {
        const key = `grow:${event.partition}`;
        return {
          key,
          ...this.set(key, {
            id: `partition ${event.partition}`,
            state: 'grown',
            final: true,
            detail: `to ${formatBytes(event.size)}`,
          }),
        };
      }
      case 'verify':
        return { key: 'verify', ...this.set('verify', { id: 'verify', state: 'reading back', final: false }) };
      case 'sync':
        this.settle();
        return { key: 'sync', ...this.set('sync', { id: 'sync', state: 'flushing to disk', final: false }) };
      case 'upload': {
        const key = `upload:${event.key}`;
        if (this.items.get(key)?.final) return undefined;
        return {
          key,
          ...this.set(key, {
            id: event.digest !== undefined ? shortId(event.digest) : event.key,
            ...(event.digest !== undefined ? { digest: event.digest } : {}),
            state: UPLOAD_STATES[event.state],
            final: event.state !== 'uploading',
            bytes: event.bytes,
            ...(event.total !== undefined ? { total: event.total } : {}),
          }),
        };
      }
      case 'finalize':
        return undefined;
    }
  }

  /** Marks what was still open as done: every entry has been written by the time of the sync. */
  settle(): void {
    for (const [key, item] of this.items) {
      const end = SETTLED[item.state];
      if (end !== undefined) this.set(key, { ...item, state: end, final: true });
    }
  }

  /** The columns of one line: id, image or file name, state, amount, speed, time left. */
  columns(item: Item): [id: string, name: string, state: string, amount: string, speed: string, eta: string] {
    const now = this.now();
    const name = item.name ?? this.imageOf(item) ?? '';
    let amount = item.detail ?? '';
    let speed = '';
    let eta = '';
    if (item.bytes !== undefined && item.total !== undefined) {
      amount =
        item.final || item.bytes >= item.total
          ? formatBytes(item.total)
          : `${formatBytes(item.bytes)}/${formatBytes(item.total)}`;
      const rate = rateOf(item, now) ?? item.rate;
      if (rate !== undefined) {
        speed = `${formatBytes(rate)}/s`;
        if (!item.final && item.bytes < item.total) eta = `ETA ${formatDuration((item.total - item.bytes) / rate)}`;
      }
    } else if (item.bytes !== undefined) {
      // A layer being made: its size is known only at its end.
      amount = formatBytes(item.bytes);
      const rate = rateOf(item, now) ?? item.rate;
      if (rate !== undefined) speed = `${formatBytes(rate)}/s`;
    } else if (item.state === 'flushing to disk' || item.state === 'synced') {
      amount = formatSeconds((item.ended ?? now) - item.since);
    }
    return [item.id, name, item.state, amount, speed, eta];
  }
}

/**
 * Lines as a table: the same columns aligned across every line drawn together. On a narrow terminal the
 * name column gives up room first (down to {@link MIN_NAME_WIDTH}), so state and bytes stay in view.
 */
function table(rows: ReturnType<ProgressModel['columns']>[], width?: number): string[] {
  const stateWidth = Math.max(0, ...rows.map((r) => r[2].length));
  const amountWidth = Math.max(0, ...rows.map((r) => r[3].length));
  const speedWidth = Math.max(0, ...rows.map((r) => r[4].length));
  const etaWidth = Math.max(0, ...rows.map((r) => r[5].length));
  const others = ID_WIDTH + stateWidth + amountWidth + speedWidth + etaWidth + 5 * 2;
  const room = width === undefined ? MAX_NAME_WIDTH : Math.max(MIN_NAME_WIDTH, width - others);
  const nameWidth = Math.min(MAX_NAME_WIDTH, room, Math.max(0, ...rows.map((r) => r[1].length)));
  return rows.map(([id, name, state, amount, speed, eta]) =>
    [
      id.padEnd(ID_WIDTH),
      ...(nameWidth > 0 ? [shorten(name, nameWidth).padEnd(nameWidth)] : []),
      state.padEnd(stateWidth),
      amount.padStart(amountWidth),
      speed.padStart(speedWidth),
      eta,
    ]
      .join('  ')
      .trimEnd(),
  );
}

/** The line plain mode prints when an item reaches a state worth a line; undefined for none. */
function plainLine(model: ProgressModel, item: Item): string | undefined {
  const image = model.imageOf(item);
  const of = image !== undefined ? ` of ${image}` : '';
  const layer = `layer ${item.digest !== undefined ? item.digest.slice(0, item.digest.indexOf(':') + 13) : item.id}${of}`;
  const size = item.total !== undefined ? formatBytes(item.total) : '';
  switch (item.state) {
    case 'writing':
      return item.id === 'base image'
        ? `etch: writing base image ${item.name ?? ''} (${size})`
        : `etch: writing ${layer} (${size})`;
    case 'downloaded':
      return `etch: downloaded ${layer} (${size})`;
    case 'unpacking':
      return `etch: unpacking ${layer} (${size}) while the base image is written`;
    case 'already written':
      return `etch: ${layer} is already written (shared with an earlier image)`;
    case 'adding files':
      return `etch: adding files to ${item.id}`;
    case 'grown':
      return `etch: grew ${item.id} ${item.detail ?? ''}`;
    case 'reading back':
      return 'etch: verifying what was written';
    case 'flushing to disk':
      return 'etch: syncing to disk';
    case 'uploaded':
    case 'mounted':
    case 'already there':
    case 'skipped (foreign)':
      return item.digest === undefined ? undefined : `etch: ${item.state} ${item.digest} (${size})`;
    default:
      return undefined;
  }
}

/**
 * Draws progress on stderr. On a terminal, one line per thing in progress — the base image, each layer
 * with its image (downloading, unpacking, writing, written), each partition's files, the final sync — with
 * bytes, speed and time left, cut to the terminal's width and redrawn in place at most every 100 ms.
 * Elsewhere one line per step.
 */
export function createProgressDisplay(
  stderr: Writable & { columns?: number; rows?: number },
  mode: ProgressMode,
  now: () => number = Date.now,
): ProgressDisplay {
  if (mode === 'none')
    return { onProgress: () => {}, nameImages: () => {}, partitionTotals: () => {}, finish: () => {} };
  const model = new ProgressModel(now);
  if (mode === 'plain') {
    const printed = new Set<string>();
    return {
      onProgress(event) {
        const change = model.apply(event);
        if (change === undefined || !change.changed) return;
        const line = plainLine(model, change.item);
        if (line !== undefined && !printed.has(`${change.key}:${change.item.state}`)) {
          printed.add(`${change.key}:${change.item.state}`);
          stderr.write(`${line}\n`);
        }
      },
      nameImages: (images) => model.nameImages(images),
      partitionTotals: () => {},
      finish() {},
    };
  }

  // Lines from `top` on are redrawn; those above it scrolled out of the redrawn region and stay as drawn.
  let top = 0;
  let drawn = 0;
  let lastDraw = Number.NEGATIVE_INFINITY;
  const draw = () => {
    const live = Math.max(3, (stderr.rows ?? 24) - 2);
    const keys = model.order.slice(top);
    // One column short of the width: the cursor never sits in the last column, where terminals differ.
    const width = stderr.columns !== undefined ? stderr.columns - 1 : undefined;
    const lines = table(
      keys.map((key) => model.columns(model.items.get(key) as Item)),
      width,
    );
    let out = drawn > 1 ? `\r\x1b[${drawn - 1}A` : '\r';
    out += lines.map((line) => `\x1b[2K${cut(line, width)}`).join('\n');
    stderr.write(out);
    if (lines.length > live) {
      top = model.order.length - live;
      drawn = live;
    } else {
      drawn = lines.length;
    }
    lastDraw = now();
  };
  const area = {
    clear() {
      if (drawn === 0) return;
      // To the first redrawn line, then erase to the end of the screen.
      stderr.write(`${drawn > 1 ? `\r\x1b[${drawn - 1}A` : '\r'}\x1b[J`);
      drawn = 0;
    },
    redraw: () => {
      if (model.order.length > top) draw();
    },
  };
  // Registered again after each finish(): a command that shows several runs (build's targets) has log lines
  // written above its live lines every time, not only during the first.
  let registered = false;
  const register = () => {
    if (registered) return;
    setStatusArea(stderr, area);
    registered = true;
  };
  register();
  return {
    onProgress(event) {
      const change = model.apply(event);
      if (change === undefined) return;
      register();
      if (change.isNew || change.changed || now() - lastDraw >= REDRAW_MS) draw();
    },
    nameImages: (images) => model.nameImages(images),
    partitionTotals: (totals) => model.partitionTotals(totals),
    finish() {
      setStatusArea(stderr, undefined);
      registered = false;
      if (model.order.length > 0) {
        model.settle();
        draw();
        stderr.write('\n');
      }
      model.items.clear();
      model.order.length = 0;
      top = 0;
      drawn = 0;
    },
  };
}
