import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistryServer, type RegistryServer } from './docker-registry.js';
import { run } from './run.js';

/** Options for {@link startBasicAuthRegistry}. */
export interface BasicAuthRegistryOptions {
  /** Accounts the registry accepts, `{ name: password }`. At least one. */
  users: Record<string, string>;
  /** The realm named in `WWW-Authenticate: Basic realm="…"`. Default `etch-basic`. */
  realm?: string;
}

/** A {@link RegistryServer} that wants HTTP Basic credentials on every request. */
export interface BasicAuthRegistry extends RegistryServer {
  /** The accounts it accepts, as given. */
  users: Record<string, string>;
  /** The first account, for tests that need just one: `{ username, password }`. */
  credentials: { username: string; password: string };
  /** `user:password` of the first account, as skopeo's `--dest-creds` / `--src-creds` want it. */
  creds: string;
}

/**
 * Starts a `docker-registry` with `auth: htpasswd:`: a bcrypt file written by `htpasswd -Bbn` (apache2-utils,
 * see `REGISTRY_AUTH_TOOLS`). Every request without valid credentials gets 401 with
 * `WWW-Authenticate: Basic realm="…"`; the registry itself checks the passwords.
 * @example
 * const registry = await startBasicAuthRegistry({ users: { alice: 's3cret' } });
 * await pushFixture(layout, 'a', `${registry.host}/a:1`); // with --dest-creds registry.creds
 * await registry.stop();
 */
export async function startBasicAuthRegistry(options: BasicAuthRegistryOptions): Promise<BasicAuthRegistry> {
  const entries = Object.entries(options.users);
  const first = entries[0];
  if (!first) throw new Error('startBasicAuthRegistry needs at least one user');
  const dir = await mkdtemp(join(tmpdir(), 'etch-htpasswd-'));
  try {
    const lines: string[] = [];
    for (const [name, password] of entries) {
      // -n prints instead of writing a file, -B is bcrypt (the only scheme distribution accepts), -b takes the password as an argument.
      lines.push((await run('htpasswd', ['-Bbn', name, password])).stdout.trim());
    }
    const file = join(dir, 'htpasswd');
    await writeFile(file, `${lines.join('\n')}\n`);
    const server = await startRegistryServer(`auth:
  htpasswd:
    realm: ${JSON.stringify(options.realm ?? 'etch-basic')}
    path: ${file}
`);
    return {
      ...server,
      users: { ...options.users },
      credentials: { username: first[0], password: first[1] },
      creds: `${first[0]}:${first[1]}`,
      async stop() {
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
