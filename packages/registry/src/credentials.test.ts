import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { dockerConfigCredentials, dockerConfigPath, staticCredentials } from './credentials.js';

let work: TempDir;
const b64 = (s: string) => Buffer.from(s).toString('base64');

/**
 * A program speaking the docker-credential-helpers protocol (`get`, server URL on stdin, JSON out), so the
 * lookup order and the `<token>` convention are exercised through a real child process.
 */
async function installHelper(
  dir: string,
  name: string,
  table: Record<string, { Username: string; Secret: string }>,
): Promise<void> {
  // The interpreter by absolute path: the unit run gives tests a PATH with node alone, and no /usr/bin/env.
  const script = `#!${process.execPath}
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const table = ${JSON.stringify(table)};
  const entry = table[input.trim()];
  if (process.argv[2] !== 'get' || !entry) { process.stdout.write('credentials not found in native keychain\\n'); process.exit(1); }
  process.stdout.write(JSON.stringify({ ServerURL: input.trim(), ...entry }));
});
`;
  await writeFile(`${dir}/docker-credential-${name}`, script);
  await chmod(`${dir}/docker-credential-${name}`, 0o755);
}

beforeAll(async () => {
  work = await createTempDir('etch-creds-');
  await mkdir(work.join('bin'));
  await installHelper(work.join('bin'), 'etchtest', {
    'helped.example.com': { Username: 'helper-user', Secret: 'helper-pass' },
    'https://index.docker.io/v1/': { Username: '<token>', Secret: 'refresh-me' },
  });
  await installHelper(work.join('bin'), 'store', {
    'stored.example.com': { Username: 'store-user', Secret: 'store-pass' },
  });
  process.env['PATH'] = `${work.join('bin')}:${process.env['PATH']}`;
});
afterAll(() => work.remove());

describe('docker config credentials', () => {
  it('honours DOCKER_CONFIG', () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: '/x/y' })).toBe('/x/y/config.json');
    expect(dockerConfigPath({ HOME: '/home/u' })).toMatch(/\.docker\/config\.json$/);
  });

  it('looks up credHelpers, then credsStore, then auths, with the Hub under its legacy key', async () => {
    const path = work.join('config.json');
    await writeFile(
      path,
      JSON.stringify({
        credHelpers: { 'helped.example.com': 'etchtest', 'https://index.docker.io/v1/': 'etchtest' },
        credsStore: 'store',
        auths: {
          'https://plain.example.com/v1/': { auth: b64('plain-user:pa:ss\0\0') },
          'id.example.com': { auth: b64('id-user:'), identitytoken: 'id-token' },
          'tok.example.com': { registrytoken: 'bearer-token' },
        },
      }),
    );
    const lookup = dockerConfigCredentials({ path });
    expect(await lookup('helped.example.com')).toEqual({
      credentials: { username: 'helper-user', password: 'helper-pass' },
      source: `credHelpers (docker-credential-etchtest) in ${path}`,
    });
    expect((await lookup('docker.io'))?.credentials).toEqual({ identityToken: 'refresh-me' });
    expect((await lookup('stored.example.com'))?.source).toMatch(/credsStore \(docker-credential-store\)/);
    expect((await lookup('stored.example.com'))?.credentials).toEqual({
      username: 'store-user',
      password: 'store-pass',
    });
    // The password is everything after the first colon, NUL padding trimmed.
    expect((await lookup('plain.example.com'))?.credentials).toEqual({ username: 'plain-user', password: 'pa:ss' });
    expect((await lookup('id.example.com'))?.credentials).toEqual({ identityToken: 'id-token', username: 'id-user' });
    expect((await lookup('tok.example.com'))?.credentials).toEqual({ registryToken: 'bearer-token' });
    expect(await lookup('nothing.example.com')).toBeUndefined();
  });

  it('reports a configured helper that is not installed, without leaking anything', async () => {
    const path = work.join('missing-helper.json');
    await writeFile(path, JSON.stringify({ credHelpers: { 'x.example.com': 'not-installed' } }));
    const error = await dockerConfigCredentials({ path })('x.example.com').catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_AUTH_FAILED'), String(error)).toBe(true);
    expect(String(error)).toMatch(/docker-credential-not-installed/);
  });

  it('treats a missing config file as no credentials, and a broken one as an error', async () => {
    expect(await dockerConfigCredentials({ path: work.join('absent.json') })('docker.io')).toBeUndefined();
    const path = work.join('broken.json');
    await writeFile(path, '{not json');
    expect(
      isEtchError(await dockerConfigCredentials({ path })('docker.io').catch((e: unknown) => e), 'ETCH_USAGE'),
    ).toBe(true);
  });

  it('folds the Hub aliases for credentials given in code', async () => {
    const lookup = staticCredentials({ 'index.docker.io': { username: 'u', password: 'p' } });
    expect((await lookup('docker.io'))?.source).toBe('options');
  });
});
