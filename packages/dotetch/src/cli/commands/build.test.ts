/** `etch build` against real docker-registry instances: the seed's example from the command line. */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildPreloadFixtures,
  inspectPushed,
  pushFixture,
  run,
  startRegistryServer,
  type RegistryServer,
} from '@etch/test-utils/system';
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
    expect(result.stderr, 'each blob reported on stderr as it lands (not a terminal: a line each)').toMatch(
      /^etch: (uploaded|mounted|already there) sha256:[0-9a-f]{64} \(\d/m,
    );
    const report = JSON.parse(result.stdout) as {
      schemaVersion: number;
      digest: string;
      images: { platform: string; imageId: string }[];
      copies: { target: string; digest: string }[];
    };
    expect(report.schemaVersion, 'schemaVersion').toBe(1);
    expect(report.images).toHaveLength(1);
    expect(report.images[0]?.platform, 'images[0].platform').toBe('linux/amd64');
    expect(report.images[0]?.imageId, 'images[0].imageId').toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(report.copies).toEqual([{ target: `${registry.host}/mirror/site:stable`, digest: report.digest }]);
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

  it('-t docker-archive: then -t REGISTRY: builds into the registry and prints the digest each target holds', async () => {
    const archive = dir.join('site.tar');
    const result = await runCli(
      [
        'build',
        '--from',
        `${registry.host}/base/multi:1`,
        '--add',
        'site:/www',
        '--platform',
        'linux/arm64',
        '-t',
        `docker-archive:${archive}:etch/site:1`,
        '-t',
        `${registry.host}/built/both:1`,
        '--json',
      ],
      { cwd: dir.path },
    );
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as {
      target: string;
      digest: string;
      images: { platform: string; imageId: string; digest: string }[];
      copies: { target: string; digest: string }[];
    };
    expect(report.target, 'built into the registry, not the archive').toBe(`${registry.host}/built/both:1`);
    expect((await inspectPushed(`${registry.host}/built/both:1`)).digest, 'the registry digest').toBe(report.digest);
    const [arm64] = report.images;
    expect(arm64?.platform).toBe('linux/arm64/v8');
    expect(report.copies, 'the archive holds the arm64 image manifest, not the index').toEqual([
      { target: `docker-archive:${archive}:etch/site:1`, digest: arm64?.digest },
    ]);
    const config = await run('skopeo', ['inspect', '--config', '--raw', `docker-archive:${archive}`]);
    expect(
      `sha256:${createHash('sha256').update(config.stdoutBuffer).digest('hex')}`,
      'the config in the archive',
    ).toBe(arm64?.imageId);
  });

  it('-q prints only the digest saved', async () => {
    const args = ['build', '--from', `${registry.host}/base/multi:1`, '--add', 'site:/www'];
    const result = await runCli([...args, '-t', `${registry.host}/built/quiet:1`, '-q'], { cwd: dir.path });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect((await inspectPushed(`${registry.host}/built/quiet:1`)).digest).toBe(result.stdout.trim());
  });

  it('prints its help with examples on stdout', async () => {
    const result = await runCli(['build', '--help'], { cwd: dir.path });
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^Usage: etch build --from REF/);
    expect(result.stdout).toMatch(/\nExamples:\n {2}# .+\n {2}etch /);
  });

  it('refuses missing --from or -t and bad flags in one line, before fetching anything', async () => {
    for (const [args, words] of [
      [['-t', 'x/y:1'], /--from REF/],
      [['--from', 'x/y:1'], /-t TARGET/],
      [['--from', 'x/y:1', '-t', 'x/z:1', '--cmd', '[not json'], /--cmd \[not json is not a JSON array/],
      [['--from', 'x/y:1', '-t', 'x/z:1', '--env', 'NOVALUE'], /--env wants KEY=VALUE/],
    ] as const) {
      const result = await runCli(['build', ...args], { cwd: dir.path });
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr.split('\n'), args.join(' ')).toEqual([
        expect.stringMatching(words),
        "Run 'etch build --help' for usage.",
        '',
      ]);
    }
  });
});
