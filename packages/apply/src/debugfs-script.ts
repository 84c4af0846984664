import { open, type FileHandle } from 'node:fs/promises';
import { EtchError } from '@etch/format';
import { writeAll } from '@etch/disk';

// debugfs reads its script with an 8 KiB line buffer and runs the rest of a longer line as another
// command, so no line may come near it.
const SCRIPT_LINE_MAX = 8000;
/** Lines are written out once this many bytes wait: a batch's script is never held whole. */
const WRITE_AT = 64 * 1024;

/**
 * A debugfs command file written as it is planned, a few KiB at a time: a batch of thousands of entries
 * made a script of megabytes that, held as lines and then joined, grew apply's heap with every entry of
 * the batch (issue 19, point 8).
 */
export class DebugfsScript {
  /** Commands added so far. */
  lines = 0;
  private pending: string[] = [];
  private pendingBytes = 0;

  private constructor(
    readonly path: string,
    private readonly file: FileHandle,
  ) {}

  static async create(path: string): Promise<DebugfsScript> {
    return new DebugfsScript(path, await open(path, 'w'));
  }

  /** Adds commands, refusing one debugfs would split. */
  add(...lines: string[]): void {
    for (const line of lines) {
      const bytes = Buffer.byteLength(line);
      // Defence in depth: a line debugfs would split could smuggle a command (dump, write) onto the host.
      if (bytes > SCRIPT_LINE_MAX)
        throw new EtchError(
          'ETCH_BAD_ENTRY',
          `A name is too long to write safely with debugfs (${bytes} bytes in one command).`,
        );
      this.pending.push(line);
      this.pendingBytes += bytes + 1;
      this.lines += 1;
    }
  }

  /** Writes what waits once there is enough of it (or all of it, with `all`). */
  async drain(all = false): Promise<void> {
    if (this.pending.length === 0 || (!all && this.pendingBytes < WRITE_AT)) return;
    const text = `${this.pending.join('\n')}\n`;
    this.pending = [];
    this.pendingBytes = 0;
    await writeAll(this.file, text);
  }

  /** Writes the rest and closes the file. */
  async close(): Promise<void> {
    try {
      await this.drain(true);
    } finally {
      await this.file.close();
    }
  }
}
