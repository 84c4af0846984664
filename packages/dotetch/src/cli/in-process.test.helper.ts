// Shared by the CLI's tests (not shipped: `*.test.*` is left out of the package).
import { PassThrough, type Readable } from 'node:stream';
import { collect } from '@etch/test-utils';
import { main } from './main.js';

/** Where and how {@link runCli} runs the command. */
export interface CliRunOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Whether stderr looks like a terminal (default false: plain progress lines). */
  isTTY?: boolean;
  stdin?: Readable;
  signal?: AbortSignal;
}

/** Runs `etch` in this process, as the binary would, and collects what it printed. */
export async function runCli(
  args: string[],
  options: CliRunOptions,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = Object.assign(new PassThrough(), { isTTY: options.isTTY ?? false });
  const out = collect(stdout);
  const err = collect(stderr);
  const code = await main(args, {
    ...(options.stdin ? { stdin: options.stdin } : {}),
    stdout,
    stderr,
    env: options.env ?? {},
    cwd: options.cwd,
    signal: options.signal ?? new AbortController().signal,
  });
  stdout.end();
  stderr.end();
  return { code, stdout: (await out).toString(), stderr: (await err).toString() };
}
