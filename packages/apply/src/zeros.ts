const ZEROS = Buffer.alloc(1024 * 1024);

/** Whether every byte of `chunk` is zero (compared a MiB at a time against a shared zero buffer). */
export function isZero(chunk: Uint8Array): boolean {
  for (let at = 0; at < chunk.length; at += ZEROS.length) {
    const piece = chunk.subarray(at, Math.min(chunk.length, at + ZEROS.length));
    if (Buffer.compare(piece, ZEROS.subarray(0, piece.length)) !== 0) return false;
  }
  return true;
}
