import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** Runs a full garbage collection, in a process not started with `--expose-gc`. */
export function fullGc(): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    // The flag only exposes `gc` in contexts created after it is set.
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * Bytes the process still references after a full collection: the V8 heap in use plus Buffer and ArrayBuffer
 * memory. What streaming code holds, unlike RSS, which also counts dead buffers not yet collected: how many
 * depends on the V8 version and the machine's load (Node 24 collects them later than Node 22).
 */
export function liveMemory(): number {
  fullGc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}
