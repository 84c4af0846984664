import { describe, expect, it } from 'vitest';
import { BuildLimiter, QueueFullError } from './limiter.js';

describe('BuildLimiter', () => {
  it('runs up to its concurrency, queues in order up to the bound, then refuses', async () => {
    const limiter = new BuildLimiter(1, 1);
    const release = await limiter.acquire();
    const order: string[] = [];
    const second = limiter.acquire().then((free) => {
      order.push('second');
      return free;
    });
    expect(limiter.queued).toBe(1);
    await expect(limiter.acquire(), 'a third request with the queue full').rejects.toBeInstanceOf(QueueFullError);
    release();
    const releaseSecond = await second;
    expect(order).toEqual(['second']);
    expect(limiter.active).toBe(1);
    releaseSecond();
    releaseSecond();
    expect(limiter.active, 'after a double release').toBe(0);
  });

  it('drops a queued request whose signal fires, and gives its place to no one', async () => {
    const limiter = new BuildLimiter(1, 2);
    const release = await limiter.acquire();
    const controller = new AbortController();
    const waiting = limiter.acquire(controller.signal);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ETCH_ABORTED' });
    expect(limiter.queued).toBe(0);
    release();
    expect(limiter.active).toBe(0);
  });
});
