import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { get as httpsGet } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequiredTool } from './tools.js';

/** Debian's distribution registry, and the tools that build and push images into it. */
export const REGISTRY_SERVER_TOOLS: readonly RequiredTool[] = [
  { command: 'docker-registry', aptPackage: 'docker-registry' },
  { command: 'skopeo', aptPackage: 'skopeo' },
  { command: 'umoci', aptPackage: 'umoci' },
];

/** A running `docker-registry` on loopback. */
export interface RegistryServer {
  /** `127.0.0.1:<port>` */
  host: string;
  port: number;
  /** The registry's own log (every request it served). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** True when `https://host/v2/` answers like a registry, trusting `ca`. */
function answersOverTls(host: string, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const request = httpsGet(`https://${host}/v2/`, { ca }, (response) => {
      response.resume();
      resolve(response.statusCode === 200 || response.statusCode === 401);
    });
    request.on('error', () => resolve(false));
  });
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
}

/**
 * Starts an open (no auth) `docker-registry` with filesystem storage in a temporary folder, on a free
 * loopback port, and waits until `/v2/` answers.
 * @param extraConfig YAML appended to the generated config (e.g. an `auth:` section).
 */
export async function startRegistryServer(
  extraConfig = '',
  options: { tls?: { certificate: string; key: string; ca: string } } = {},
): Promise<RegistryServer> {
  const dir = await mkdtemp(join(tmpdir(), 'etch-registry-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  const logFile = join(dir, 'registry.log');
  await writeFile(
    config,
    `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${join(dir, 'data')}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${options.tls ? `  tls:\n    certificate: ${options.tls.certificate}\n    key: ${options.tls.key}\n` : ''}${extraConfig}`,
  );
  const fd = openSync(logFile, 'a');
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const host = `127.0.0.1:${port}`;
  const log = () => readFile(logFile, 'utf8').catch(() => '');
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await exited(child);
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited (${child.exitCode}):\n${await log()}`);
    const ok = options.tls
      ? await answersOverTls(host, options.tls.ca)
      : await fetch(`http://${host}/v2/`).then(
          (r) => r.status === 200 || r.status === 401,
          () => false,
        );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not answer on ${host}:\n${await log()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { host, port, log, stop };
}
