import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Options of {@link paceGarbage}. */
export interface GarbagePacerOptions {
  /** Buffer and ArrayBuffer bytes allowed before a collection is started. Default 16 MiB. */
  limitBytes?: number;
  /** Least time between two collections started here, in milliseconds. Default 100. */
  spacingMs?: number;
}

const LOOK_EVERY_MS = 20;

/**
 * Starts a full garbage collection whenever Buffer memory exceeds `limitBytes`, at most every `spacingMs`;
 * returns a function that stops doing so.
 *
 * Why: a streaming run allocates a fresh Buffer for nearly every chunk. Most outlive a young-generation
 * collection while in flight, and V8 frees those only at a full collection, which it starts once external
 * memory has grown by 64 MiB: peak RSS then carries that much dead memory and what the allocator keeps of
 * it. A small old generation (`--max-old-space-size`) also bounds it, but V8 then collects constantly near the
 * cap (measured: +15-25 % CPU for `etch create` at 48 MiB, double at 24) and an input that needs more heap
 * crashes; this never refuses memory. The collection is asynchronous (V8 runs it as a task, with its
 * concurrent marking) and the timer is unref'd, so it never keeps the process alive.
 */
export function paceGarbage(options: GarbagePacerOptions = {}): () => void {
  const limit = options.limitBytes ?? 16 * 1024 * 1024;
  const spacing = options.spacingMs ?? 100;
  // The flag only defines `gc` in contexts created after it is set, hence the new context.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options: { type: 'major'; execution: 'async' }) => void;
  let last = -Infinity;
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last < spacing || process.memoryUsage().arrayBuffers <= limit) return;
    last = now;
    gc({ type: 'major', execution: 'async' });
  }, LOOK_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}
