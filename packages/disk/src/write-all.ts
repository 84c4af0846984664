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

/**
 * Writes all of `chunks`, in order, in as few `writev` calls as the kernel takes them: at `position`, or at
 * the handle's position without one. A short write (a signal, a disk on the way to ENOSPC) leaves the rest
 * for the next call.
 * @returns the bytes written, the chunks' total length.
 */
export async function writevAll(handle: FileHandle, chunks: readonly Uint8Array[], position?: number): Promise<number> {
  let rest = [...chunks];
  let written = 0;
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest, position === undefined ? undefined : position + written);
    if (bytesWritten === 0) throw new Error('the file accepted no more bytes');
    written += bytesWritten;
    let skip = bytesWritten;
    while (rest.length > 0 && skip >= (rest[0] as Uint8Array).length) skip -= (rest.shift() as Uint8Array).length;
    if (rest.length > 0 && skip > 0) rest = [(rest[0] as Uint8Array).subarray(skip), ...rest.slice(1)];
  }
  return written;
}
