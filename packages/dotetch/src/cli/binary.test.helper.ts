// The real `etch` binary for the CLI's tests: a process of its own, as a user runs it.
import { fileURLToPath } from 'node:url';
import { run } from '@etch/test-utils/system';

/** The `etch` binary of this checkout (it loads dist/: the test run builds first). */
export const etchBin = fileURLToPath(new URL('../../bin/etch.js', import.meta.url));

/**
 * Runs the real `etch` binary: stdin from `input` (a pipe, never a terminal), stdout and stderr kept apart.
 * Without `HOME` or `XDG_CACHE_HOME` in `env`, its home is `cwd` (the test's folder), so its default cache
 * never lands in the machine's `~/.cache/etch`.
 */
export async function runBinary(
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; input?: string | Buffer },
): Promise<{ code: number; stdout: string; stderr: string; stdoutBuffer: Buffer }> {
  const own = options.env ?? {};
  const home = own['HOME'] || own['XDG_CACHE_HOME'] ? {} : { HOME: options.cwd };
  return run(process.execPath, [etchBin, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...home, ...own },
    allowFailure: true,
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
}
