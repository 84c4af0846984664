// The real `etch` binary for the CLI's tests: a process of its own, as a user runs it.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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

/**
 * Runs the real binary with `args` under a resolve hook and returns the URL of every module it resolved, for
 * tests that a command starts without loading what it does not need.
 */
export async function modulesLoadedBy(
  args: string[],
  cwd: string,
): Promise<{ code: number; stderr: string; urls: string[] }> {
  const hook = join(cwd, 'list-modules.mjs');
  await writeFile(
    hook,
    `import { registerHooks } from 'node:module';
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    process.stderr.write('loaded ' + result.url + '\\n');
    return result;
  },
});
`,
  );
  const result = await runBinary(args, { cwd, env: { NODE_OPTIONS: `--import=${hook}` } });
  return { code: result.code, stderr: result.stderr, urls: result.stderr.match(/(?<=^loaded ).+$/gm) ?? [] };
}
