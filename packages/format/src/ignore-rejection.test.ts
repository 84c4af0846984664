import { describe, expect, it } from 'vitest';
import { ignoreRejection } from './ignore-rejection.js';

describe('ignoreRejection', () => {
  it('keeps a rejection from reaching unhandledRejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      void ignoreRejection(Promise.reject(new Error('dropped on purpose')), 'test');
      // Unhandled rejections are reported after the microtask queue drains; two macrotask turns are enough.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled, 'rejections reported as unhandled').toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('leaves the promise itself rejecting for whoever still awaits it', async () => {
    const failing = Promise.reject(new Error('still visible'));
    void ignoreRejection(failing, 'test');
    await expect(failing).rejects.toThrow('still visible');
  });
});
