import { getHeapStatistics } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { fullGc } from '@etch/test-utils';
import { paceGarbage } from './memory-pacer.js';

const MIB = 1024 * 1024;
const external = () => getHeapStatistics().external_memory;

describe('paceGarbage', () => {
  it('frees dead Buffers that V8 left for later once they pass the limit', async () => {
    const before = external();
    // Survivors of a full collection live in the old generation: left alone, V8 would not free them until
    // external memory grew by 64 MiB more (or, idle, its memory reducer ran 8 s later).
    const promoted = () => {
      const held = Array.from({ length: 48 }, () => Buffer.alloc(MIB, 1));
      fullGc();
      return held.length;
    };
    expect(promoted(), 'buffers allocated, promoted, then dropped').toBe(48);
    const stop = paceGarbage({ limitBytes: before + 16 * MIB, spacingMs: 0 });
    try {
      const deadline = Date.now() + 4_000;
      while (external() > before + 16 * MIB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(
        (external() - before) / MIB,
        'MiB of external memory still held 4 s after 48 MiB of Buffers died',
      ).toBeLessThan(16);
    } finally {
      stop();
    }
  });
});
