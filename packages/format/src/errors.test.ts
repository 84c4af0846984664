import { describe, expect, it } from 'vitest';
import { EtchError, abortError, isEtchError, throwIfAborted, toEtchError, untilAborted } from './errors.js';

describe('EtchError', () => {
  it('carries a code, details and the cause', () => {
    const cause = new Error('low level');
    const err = new EtchError('ETCH_IO', 'Could not read x.', { cause, details: { path: 'x' } });
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('ETCH_IO');
    expect(err.cause).toBe(cause);
    expect(err.details.path).toBe('x');
    expect(isEtchError(err)).toBe(true);
    expect(isEtchError(err, 'ETCH_IO')).toBe(true);
    expect(isEtchError(err, 'ETCH_BAD_ENTRY')).toBe(false);
    expect(isEtchError(new Error('x'))).toBe(false);
    expect(isEtchError({ code: 'ETCH_IO' })).toBe(false);
  });

  it('maps an aborted signal to ETCH_ABORTED, keeping the reason', () => {
    const controller = new AbortController();
    controller.abort(new Error('user pressed ctrl-c'));
    expect(() => throwIfAborted(controller.signal)).toThrow(expect.objectContaining({ code: 'ETCH_ABORTED' }));
    expect((abortError(controller.signal).cause as Error).message).toBe('user pressed ctrl-c');
    expect(() => throwIfAborted(new AbortController().signal)).not.toThrow();
  });

  it('toEtchError passes EtchErrors through, maps aborts, and wraps the rest with the cause chained', () => {
    const own = new EtchError('ETCH_BAD_ENTRY', 'bad');
    expect(toEtchError(own, { code: 'ETCH_IO' }), 'an EtchError must pass through unchanged').toBe(own);

    const controller = new AbortController();
    controller.abort();
    expect(toEtchError(new Error('EPIPE'), { signal: controller.signal }).code, 'code after abort').toBe(
      'ETCH_ABORTED',
    );

    const cause = Object.assign(new Error('unexpected end of file'), { code: 'Z_BUF_ERROR' });
    const wrapped = toEtchError(cause, {
      code: 'ETCH_BAD_ARCHIVE',
      message: (m) => `Reading the .etch failed: ${m}`,
      details: { path: 'x.etch' },
    });
    expect(wrapped.code, 'code').toBe('ETCH_BAD_ARCHIVE');
    expect(wrapped.message, 'message').toBe('Reading the .etch failed: unexpected end of file');
    expect(wrapped.cause, 'cause').toBe(cause);
    expect(wrapped.details.path, 'details.path').toBe('x.etch');
    expect(toEtchError('plain string').code, 'default code').toBe('ETCH_IO');
  });
});

describe('untilAborted', () => {
  it('settles as the promise does while the signal stays quiet', async () => {
    await expect(untilAborted(Promise.resolve(7), new AbortController().signal)).resolves.toBe(7);
    await expect(untilAborted(Promise.reject(new Error('boom')), undefined)).rejects.toThrow('boom');
  });
  it('rejects with ETCH_ABORTED as soon as the signal fires, leaving the shared work running', async () => {
    const controller = new AbortController();
    let finish!: (value: string) => void;
    const work = new Promise<string>((resolve) => (finish = resolve));
    const waiting = untilAborted(work, controller.signal);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ETCH_ABORTED' });
    finish('done');
    await expect(work).resolves.toBe('done');
  });
  it('rejects at once for a signal already aborted', async () => {
    await expect(untilAborted(new Promise(() => {}), AbortSignal.abort())).rejects.toMatchObject({
      code: 'ETCH_ABORTED',
    });
  });
});
