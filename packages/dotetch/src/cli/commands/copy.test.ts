/** `etch copy` / `etch push` against real docker-registry instances: digests kept, typed refusals. */
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  inspectPushed,
  pushRegistryFixture,
  run,
  startRegistryServer,
  startTokenAuthRegistry,
  type PushedImage,
  type RegistryServer,
  type TokenAuthRegistry,
} from '@etch/test-utils/system';
import { modulesLoadedBy } from '../binary.test.helper.js';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
let a: RegistryServer;
let b: RegistryServer;
let token: TokenAuthRegistry;
let multi: PushedImage;
let layout: string;

beforeAll(async () => {
  dir = await createTempDir('etch-copy-cli-');
  const fixtures = await buildRegistryFixtures(dir.join('fixtures'));
  layout = fixtures.layout;
  [a, b, token] = await Promise.all([
    startRegistryServer(),
    startRegistryServer(),
    startTokenAuthRegistry({ users: { reader: 'r-pass' }, allow: (r) => r.actions.filter((x) => x === 'pull') }),
  ]);
  multi = await pushRegistryFixture(layout, fixtures.images.platforms.tag, `${a.host}/src/multi:1`);
}, 300_000);
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), token?.stop()]);
  await dir?.remove();
});

describe('etch copy', () => {
  it('copies a multi-platform index to another registry with the same digest (--json)', async () => {
    const result = await runCli(['copy', `${a.host}/src/multi:1`, `${b.host}/dst/multi:1`, '--json'], {
      cwd: dir.path,
    });
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { schemaVersion: number; digest: string; manifests: string[] };
    expect(report.schemaVersion, 'schemaVersion').toBe(1);
    expect(report.digest).toBe(multi.digest);
    expect(report.manifests).toHaveLength(multi.manifests?.length ?? 0);
    expect((await inspectPushed(`${b.host}/dst/multi:1`)).digest).toBe(multi.digest);
  });

  it('etch push of an OCI layout tag with --platform stores that platform manifest', async () => {
    const result = await runCli(
      ['push', `oci:${layout}:platforms`, `${b.host}/dst/arm64`, '--platform', 'linux/arm64'],
      { cwd: dir.path },
    );
    expect(result.code, result.stderr).toBe(0);
    const entry = multi.manifests?.find((m) => m.platform?.architecture === 'arm64');
    expect((await inspectPushed(`${b.host}/dst/arm64:latest`)).digest).toBe(entry?.digest);
    expect(result.stdout, 'the summary on stdout').toContain(`${b.host}/dst/arm64: ${entry?.digest}`);
    expect(result.stderr, 'each blob reported on stderr as it lands (not a terminal: a line each)').toMatch(
      /^etch: (uploaded|mounted|already there) sha256:[0-9a-f]{64} \(\d/m,
    );
  });

  it('writes one platform of an index to a docker archive named for docker load', async () => {
    const archive = dir.join('arm64.tar');
    const result = await runCli(
      ['copy', `${a.host}/src/multi:1`, `docker-archive:${archive}:etch/arm64:1`, '--platform', 'linux/arm64', '-q'],
      { cwd: dir.path },
    );
    expect(result.code, result.stderr).toBe(0);
    const entry = multi.manifests?.find((m) => m.platform?.architecture === 'arm64');
    expect(result.stdout, 'the arm64 manifest digest').toBe(`${entry?.digest}\n`);
    const saved = JSON.parse((await run('tar', ['-xOf', archive, 'manifest.json'])).stdout) as {
      Config: string;
      RepoTags: string[];
    }[];
    expect(
      saved.map((s) => s.RepoTags),
      'RepoTags of manifest.json',
    ).toEqual([['etch/arm64:1']]);
    expect(saved[0]?.Config.replace('blobs/sha256/', 'sha256:'), 'the arm64 config').toBe(entry?.config?.digest);

    const host = await runCli(['copy', `${a.host}/src/multi:1`, `docker-archive:${dir.join('host.tar')}`, '-q'], {
      cwd: dir.path,
    });
    const amd64 = multi.manifests?.find((m) => m.platform?.architecture === 'amd64');
    expect(host, 'without --platform: the host platform').toMatchObject({ code: 0, stdout: `${amd64?.digest}\n` });
    const all = await runCli(
      ['copy', `${a.host}/src/multi:1`, `docker-archive:${dir.join('all.tar')}`, '--all-platforms'],
      { cwd: dir.path },
    );
    expect(all.code, 'an index into an archive is a usage error').toBe(2);
    expect(all.stderr).toMatch(/^etch: ETCH_USAGE: .*holds one image/);
  });

  it('-q prints only the digest stored, and no progress', async () => {
    const result = await runCli(['copy', `${a.host}/src/multi:1`, `${b.host}/dst/quiet:1`, '-q'], { cwd: dir.path });
    expect(result.code, result.stderr).toBe(0);
    expect(result).toMatchObject({ stdout: `${multi.digest}\n`, stderr: '' });
  });

  it('prints its help with examples on stdout, for copy and push', async () => {
    for (const name of ['copy', 'push']) {
      const result = await runCli([name, '--help'], { cwd: dir.path });
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout, name).toMatch(new RegExp(`^Usage: etch ${name} SOURCE TARGET`));
      expect(result.stdout, name).toMatch(/\nExamples:\n {2}# .+\n {2}etch /);
    }
  });

  it('a push without push rights fails with ETCH_DENIED naming the credential source', async () => {
    const config = dir.join('docker');
    await mkdir(config, { recursive: true });
    await writeFile(
      `${config}/config.json`,
      JSON.stringify({ auths: { [token.host]: { auth: Buffer.from('reader:r-pass').toString('base64') } } }),
    );
    const result = await runCli(['copy', `${a.host}/src/multi:1`, `${token.host}/dst/multi:1`], {
      cwd: dir.path,
      env: { DOCKER_CONFIG: config },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^etch: ETCH_DENIED: .*auths in .*config\.json/);
    expect(result.stderr).not.toContain('r-pass');
  });

  it('refuses --platform with --all-platforms as a usage error', async () => {
    const result = await runCli(['copy', 'a', 'b', '--platform', 'linux/amd64', '--all-platforms'], { cwd: dir.path });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(
      "etch: ETCH_USAGE: --platform and --all-platforms contradict each other; give one.\nRun 'etch copy --help' for usage.\n",
    );
  });

  it('copy, push and build start without loading the base-image, create, flash, tar or disk packages, nor all of undici', async () => {
    for (const command of ['copy', 'push', 'build']) {
      const result = await modulesLoadedBy([command, '--help'], dir.path);
      expect(result.code, result.stderr).toBe(0);
      // Workspace packages by name.
      const loaded = new Set(
        result.urls.map(
          (url) =>
            /\/packages\/([a-z-]+)\//.exec(url)?.[1] ?? (/\/undici\/index\.js$/.test(url) ? 'undici-index' : url),
        ),
      );
      expect(loaded.has('registry'), `${command}: the hook saw the registry package load`).toBe(true);
      // tar and disk load when a docker archive or a files layer needs them; undici's index would load all of undici.
      for (const unwanted of ['baseimage', 'core', 'docker-store', 'apply', 'tar', 'disk', 'undici-index'])
        expect(loaded.has(unwanted), `${command} loaded ${unwanted}`).toBe(false);
    }
  });
});
