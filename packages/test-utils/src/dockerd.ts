import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type RunOptions, type RunResult } from './run.js';
import type { RequiredTool } from './tools.js';

/** What the engine suites need from Debian. */
export const DOCKERD_TOOLS: readonly RequiredTool[] = [
  { command: 'dockerd', aptPackage: 'docker.io' },
  { command: 'containerd', aptPackage: 'containerd' },
  { command: 'runc', aptPackage: 'runc' },
  // A static busybox is the whole userland of the test images.
  { command: 'busybox', aptPackage: 'busybox-static' },
];

/** A private dockerd: its own data root, exec root, pidfile, socket and config; never the machine's. */
export interface Dockerd {
  dataRoot: string;
  socket: string;
  pid: number;
  /** Runs the docker CLI against this daemon. */
  docker(args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** The daemon's log so far. */
  log(): Promise<string>;
  /** Stops the daemon by its pid and waits for it; `keepData` leaves the data root for inspection. */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/** Options for {@link startDockerd}. */
export interface DockerdOptions {
  /** Use this data root (e.g. one a test prepared); default: a fresh temporary one. */
  dataRoot?: string;
  /** Registries to reach over plain HTTP besides loopback. */
  insecureRegistries?: string[];
  /** Seconds to wait for the API. */
  startTimeout?: number;
}

// Debian's client matches the daemon's API; a newer client on PATH would negotiate down anyway.
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

/**
 * Starts Debian's dockerd with overlay2 and no networking side effects (`--iptables=false --bridge=none`),
 * everything under a temporary folder. Waits until its API answers.
 */
export async function startDockerd(options: DockerdOptions = {}): Promise<Dockerd> {
  const base = await mkdtemp(join(tmpdir(), 'etch-dockerd-'));
  const dataRoot = options.dataRoot ?? join(base, 'data');
  const execRoot = join(base, 'exec');
  const socket = join(base, 'docker.sock');
  const pidfile = join(base, 'docker.pid');
  const config = join(base, 'daemon.json');
  const logFile = join(base, 'dockerd.log');
  await mkdir(dataRoot, { recursive: true });
  await writeFile(
    config,
    JSON.stringify({ 'insecure-registries': ['127.0.0.0/8', ...(options.insecureRegistries ?? [])] }),
  );
  const logFd = openSync(logFile, 'a');
  const child = spawn(
    'dockerd',
    [
      `--config-file=${config}`,
      `--data-root=${dataRoot}`,
      `--exec-root=${execRoot}`,
      `--pidfile=${pidfile}`,
      `--host=unix://${socket}`,
      '--storage-driver=overlay2',
      '--iptables=false',
      '--ip-forward=false',
      '--ip-masq=false',
      '--bridge=none',
      '--userland-proxy=false',
      '--max-concurrent-downloads=3',
    ],
    { stdio: ['ignore', logFd, logFd], detached: false },
  );
  closeSync(logFd);
  const pid = child.pid as number;
  const docker = (args: readonly string[], runOptions: RunOptions = {}) =>
    run(DOCKER_CLI, ['-H', `unix://${socket}`, ...args], runOptions);
  const log = () => readFile(logFile, 'utf8').catch(() => '');
  const stop = async ({ keepData = false }: { keepData?: boolean } = {}) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited(child);
      clearTimeout(timer);
    }
    // Mounts a killed daemon may leave behind must go before the files can.
    await run('sh', ['-c', `grep -o " ${base}[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`], {
      allowFailure: true,
    });
    if (!keepData) {
      await rm(base, { recursive: true, force: true });
      if (options.dataRoot !== undefined) await rm(options.dataRoot, { recursive: true, force: true });
    }
  };
  const deadline = Date.now() + (options.startTimeout ?? 60) * 1000;
  for (;;) {
    if (child.exitCode !== null) {
      const text = await log();
      await stop();
      throw new Error(`dockerd exited during start-up (${child.exitCode}):\n${text.slice(-4000)}`);
    }
    const probe = await docker(['version', '--format', '{{.Server.Version}}'], { allowFailure: true });
    if (probe.code === 0) break;
    if (Date.now() > deadline) {
      const text = await log();
      await stop();
      throw new Error(`dockerd did not answer within ${options.startTimeout ?? 60} s:\n${text.slice(-4000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { dataRoot, socket, pid, docker, log, stop };
}
