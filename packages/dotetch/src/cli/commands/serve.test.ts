/** `etch serve`'s flags and config file: mistakes are usage errors (exit 2) before anything listens. */
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
const etch = (args: string[]) => runCli(['serve', ...args], { cwd: dir.path, env: { HOME: dir.path } });

beforeAll(async () => {
  dir = await createTempDir('etch-serve-cli-');
  await writeFile(dir.join('tokens'), '# no token here\n\n');
  await writeFile(dir.join('typo.json'), JSON.stringify({ listen: '127.0.0.1:0', allowHosts: ['ghcr.io'] }));
  await writeFile(dir.join('wrong-type.json'), JSON.stringify({ noAuth: 'yes' }));
});
afterAll(async () => {
  await dir?.remove();
});

describe('etch serve', () => {
  it.each([
    ['neither tokens nor --no-auth', [], /--token-file FILE .* or --no-auth/],
    ['both tokens and --no-auth', ['--token-file', 'tokens', '--no-auth'], /contradict/],
    ['a token file with no token', ['--token-file', 'tokens'], /holds no token/],
    ['no tokens on a public address', ['--no-auth', '--listen', '0.0.0.0:0'], /only allowed on a loopback address/],
    ['a malformed --listen', ['--no-auth', '--listen', 'localhost'], /is not HOST:PORT/],
    ['a mirror that is not a URL', ['--no-auth', '--registry-mirror', 'ghcr.io=mirror'], /must be http\(s\):\/\/HOST/],
    ['an unknown key in --config', ['--config', 'typo.json'], /unknown key "allowHosts"/],
    ['a key of the wrong type in --config', ['--config', 'wrong-type.json'], /noAuth has the wrong type/],
  ])('refuses %s with a usage error', async (_what, args, message) => {
    const result = await etch(args);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toMatch(message);
  });

  it('is listed by etch help', async () => {
    const result = await runCli(['help'], { cwd: dir.path, env: { HOME: dir.path } });
    expect(result.stdout).toMatch(/^\s+serve\s+stream \.etch files over HTTP/m);
  });
});
