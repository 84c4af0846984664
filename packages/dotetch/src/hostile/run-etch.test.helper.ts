// The hostile corpus and the fuzz run start the real CLI in child processes: a hang, a native abort or a
// runaway heap must not take the test runner with it. Not shipped (`*.test.*` is left out of the package).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ETCH_BIN = fileURLToPath(new URL('../../bin/etch.js', import.meta.url));

/** The Node flags of the binary's shebang: run through node, it gets them as users do (they change its memory). */
const ETCH_NODE_FLAGS = (readFileSync(ETCH_BIN, 'utf8').split('\n', 1)[0] ?? '')
  .split(/\s+/)
  .filter((word) => word.startsWith('--'));

/** How one run of a child process went. */
export interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Peak resident set of the process (not its children), MiB, sampled every 25 ms. */
  peakRssMiB: number;
  /** Why the watch killed it, if it did. */
  killed?: 'time' | 'memory';
}

/** Limits and wiring for {@link runChild}. */
export interface ChildOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  maxRssMiB: number;
  /** Called once the child runs, e.g. to send it a signal at the right moment. */
  onStart?: (child: { pid: number; kill: (signal: NodeJS.Signals) => void; stderr: () => string }) => void;
  input?: Buffer;
}

async function rssMiB(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
    return kb === undefined ? 0 : Number(kb) / 1024;
  } catch {
    return 0; // gone between the check and the read
  }
}

/** Runs a command under a time limit and a memory watch (SIGKILL past either), collecting its output. */
export function runChild(command: string, args: readonly string[], options: ChildOptions): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let peak = 0;
    let killed: ChildRun['killed'];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? Buffer.alloc(0));
    const watch = setInterval(() => {
      if (child.pid === undefined || child.exitCode !== null) return;
      void rssMiB(child.pid).then((mib) => {
        peak = Math.max(peak, mib);
        if (mib > options.maxRssMiB && killed === undefined) {
          killed = 'memory';
          child.kill('SIGKILL');
        }
      });
      if (Date.now() - started > options.timeoutMs && killed === undefined) {
        killed = 'time';
        child.kill('SIGKILL');
      }
    }, 25);
    child.on('error', (error) => {
      clearInterval(watch);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearInterval(watch);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: Date.now() - started,
        peakRssMiB: Math.round(peak),
        ...(killed ? { killed } : {}),
      });
    });
    if (child.pid !== undefined)
      options.onStart?.({
        pid: child.pid,
        kill: (signal) => child.kill(signal),
        stderr: () => Buffer.concat(err).toString('utf8'),
      });
  });
}

/** Runs `etch …` (the built binary) in `cwd`, with its temp and cache dirs inside the sandbox. */
export function runEtch(
  args: readonly string[],
  sandbox: { cwd: string; tmp: string; cache: string },
  limits: Omit<ChildOptions, 'cwd' | 'env'> & { env?: NodeJS.ProcessEnv },
): Promise<ChildRun> {
  return runChild(process.execPath, [...ETCH_NODE_FLAGS, ETCH_BIN, ...args], {
    ...limits,
    cwd: sandbox.cwd,
    env: {
      PATH: process.env['PATH'],
      HOME: sandbox.cwd,
      TMPDIR: sandbox.tmp,
      XDG_CACHE_HOME: sandbox.cache,
      DOCKER_CONFIG: join(sandbox.cwd, '.docker'),
      // Node's compile cache (the CLI turns it on) is Node's, not etch's: keep it out of the leftovers check.
      NODE_DISABLE_COMPILE_CACHE: '1',
      ...limits.env,
    },
  });
}

/** Every file and folder under `root`, relative, sorted: to prove a run left nothing but what it should. */
export async function listTree(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      found.push(relative(root, path));
      if (entry.isDirectory()) await walk(path);
    }
  };
  await walk(root);
  return found.sort();
}

/** The `etch: CODE: …` line's code, or undefined. */
export function errorCode(stderr: string): string | undefined {
  return /^etch: (ETCH_[A-Z_]+):/m.exec(stderr)?.[1];
}
