import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCacheDir } from '@etch/baseimage';
import { EtchError } from '@etch/format';
import { startEtchServer, type ServeOptions } from '@etch/serve';
import { helpPage, parseFlags, usageError } from '../args.js';
import type { Command, CliContext } from '../context.js';
import { EXIT } from '../exit-codes.js';

const help = helpPage({
  usage: [
    'etch serve --listen HOST:PORT (--token-file FILE | --no-auth) [--base-dir DIR] [--cache-dir DIR]',
    '           [--allow-host HOST]... [--registry-mirror [REGISTRY=]URL]... [--config FILE]',
  ],
  description: `Serve .etch files over HTTP: POST /v1/etch with a JSON body (the choices of etch create, schema at
GET /v1/schema) streams the .etch that etch create writes for them, byte for byte. Many clients at once,
layers downloaded once and shared through the cache; GET /healthz, /readyz and /metrics (Prometheus) for
operators. Logs are JSON lines on stdout, one request id per request. SIGTERM stops taking requests and lets
streams in flight finish (up to --shutdown-grace), then exits.`,
  sections: [
    [
      'Options',
      `  --listen HOST:PORT          where to listen (default 127.0.0.1:8080)
  --token-file FILE           bearer tokens, one per line: clients send Authorization: Bearer TOKEN
  --no-auth                   serve without tokens (only on a loopback address)
  --base-dir DIR              base images a request names as file:NAME (never a path out of DIR)
  --cache-dir DIR             base images, layers and manifests, shared by every request (default
                              $XDG_CACHE_HOME/etch, else ~/.cache/etch)
  --allow-host HOST[:PORT]    a host base URLs, ECI artifacts and image registries may be on; nothing else is
                              contacted, and a listed name resolving to a private address is refused (list
                              the address itself). Repeatable.
  --registry-mirror [REGISTRY=]URL
                              pull REGISTRY's blobs through this pull-through mirror (a docker-registry in
                              proxy mode); without REGISTRY=, docker.io. Repeatable.
  --insecure-registry HOST    allow plain HTTP for HOST[:PORT]. Repeatable.
  --config FILE               these options as JSON ({"listen": "0.0.0.0:8080", "allowHost": [...], ...});
                              flags given on the command line win
  --max-concurrent N          builds at once (default 4)
  --max-queue N               requests waiting beyond those (default 16); more get 503 + Retry-After
  --retry-after SECONDS       what a 503's Retry-After asks for (default 10)
  --deadline SECONDS          a request's whole time (default 1800)
  --stall-timeout SECONDS     drop a client that reads nothing for this long (default 60)
  --shutdown-grace SECONDS    on SIGTERM, how long streams in flight may finish (default 30)
  --body-limit BYTES          largest request body (default 1048576)
  --log-level LEVEL           debug, info, warn or error (default info); the log is JSON lines on stdout
  -q, --quiet                 log warnings and errors only (--log-level warn)
  -v, --verbose               log debug lines too (--log-level debug)
  -h, --help                  this help`,
    ],
  ],
  examples: [
    [
      'Serve base images from /srv/os, images from ghcr.io, tokens from a file',
      'etch serve --listen 0.0.0.0:8080 --token-file /etc/etch/tokens --base-dir /srv/os \\\n      --allow-host ghcr.io --allow-host pkg-containers.githubusercontent.com',
    ],
    [
      'Ask for a preloaded image',
      `curl -fH "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -o device.etch \\\n      -d '{"base":"file:balena.img","images":["ghcr.io/acme/app:1.4"],"platform":"linux/arm64"}' \\\n      http://localhost:8080/v1/etch`,
    ],
  ],
});

const flags = {
  help: { type: 'boolean', short: 'h' },
  listen: { type: 'string' },
  'token-file': { type: 'string' },
  'no-auth': { type: 'boolean' },
  'base-dir': { type: 'string' },
  'cache-dir': { type: 'string' },
  'allow-host': { type: 'string', multiple: true },
  'registry-mirror': { type: 'string', multiple: true },
  'insecure-registry': { type: 'string', multiple: true },
  config: { type: 'string' },
  'max-concurrent': { type: 'string' },
  'max-queue': { type: 'string' },
  'retry-after': { type: 'string' },
  deadline: { type: 'string' },
  'stall-timeout': { type: 'string' },
  'shutdown-grace': { type: 'string' },
  'body-limit': { type: 'string' },
  'log-level': { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
} as const;

type Values = {
  [K in keyof typeof flags]?: (typeof flags)[K] extends { multiple: true }
    ? string[]
    : (typeof flags)[K] extends { type: 'boolean' }
      ? boolean
      : string;
};

/** The config file's keys: the flags in camelCase (`allowHost`, `registryMirror`, `maxConcurrent` …). */
function fromConfig(config: Record<string, unknown>, path: string): Values {
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    const spec = (flags as Record<string, { type: string; multiple?: boolean }>)[flag];
    if (spec === undefined || flag === 'config' || flag === 'help')
      throw usageError(`--config ${path}: unknown key ${JSON.stringify(key)}.`);
    const ok = spec.multiple
      ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : spec.type === 'boolean'
        ? typeof value === 'boolean'
        : typeof value === 'string' || typeof value === 'number';
    if (!ok) throw usageError(`--config ${path}: ${key} has the wrong type.`);
    values[flag] = typeof value === 'number' ? String(value) : value;
  }
  return values;
}

function count(value: string | undefined, flag: string, scale = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw usageError(`${flag} must be a positive number, not ${JSON.stringify(value)}.`);
  return Math.round(n * scale);
}

/** `--listen HOST:PORT` (`[::1]:8080` for IPv6). */
function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw usageError(`--listen ${JSON.stringify(value)} is not HOST:PORT.`);
  return { host: (match[1] ?? match[2]) as string, port };
}

/** `--registry-mirror [REGISTRY=]URL`: a plain URL mirrors docker.io, as dockerd's registry-mirrors. */
function parseMirrors(values: readonly string[]): Record<string, string> {
  const mirrors: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf('=');
    const [registry, url] = at === -1 ? ['docker.io', value] : [value.slice(0, at), value.slice(at + 1)];
    if (!/^https?:\/\/[^/]+\/?$/.test(url))
      throw usageError(`--registry-mirror ${JSON.stringify(value)}: the mirror must be http(s)://HOST[:PORT].`);
    mirrors[registry] = url;
  }
  return mirrors;
}

/** The text of a file an option names; `ETCH_IO` naming the option when it cannot be read. */
async function readOptionFile(option: string, path: string): Promise<string> {
  return readFile(path, 'utf8').catch((cause: unknown) => {
    throw new EtchError('ETCH_IO', `Cannot read ${option} ${path}: ${(cause as Error).message}`, { cause });
  });
}

async function readTokens(path: string): Promise<string[]> {
  const text = await readOptionFile('--token-file', path);
  const tokens = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (tokens.length === 0) throw usageError(`--token-file ${path} holds no token.`);
  return tokens;
}

export const serveCommand: Command = {
  name: 'serve',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values: given, positionals } = parseFlags(() =>
      parseArgs({ args, allowPositionals: true, options: flags }),
    );
    if (given.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (positionals.length > 0) throw usageError(`unexpected argument ${JSON.stringify(positionals[0])}.`);
    let values: Values = given;
    if (given.config !== undefined) {
      const path = resolve(context.cwd, given.config);
      const text = await readOptionFile('--config', path);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (cause) {
        throw new EtchError('ETCH_USAGE', `--config ${path} is not valid JSON.`, { cause });
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw usageError(`--config ${path} must hold a JSON object.`);
      values = { ...fromConfig(parsed as Record<string, unknown>, path), ...given };
    }
    if (values['token-file'] !== undefined && values['no-auth'])
      throw usageError('--token-file and --no-auth contradict each other; choose one.');
    if (values['token-file'] === undefined && !values['no-auth'])
      throw usageError('give --token-file FILE (bearer tokens), or --no-auth to serve a loopback address without.');
    const { host, port } = parseListen(values.listen ?? '127.0.0.1:8080');
    const level = values['log-level'] ?? (values.verbose ? 'debug' : values.quiet ? 'warn' : 'info');
    if (!['debug', 'info', 'warn', 'error'].includes(level))
      throw usageError(`--log-level must be debug, info, warn or error, not ${JSON.stringify(level)}.`);
    const dir = (value: string | undefined) => (value !== undefined ? resolve(context.cwd, value) : undefined);
    const baseDir = dir(values['base-dir']);
    const maxConcurrent = count(values['max-concurrent'], '--max-concurrent');
    const maxQueue = values['max-queue'] === '0' ? 0 : count(values['max-queue'], '--max-queue');
    const retryAfterSeconds = count(values['retry-after'], '--retry-after');
    const deadlineMs = count(values.deadline, '--deadline', 1000);
    const stallTimeoutMs = count(values['stall-timeout'], '--stall-timeout', 1000);
    const shutdownGraceMs = count(values['shutdown-grace'], '--shutdown-grace', 1000);
    const bodyLimit = count(values['body-limit'], '--body-limit');
    const dockerConfig = context.env['DOCKER_CONFIG'];
    const options: ServeOptions = {
      host,
      port,
      cacheDir: dir(values['cache-dir']) ?? defaultCacheDir(context.env),
      ...(baseDir !== undefined ? { baseDir } : {}),
      ...(values['no-auth']
        ? { auth: false }
        : { tokens: await readTokens(resolve(context.cwd, values['token-file'] as string)) }),
      allowHosts: values['allow-host'] ?? [],
      mirrors: parseMirrors(values['registry-mirror'] ?? []),
      insecureRegistries: values['insecure-registry'] ?? [],
      ...(dockerConfig ? { dockerConfig: `${dockerConfig}/config.json` } : {}),
      ...(maxConcurrent !== undefined ? { maxConcurrent } : {}),
      ...(maxQueue !== undefined ? { maxQueue } : {}),
      ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
      ...(deadlineMs !== undefined ? { deadlineMs } : {}),
      ...(stallTimeoutMs !== undefined ? { stallTimeoutMs } : {}),
      ...(shutdownGraceMs !== undefined ? { shutdownGraceMs } : {}),
      ...(bodyLimit !== undefined ? { bodyLimit } : {}),
      ...(context.env['SOURCE_DATE_EPOCH'] !== undefined ? { sourceDateEpoch: context.env['SOURCE_DATE_EPOCH'] } : {}),
      log: { level, stream: context.stdout },
    };
    if (context.signal.aborted) return EXIT.ok;
    const server = await startEtchServer(options);
    context.stderr.write(`etch serve: listening on ${server.url}\n`);
    await new Promise<void>((done) => context.signal.addEventListener('abort', () => done(), { once: true }));
    context.stderr.write('etch serve: shutting down; streams in flight may finish\n');
    await server.close();
    context.stderr.write('etch serve: stopped\n');
    return EXIT.ok;
  },
};
