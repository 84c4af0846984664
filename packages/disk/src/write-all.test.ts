import type { FileHandle } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { writeAll, writevAll } from './write-all.js';

/** A handle that takes at most `most` bytes a call, as a write interrupted by a signal does. */
function shortWritingHandle(most: number): { handle: FileHandle; received: Buffer[] } {
  const received: Buffer[] = [];
  const handle = {
    write: async (bytes: Uint8Array) => {
      const taken = Buffer.from(bytes.subarray(0, most));
      received.push(taken);
      return { bytesWritten: taken.length, buffer: bytes };
    },
  } as unknown as FileHandle;
  return { handle, received };
}

describe('writeAll', () => {
  it('continues short writes until every byte is written, in order', async () => {
    const { handle, received } = shortWritingHandle(3);
    const data = Buffer.from('0123456789abcdef');
    expect(await writeAll(handle, data)).toBe(data.length);
    expect(Buffer.concat(received).toString(), 'bytes the file received').toBe(data.toString());
    expect(received.length, 'write calls').toBe(6);
  });

  it('fails rather than spin when the file takes no more bytes', async () => {
    const { handle } = shortWritingHandle(0);
    await expect(writeAll(handle, 'abc')).rejects.toThrow(/accepted no more bytes/);
  });
});

describe('writevAll', () => {
  /** A handle whose writev takes at most `most` bytes a call, recording where each call wrote. */
  function shortWritevHandle(most: number) {
    const calls: { bytes: Buffer; position: number | undefined }[] = [];
    const handle = {
      writev: async (buffers: Uint8Array[], position?: number) => {
        const taken = Buffer.concat(buffers).subarray(0, most);
        calls.push({ bytes: Buffer.from(taken), position });
        return { bytesWritten: taken.length, buffers };
      },
    } as unknown as FileHandle;
    return { handle, calls };
  }

  it('continues short writes across chunk boundaries, in order, each at the position it reached', async () => {
    const { handle, calls } = shortWritevHandle(5);
    const chunks = [Buffer.from('0123'), Buffer.from('4567'), Buffer.from('89ab')];
    expect(await writevAll(handle, chunks, 100)).toBe(12);
    expect(Buffer.concat(calls.map((c) => c.bytes)).toString(), 'bytes the file received').toBe('0123456789ab');
    expect(
      calls.map((c) => c.position),
      'positions of the calls',
    ).toEqual([100, 105, 110]);
  });

  it('writes at the handle position without one, and fails rather than spin on a file that takes nothing', async () => {
    const { handle, calls } = shortWritevHandle(64);
    await writevAll(handle, [Buffer.from('ab'), Buffer.from('cd')]);
    expect(calls.map((c) => c.position)).toEqual([undefined]);
    await expect(writevAll(shortWritevHandle(0).handle, [Buffer.from('x')])).rejects.toThrow(/accepted no more bytes/);
  });
});
