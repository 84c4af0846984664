import type { BlobTransfer, CopyProgress } from '@etch/image';
import type { ProgressDisplay } from './progress.js';

/** The `onBlob` and `onTransfer` options of `copyImage` and `Image` that draw on a progress display. */
export interface UploadProgressHandlers {
  onBlob: (blob: CopyProgress) => void;
  onTransfer: (transfer: BlobTransfer) => void;
}

/**
 * Feeds a copy's or a build's blob events to the display of `etch create`: one line per blob, uploading with
 * bytes, speed and time left, then uploaded, mounted or already there. A files layer has no digest while it
 * is made (one at a time, in order): its line is `files` until the blob lands and names it.
 */
export function uploadProgress(display: ProgressDisplay): UploadProgressHandlers {
  let making = false;
  return {
    onTransfer(transfer) {
      if (transfer.digest === undefined) {
        making = true;
        display.onProgress({ phase: 'upload', key: 'files', state: 'uploading', bytes: transfer.bytes });
        return;
      }
      display.onProgress({
        phase: 'upload',
        key: transfer.digest,
        digest: transfer.digest,
        state: 'uploading',
        bytes: transfer.bytes,
        ...(transfer.total !== undefined ? { total: transfer.total } : {}),
      });
    },
    onBlob(blob) {
      // The first blob to land after a files layer began is that layer: addFiles reports it before anything else.
      const key = making && blob.how === 'uploaded' ? 'files' : blob.digest;
      if (key === 'files') making = false;
      display.onProgress({
        phase: 'upload',
        key,
        digest: blob.digest,
        state: blob.how,
        bytes: blob.size,
        total: blob.size,
      });
    },
  };
}
