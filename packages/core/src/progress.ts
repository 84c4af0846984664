import { Transform, type TransformCallback } from 'node:stream';
import type { LayerProgress } from '@etch/docker-store';

/** Progress of {@link createEtch}, reported as bytes move. */
export type EtchProgress =
  | { phase: 'base-image'; name: string; bytes: number; total: number }
  | { phase: 'inject'; partition: number; path: string; entries: number; bytes: number }
  | LayerProgress
  | { phase: 'finalize'; bytesWritten: number };

/** Receives progress events; called often, so keep it cheap (the CLI throttles its redraws). */
export type ProgressListener = (event: EtchProgress) => void;

/** A pass-through that reports the running byte count. */
export class ByteCounter extends Transform {
  bytes = 0;
  constructor(private readonly onBytes: (total: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes(this.bytes);
    callback(null, chunk);
  }
}
