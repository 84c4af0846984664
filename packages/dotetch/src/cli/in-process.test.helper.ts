// Shared by the CLI's tests (not shipped: `*.test.*` is left out of the package).
import { PassThrough, type Readable } from 'node:stream';
import { collect, createTempDir } from '@etch/test-utils';
import { main } from './main.js';

/** Where and how {@link runCli} runs the command. */
export interface CliRunOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Whether stderr looks like a terminal (default false: plain progress lines). */
  isTTY?: boolean;
  /** Whether stdout looks like a terminal (default false). */
  stdoutIsTTY?: boolean;
  stdin?: Readable;
  signal?: AbortSignal;
}

/**
 * Runs `etch` in this process, as the binary would, and collects what it printed. Without `HOME` or
 * `XDG_CACHE_HOME` in `env`, the command gets a home of its own for the run, removed afterwards, so its default
 * cache never lands in the machine's `~/.cache/etch`.
 */
export async function runCli(
  args: string[],
  options: CliRunOptions,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = options.env ?? {};
  const home = env['HOME'] || env['XDG_CACHE_HOME'] ? undefined : await createTempDir('etch-cli-home-');
  const stdout = Object.assign(new PassThrough(), { isTTY: options.stdoutIsTTY ?? false });
  const stderr = Object.assign(new PassThrough(), { isTTY: options.isTTY ?? false });
  const out = collect(stdout);
  const err = collect(stderr);
  try {
    const code = await main(args, {
      ...(options.stdin ? { stdin: options.stdin } : {}),
      stdout,
      stderr,
      env: home ? { ...env, HOME: home.path } : env,
      cwd: options.cwd,
      signal: options.signal ?? new AbortController().signal,
    });
    stdout.end();
    stderr.end();
    return { code, stdout: (await out).toString(), stderr: (await err).toString() };
  } finally {
    await home?.remove();
  }
}
