import type { FileHandle } from 'node:fs/promises';

/**
 * Writes all of `data` at the handle's position. `FileHandle.write` may write less than it was given (a
 * signal, a nearly full disk); a caller that ignored that would lose the rest of the chunk silently.
 * @returns the bytes written, `data.length`.
 */
export async function writeAll(handle: FileHandle, data: Uint8Array | string): Promise<number> {
  let bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let written = 0;
  while (bytes.length > 0) {
    const { bytesWritten } = await handle.write(bytes);
    if (bytesWritten === 0) throw new Error('the file accepted no more bytes');
    written += bytesWritten;
    bytes = bytes.subarray(bytesWritten);
  }
  return written;
}
