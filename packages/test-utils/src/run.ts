import { spawn, type SpawnOptions } from 'node:child_process';

/** What a finished command printed. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as raw bytes. */
  stdoutBuffer: Buffer;
}

/** Options for {@link run}. */
export interface RunOptions extends Pick<SpawnOptions, 'cwd' | 'env'> {
  /** Bytes written to the command's stdin. */
  input?: string | Buffer;
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFailure?: boolean;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
}

/**
 * Runs a command without a shell and collects its output. Rejects on a non-zero exit (with the command's
 * stderr in the message) unless `allowFailure` is set.
 */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const stdoutBuffer = Buffer.concat(out);
      const result: RunResult = {
        code: code ?? (signal ? 128 : 1),
        stdout: stdoutBuffer.toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        stdoutBuffer,
      };
      if (result.code !== 0 && !options.allowFailure) {
        reject(
          new Error(
            `${command} ${args.join(' ')} exited with ${result.code}${signal ? ` (${signal})` : ''}:\n${result.stderr}`,
          ),
        );
      } else {
        resolve(result);
      }
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input);
  });
}
