import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { EtchError } from '@etch/format';
import { DOCKER_HUB, DOCKER_HUB_CREDENTIAL_KEY, normalizeRegistry } from './reference.js';

/**
 * Credentials for one registry. `identityToken` is an OAuth2 refresh token (what `docker login` stores for
 * some registries); `registryToken` is a bearer token sent as is, without a token exchange.
 */
export type Credentials =
  { username: string; password: string } | { identityToken: string; username?: string } | { registryToken: string };

/** Where credentials were found: named in auth errors so a user knows what was tried (never the secret). */
export interface FoundCredentials {
  credentials: Credentials;
  /** `options`, `credHelpers[host] (docker-credential-x)`, `credsStore (docker-credential-x)`, `auths[host] in <path>`. */
  source: string;
}

/** Looks up credentials for a registry (`docker.io`, `127.0.0.1:5000`). */
export type CredentialSource = (registry: string, signal?: AbortSignal) => Promise<FoundCredentials | undefined>;

interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env['DOCKER_CONFIG'] || join(homedir(), '.docker'), 'config.json');
}

/** The key docker stores a registry's credentials under: the Hub's legacy URL, otherwise the host. */
export function credentialKey(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_CREDENTIAL_KEY : registry;
}

/** `https://host/v1/` → `host`, as docker's `ConvertToHostname` does, with the Hub's names folded together. */
function hostOfKey(key: string): string {
  return normalizeRegistry(key.replace(/^https?:\/\//, '').split('/')[0] ?? '');
}

function decodeAuth(auth: string): { username: string; password: string } | undefined {
  const text = Buffer.from(auth, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon === -1) return undefined;
  // The password is everything after the first colon; docker trims the NULs some tools pad with.
  return { username: text.slice(0, colon), password: text.slice(colon + 1).replace(/\0+$/, '') };
}

function fromAuthsEntry(entry: NonNullable<DockerConfigFile['auths']>[string]): Credentials | undefined {
  if (entry.registrytoken) return { registryToken: entry.registrytoken };
  const basic = entry.auth
    ? decodeAuth(entry.auth)
    : entry.username !== undefined && entry.password !== undefined
      ? { username: entry.username, password: entry.password }
      : undefined;
  if (entry.identitytoken)
    return { identityToken: entry.identitytoken, ...(basic ? { username: basic.username } : {}) };
  return basic;
}

/**
 * Runs `docker-credential-<helper> get` with the server URL on stdin (the docker-credential-helpers protocol).
 * "credentials not found" is no entry, not an error. A `<token>` user name marks an identity token.
 */
export async function runCredentialHelper(
  helper: string,
  serverUrl: string,
  signal?: AbortSignal,
): Promise<Credentials | undefined> {
  const program = `docker-credential-${helper}`;
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      const child = spawn(program, ['get'], { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
      child.on('error', (cause: NodeJS.ErrnoException) =>
        reject(
          new EtchError(
            cause.code === 'ENOENT' ? 'ETCH_AUTH_FAILED' : 'ETCH_IO',
            cause.code === 'ENOENT'
              ? `The docker config names the credential helper ${program}, which is not installed (not on PATH).`
              : `Running ${program} failed: ${cause.message}`,
            { cause },
          ),
        ),
      );
      child.on('close', (exitCode) => resolve({ code: exitCode, stdout: out, stderr: err }));
      child.stdin.end(`${serverUrl}\n`);
    },
  );
  const message = `${stdout}\n${stderr}`;
  if (code !== 0) {
    if (/credentials not found/i.test(message)) return undefined;
    // The helper's output may echo what it was given; report only its exit status.
    throw new EtchError('ETCH_AUTH_FAILED', `The credential helper ${program} failed (exit ${code}).`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    throw new EtchError('ETCH_AUTH_FAILED', `The credential helper ${program} printed something that is not JSON.`);
  }
  if (typeof parsed.Secret !== 'string' || parsed.Secret === '') return undefined;
  const username = typeof parsed.Username === 'string' ? parsed.Username : '';
  return username === '<token>' ? { identityToken: parsed.Secret } : { username, password: parsed.Secret };
}

/**
 * Credentials from docker's config file, in docker's order: `credHelpers[host]`, then `credsStore`, then
 * `auths` (exact key, then keys compared by host, so `https://index.docker.io/v1/` serves `docker.io`).
 * A missing or unreadable config file means no credentials.
 */
export function dockerConfigCredentials(options: { path?: string; env?: NodeJS.ProcessEnv } = {}): CredentialSource {
  const path = options.path ?? dockerConfigPath(options.env);
  let config: Promise<DockerConfigFile | undefined> | undefined;
  const load = () =>
    (config ??= readFile(path, 'utf8').then(
      (text) => {
        try {
          return JSON.parse(text) as DockerConfigFile;
        } catch (cause) {
          throw new EtchError('ETCH_USAGE', `The docker config ${path} is not valid JSON.`, {
            cause,
            details: { path },
          });
        }
      },
      () => undefined,
    ));
  return async (registry, signal) => {
    const file = await load();
    if (file === undefined) return undefined;
    const key = credentialKey(registry);
    const helperFor = Object.entries(file.credHelpers ?? {}).find(
      ([k]) => k === key || k === registry || hostOfKey(k) === registry,
    )?.[1];
    if (helperFor) {
      const credentials = await runCredentialHelper(helperFor, key, signal);
      return credentials && { credentials, source: `credHelpers (docker-credential-${helperFor}) in ${path}` };
    }
    if (file.credsStore) {
      const credentials = await runCredentialHelper(file.credsStore, key, signal);
      if (credentials) return { credentials, source: `credsStore (docker-credential-${file.credsStore}) in ${path}` };
    }
    const auths = file.auths ?? {};
    const entry = auths[key] ?? auths[registry] ?? Object.entries(auths).find(([k]) => hostOfKey(k) === registry)?.[1];
    const credentials = entry && fromAuthsEntry(entry);
    return credentials && { credentials, source: `auths in ${path}` };
  };
}

/** Credentials given per registry in code (`{ '127.0.0.1:5000': { username, password } }`), Hub aliases folded. */
export function staticCredentials(byRegistry: Readonly<Record<string, Credentials>>): CredentialSource {
  const map = new Map(Object.entries(byRegistry).map(([k, v]) => [hostOfKey(k), v] as const));
  return async (registry) => {
    const credentials = map.get(registry);
    return credentials && { credentials, source: 'options' };
  };
}

/** The first source that has credentials for the registry wins. */
export function chainCredentials(...sources: CredentialSource[]): CredentialSource {
  return async (registry, signal) => {
    for (const source of sources) {
      const found = await source(registry, signal);
      if (found) return found;
    }
    return undefined;
  };
}
