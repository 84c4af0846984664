/** `etch build` against real docker-registry instances: the seed's example from the command line. */
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { buildPreloadFixtures, inspectPushed, pushFixture, run, startRegistryServer, type RegistryServer } from '@etch/test-utils/system';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
let registry: RegistryServer;

beforeAll(async () => {
  dir = await createTempDir('etch-build-cli-');
  const fixtures = await buildPreloadFixtures(dir.join('fixtures'));
  registry = await startRegistryServer();
  await pushFixture(fixtures.layout, fixtures.images.multi.tag, `${registry.host}/base/multi:1`);
  await mkdir(dir.join('site'), { recursive: true });
  await writeFile(dir.join('site', 'index.html'), '<h1>etch</h1>\n');
  await writeFile(dir.join('site', 'debug.log'), 'left out\n');
  await writeFile(dir.join('site', '.dockerignore'), '*.log\n');
}, 300_000);
afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
});

describe('etch build', () => {
  it('adds files, sets the config, saves to two tags and prints the digest as JSON', async () => {
    const result = await runCli(
      [
        'build',
        '--from',
        `${registry.host}/base/multi:1`,
        '--add',
        'site:/www',
        '--cmd',
        '["cat", "/www/index.html"]',
        '--env',
        'MODE=prod',
        '--workdir',
        '/www',
        '--label',
        'team=etch',
        '--platform',
        'linux/amd64',
        '-t',
        `${registry.host}/built/site:1`,
        '-t',
        `${registry.host}/mirror/site:stable`,
        '--json',
      ],
      { cwd: dir.path },
    );
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { digest: string; images: unknown[] };
    expect(report.images).toHaveLength(1);
    expect((await inspectPushed(`${registry.host}/built/site:1`)).digest).toBe(report.digest);
    expect((await inspectPushed(`${registry.host}/mirror/site:stable`)).digest, 'the second tag').toBe(report.digest);
    const config = JSON.parse(
      (await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${registry.host}/built/site:1`]))
        .stdout,
    ) as { config: { Env: string[] } };
    expect(config.config).toMatchObject({
      Cmd: ['cat', '/www/index.html'],
      WorkingDir: '/www',
      Labels: { team: 'etch' },
    });
    expect(config.config.Env).toContain('MODE=prod');
  });

  it('needs --from and -t', async () => {
    expect((await runCli(['build', '-t', 'x/y:1'], { cwd: dir.path })).code).toBe(2);
    expect((await runCli(['build', '--from', 'x/y:1'], { cwd: dir.path })).code).toBe(2);
  });
});
