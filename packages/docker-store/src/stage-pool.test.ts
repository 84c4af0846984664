import { readdir, readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { StagePool } from './stage-pool.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('etch-stage-pool-');
});
afterAll(async () => {
  await dir?.remove();
});

/** A conversion the test finishes by hand, recording the signal it ran under. */
function gated(): {
  convert: (file: string, signal: AbortSignal) => Promise<string>;
  finish: () => void;
  signals: AbortSignal[];
  started: Promise<void>;
} {
  let open!: () => void;
  let began!: () => void;
  const started = new Promise<void>((resolve) => (began = resolve));
  const gate = new Promise<void>((resolve) => (open = resolve));
  const signals: AbortSignal[] = [];
  return {
    signals,
    started,
    finish: () => open(),
    convert: async (file, signal) => {
      signals.push(signal);
      await writeFile(file, 'converted');
      began();
      await Promise.race([
        gate,
        new Promise<never>((_, reject) => {
          if (signal.aborted) reject(signal.reason as Error);
          signal.addEventListener('abort', () => reject(signal.reason as Error));
        }),
      ]);
      return 'value';
    },
  };
}

describe('StagePool', () => {
  it('converts once for concurrent holders and removes the file when the last releases it', async () => {
    const pool = new StagePool({ dir: dir.join('shared') });
    const conversion = gated();
    const signal = new AbortController().signal;
    const leases = [1, 2, 3].map(async () => pool.acquire('layer', conversion.convert, signal));
    conversion.finish();
    const [a, b, c] = await Promise.all(leases);
    expect(pool.conversions).toBe(1);
    expect(new Set([a?.file, b?.file, c?.file]).size).toBe(1);
    expect(await readFile(a?.file as string, 'utf8')).toBe('converted');
    await a?.release();
    await a?.release(); // idempotent: must not drop another holder's reference
    await b?.release();
    expect(await readdir(dir.join('shared'))).toHaveLength(1);
    await c?.release();
    expect(await readdir(dir.join('shared'))).toEqual([]);
    expect(pool.size).toBe(0);
    await pool.close();
  });

  it('keeps converting when one waiter leaves, and aborts and removes it when all have', async () => {
    const pool = new StagePool({ dir: dir.join('abandoned') });
    const conversion = gated();
    const first = new AbortController();
    const second = new AbortController();
    const a = pool.acquire('layer', conversion.convert, first.signal);
    const b = pool.acquire('layer', conversion.convert, second.signal);
    await conversion.started;
    first.abort(new Error('first left'));
    await expect(a).rejects.toThrow();
    expect(conversion.signals[0]?.aborted, 'the conversion after the first waiter left').toBe(false);
    second.abort(new Error('second left'));
    await expect(b).rejects.toThrow();
    expect(conversion.signals[0]?.aborted, 'the conversion after every waiter left').toBe(true);
    expect(await readdir(dir.join('abandoned'))).toEqual([]);
    // The next request converts afresh.
    const again = gated();
    again.finish();
    const lease = await pool.acquire('layer', again.convert, new AbortController().signal);
    expect(pool.conversions).toBe(2);
    await lease.release();
    await pool.close();
  });

  it('fails every waiter with the conversion error and forgets it', async () => {
    const pool = new StagePool({ dir: dir.join('failing') });
    const signal = new AbortController().signal;
    const failing = async () => {
      throw new Error('corrupt layer');
    };
    const results = await Promise.allSettled([1, 2].map(async () => pool.acquire('layer', failing, signal)));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(pool.conversions).toBe(1);
    expect(pool.size).toBe(0);
    await pool.close();
  });
});
