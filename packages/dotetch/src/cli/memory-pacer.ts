import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Options of {@link paceGarbage}. */
export interface GarbagePacerOptions {
  /**
   * Memory held outside the V8 heap (Buffers, mostly) allowed before a collection is started. Default 20 MiB,
   * about 4 MiB of which is not Buffers (zlib's state, the CRC-64 module's memory).
   */
  limitBytes?: number;
  /** Least time between two collections started here, in milliseconds. Default 100. */
  spacingMs?: number;
}

const LOOK_EVERY_MS = 25;

/**
 * Starts a full garbage collection whenever external (Buffer) memory exceeds `limitBytes`, at most every `spacingMs`;
 * returns a function that stops doing so.
 *
 * Why: a streaming run allocates a fresh Buffer for nearly every chunk. Most outlive a young-generation
 * collection while in flight, and V8 frees those only at a full collection, which it starts once external
 * memory has grown by 64 MiB: peak RSS then carries that much dead memory and what the allocator keeps of
 * it. A small old generation (`--max-old-space-size`) also bounds it, but V8 then collects constantly near the
 * cap (measured: +15-25 % CPU for `etch create` at 48 MiB, double at 24) and an input that needs more heap
 * crashes; this never refuses memory. It is not free either: each is an atomic full collection of a ~20 MiB
 * heap, run as a V8 task (measured on pnpm bench's engine-built images: 30 of them, +1-1.5 s of user CPU on
 * ~10, for 45 MiB lower peak RSS). The timer is unref'd, so it never keeps the process alive.
 */
export function paceGarbage(options: GarbagePacerOptions = {}): () => void {
  const limit = options.limitBytes ?? 20 * 1024 * 1024;
  const spacing = options.spacingMs ?? 100;
  // The flag only defines `gc` in contexts created after it is set, hence the new context.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options: { type: 'major'; execution: 'async' }) => void;
  let last = -Infinity;
  const timer = setInterval(() => {
    const now = performance.now();
    // Not process.memoryUsage(): it also reads RSS from /proc, which showed in profiles at this rate.
    if (now - last < spacing || getHeapStatistics().external_memory <= limit) return;
    last = now;
    gc({ type: 'major', execution: 'async' });
  }, LOOK_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}
