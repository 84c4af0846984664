import { describe, expect, it } from 'vitest';
import { EtchError, abortError, isEtchError, throwIfAborted } from './errors.js';

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
});
