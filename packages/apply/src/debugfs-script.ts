import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { EtchError, silentLogger, type Logger } from '@etch/format';
import { writeAll } from '@etch/disk';
import { runTool } from './exec.js';

// debugfs reads its script with an 8 KiB line buffer and runs the rest of a longer line as another
// command, so no line may come near it.
const SCRIPT_LINE_MAX = 8000;
/** Lines are written out once this many bytes wait: a batch's script is never held whole. */
const WRITE_AT = 64 * 1024;

/** Quotes an argument for debugfs's command parser: inside double quotes, a quote is doubled. */
export function quote(value: string): string {
  if (/[\n\r\0]/.test(value)) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `${JSON.stringify(value)} contains a line break; this flasher cannot write such a name into ext4.`,
    );
  }
  return `"${value.replaceAll('"', '""')}"`;
}

/**
 * A debugfs command file written as it is planned, a few KiB at a time: a batch of thousands of entries
 * made a script of megabytes that, held as lines and then joined, grew apply's heap with every entry of
 * the batch (issue 19, point 8).
 */
export class DebugfsScript {
  /** Commands added so far. */
  lines = 0;
  /** The directory debugfs is in at this point of the script: it starts at the root. */
  private cwd = '/';
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

  /**
   * `path` (absolute) quoted as debugfs should reach it: by its name in its parent directory, changing into
   * that directory first when the script is elsewhere. debugfs walks every path from the root, reading each
   * directory on the way for each command, and a file takes eight commands: relative names made the
   * commands of a 12,000-file image 3.5 × faster.
   */
  at(path: string): string {
    if (path === '/') return quote(path);
    const dir = posix.dirname(path);
    if (dir !== this.cwd) {
      this.add(`cd ${quote(dir)}`);
      this.cwd = dir;
    }
    const name = posix.basename(path);
    // debugfs reads an argument of the form <N> as inode number N: such a name is reached through "./".
    return quote(name.startsWith('<') ? `./${name}` : name);
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

/**
 * An ext4 inode's `*_extra` time field: nanoseconds above two epoch bits that extend the 32-bit seconds
 * (seconds − (seconds as a signed 32-bit number), in units of 2³²).
 */
export function extraTimeField(seconds: number, nanoseconds: number): number {
  const low = ((seconds % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const signedLow = low >= 2 ** 31 ? low - 2 ** 32 : low;
  const epoch = ((seconds - signedLow) / 2 ** 32) & 3;
  return nanoseconds * 4 + epoch;
}

/**
 * Commands that set mtime to the nanosecond, and atime the same (what the engine leaves after extracting a
 * layer), on `p` (a path as {@link DebugfsScript.at} quotes it). ext4 keeps nanoseconds, and the epoch bits
 * of times past 2038, in the `_extra` fields of inodes larger than 128 bytes (`extraTimes`).
 */
export function timeCommands(p: string, mtime: Date, nanoseconds: number, extraTimes: boolean): string[] {
  const seconds = Math.floor(mtime.getTime() / 1000);
  const commands = [`sif ${p} mtime @${seconds}`, `sif ${p} atime @${seconds}`];
  if (extraTimes) {
    const extra = String(extraTimeField(seconds, nanoseconds));
    commands.push(`sif ${p} mtime_extra ${extra}`, `sif ${p} atime_extra ${extra}`);
  }
  return commands;
}

/** Lines of debugfs output that are not errors: its banner, the echo of each command, inode allocations. */
function isNoise(line: string): boolean {
  return (
    line === '' || line.startsWith('debugfs ') || line.startsWith('debugfs: ') || /^Allocated inode: \d+$/.test(line)
  );
}

/**
 * Runs a closed script against `device` (`image?offset=N`), failing on any error debugfs reports: it reports
 * a failed command on its output and carries on, and any such line fails the whole apply.
 */
export async function runDebugfsScript(
  device: string,
  script: DebugfsScript,
  partition: number,
  options: { signal?: AbortSignal; logger?: Logger } = {},
): Promise<void> {
  if (script.lines === 0) return;
  const result = await runTool('debugfs', ['-w', '-f', script.path, device], {
    ...(options.signal ? { signal: options.signal } : {}),
    keepLine: (line) => !isNoise(line),
  });
  const errors = `${result.stdout}\n${result.stderr}`.split('\n').filter((line) => !isNoise(line));
  if (errors.length > 0) {
    throw new EtchError('ETCH_IO', `Writing into partition ${partition} failed: ${errors.slice(0, 5).join('; ')}`);
  }
  (options.logger ?? silentLogger).debug('debugfs batch done', { partition, commands: script.lines });
}
