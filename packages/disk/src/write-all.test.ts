import type { FileHandle } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { writeAll } from './write-all.js';

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
