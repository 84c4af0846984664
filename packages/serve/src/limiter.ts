import { abortError, throwIfAborted } from '@etch/format';

/** Thrown by {@link BuildLimiter.acquire} when every build slot is busy and the queue is full. */
export class QueueFullError extends Error {
  constructor() {
    super('every build slot is busy and the queue is full');
    this.name = 'QueueFullError';
  }
}

/**
 * At most `concurrency` builds at once, and at most `queue` more waiting their turn in order; beyond that a
 * request is refused at once (the server answers 503 with Retry-After).
 */
export class BuildLimiter {
  private running = 0;
  private readonly waiting: { start: () => void; cancel: (error: unknown) => void }[] = [];

  constructor(
    readonly concurrency: number,
    readonly queue: number,
  ) {}

  /** Builds running now. */
  get active(): number {
    return this.running;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Waits for a slot; resolves to the function that gives it back (call it once). */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    throwIfAborted(signal);
    if (this.running < this.concurrency) {
      this.running += 1;
      return this.releaser();
    }
    if (this.waiting.length >= this.queue) throw new QueueFullError();
    await new Promise<void>((resolve, reject) => {
      const entry = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        cancel: reject,
      };
      const onAbort = () => {
        const at = this.waiting.indexOf(entry);
        if (at !== -1) this.waiting.splice(at, 1);
        reject(abortError(signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next in line.
      if (next) next.start();
      else this.running -= 1;
    };
  }
}
