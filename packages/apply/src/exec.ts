import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { EtchError } from '@etch/format';

/** What a system tool printed. */
export interface ToolResult {
  code: number;
  stdout: string;
  /** stdout as bytes, for binary output. */
  stdoutBuffer: Buffer;
  stderr: string;
}

/** The Debian package of each tool apply runs, for the error that says what to install. */
const PACKAGES: Record<string, string> = {
  debugfs: 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  sfdisk: 'fdisk',
  mcopy: 'mtools',
  mmd: 'mtools',
  mdir: 'mtools',
  mdel: 'mtools',
  mattrib: 'mtools',
  mount: 'mount',
  umount: 'mount',
};

/** Output lines kept by `keepLine`: enough to report what failed. */
const MAX_KEPT_LINES = 100;

/** Tool output without the version banner e2fsprogs prints first (`resize2fs 1.47.0 (5-Feb-2023)`). */
function withoutBanner(text: string): string {
  return text
    .split('\n')
    .filter((line) => !/^\S+ \d+\.\d+(\.\d+)? \(\d+-\w+-\d+\)$/.test(line.trim()))
    .join('\n')
    .trim();
}

/** The longest line kept whole: only the start of a longer one matters for a report. */
const MAX_LINE = 64 * 1024;

/** Calls `onLine` with each line of a tool's output as it comes, the last one (without a newline) at its end. */
export function forEachLine(stream: Readable, onLine: (line: string) => void): void {
  stream.setEncoding('utf8');
  let partial = '';
  stream.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = (lines.pop() ?? '').slice(0, MAX_LINE);
    lines.forEach(onLine);
  });
  stream.on('end', () => onLine(partial));
}

/**
 * Runs a system tool without a shell. Fails with `ETCH_IO` naming the package to install when the tool is
 * missing, and (unless `allowFailure`) when it exits non-zero, with its stderr in the message.
 */
export function runTool(
  command: string,
  args: readonly string[],
  options: {
    input?: string;
    allowFailure?: boolean;
    signal?: AbortSignal;
    env?: NodeJS.ProcessEnv;
    /**
     * In a process group of its own: a Ctrl-C on the terminal reaches etch only, which then undoes what the
     * tool did, instead of killing `mount` between its success and etch learning of it.
     */
    detached?: boolean;
    /**
     * Keep only the output lines this accepts (at most {@link MAX_KEPT_LINES} of them), read as they come:
     * debugfs echoes every command of a batch, megabytes that need not be held.
     */
    keepLine?: (line: string) => boolean;
  } = {},
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(options.detached ? { detached: true } : {}),
      env: options.env ?? process.env,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const { keepLine } = options;
    if (keepLine === undefined) {
      child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
      child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    } else {
      for (const [stream, kept] of [
        [child.stdout, out],
        [child.stderr, err],
      ] as const) {
        let count = 0;
        forEachLine(stream, (line) => {
          if (count < MAX_KEPT_LINES && keepLine(line)) {
            count += 1;
            kept.push(Buffer.from(`${line}\n`));
          }
        });
      }
    }
    child.on('error', (cause: NodeJS.ErrnoException) => {
      if (cause.code === 'ENOENT') {
        reject(
          new EtchError(
            'ETCH_IO',
            `etch apply needs ${command}, which is not installed (Debian/Ubuntu: apt-get install ${PACKAGES[command] ?? command}).`,
            { cause },
          ),
        );
      } else
        reject(
          new EtchError(
            cause.name === 'AbortError' ? 'ETCH_ABORTED' : 'ETCH_IO',
            `${command} failed to run: ${cause.message}`,
            { cause },
          ),
        );
    });
    child.on('close', (code) => {
      const stdoutBuffer = Buffer.concat(out);
      const result = {
        code: code ?? -1,
        stdout: stdoutBuffer.toString('utf8'),
        stdoutBuffer,
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (result.code !== 0 && !options.allowFailure) {
        reject(
          new EtchError(
            'ETCH_IO',
            `${command} ${args.join(' ')} failed (exit ${result.code}): ${withoutBanner(result.stderr) || withoutBanner(result.stdout)}`,
          ),
        );
      } else resolve(result);
    });
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}
