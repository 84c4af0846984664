/**
 * The image builder end to end: a multi-platform busybox base in one registry, local files added, config set,
 * saved to another registry, pulled and run by a real dockerd; mounts within one registry; the same build twice
 * gives the same digests; saves to a token-auth registry (skopeo reads back the very config bytes), an htpasswd
 * registry, an OCI layout read back by skopeo, and a docker archive that docker loads and runs.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@etch/registry';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  DOCKERD_TOOLS,
  buildPreloadFixtures,
  ensureTools,
  inspectPushed,
  pushFixture,
  readLayoutImage,
  run,
  startBasicAuthRegistry,
  startDockerd,
  startRegistryServer,
  startTokenAuthRegistry,
  type BasicAuthRegistry,
  type Dockerd,
  type RegistryServer,
  type TokenAuthRegistry,
} from '@etch/test-utils/system';
import { Image } from './image.js';

let work: TempDir;
let a: RegistryServer;
let b: RegistryServer;
let basic: BasicAuthRegistry;
let token: TokenAuthRegistry;
let engine: Dockerd;
let files: string;
let baseLayers: string[];
let layout: string;
/** What `skopeo inspect --config` prints, as far as the tests read it. */
interface InspectedConfig {
  architecture: string;
  created: string;
  config: {
    Cmd?: string[];
    Entrypoint?: string[];
    Env?: string[];
    WorkingDir?: string;
    Labels?: Record<string, string>;
  };
  history: { created_by?: string }[];
}

const BASE = () => `${a.host}/base/multi:1`;

function client(): RegistryClient {
  return new RegistryClient({
    dockerConfig: false,
    credentials: { [basic.host]: basic.credentials, [token.host]: { username: 'writer', password: 'w-pass' } },
    retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 },
  });
}

/** The seed's example: files under /app, a command that shows what Cmd, Env and WorkingDir set. */
async function build(target: string, c: RegistryClient, tags?: string[]) {
  const image = new Image(BASE(), target, { client: c });
  try {
    await image.addFiles({ '/app': files }, { ignoreFiles: ['.dockerignore'] });
    image.Cmd = ['/bin/sh', '-c', 'echo "$GREETING"; pwd; cat hello.txt; readlink link; ls; ./run.sh'];
    image.Env = ['GREETING=hi from etch'];
    image.WorkingDir = '/app';
    image.Labels = { 'org.example.built-by': 'etch' };
    return await image.save(tags);
  } finally {
    await image.close();
  }
}

/** What `docker run` of {@link build}'s image prints: Env, WorkingDir, the files (ignores applied, link kept), Cmd. */
const RUN_OUTPUT = [
  'hi from etch',
  '/app',
  'hello.txt says hello',
  'hello.txt',
  'hello.txt',
  'link',
  'run.sh',
  'sub',
  'run.sh ran',
  '',
];

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

beforeAll(async () => {
  ensureTools(DOCKERD_TOOLS);
  work = await createTempDir('etch-image-');
  const fixtures = await buildPreloadFixtures(work.join('fixtures'));
  layout = fixtures.layout;
  [a, b, basic, token] = await Promise.all([
    startRegistryServer(),
    startRegistryServer(),
    startBasicAuthRegistry({ users: { alice: 'a-pass' } }),
    startTokenAuthRegistry({ users: { writer: 'w-pass' } }),
  ]);
  await pushFixture(fixtures.layout, fixtures.images.multi.tag, BASE());
  const base = await readLayoutImage(fixtures.layout, fixtures.images.multi.tag);
  baseLayers = base.layers.map((l) => l.digest);
  files = work.join('files');
  await mkdir(join(files, 'sub'), { recursive: true });
  await writeFile(join(files, 'hello.txt'), 'hello.txt says hello\n');
  await writeFile(join(files, 'sub', 'deep.txt'), 'deep\n');
  await writeFile(join(files, 'secret.log'), 'never in the image\n');
  await writeFile(join(files, '.dockerignore'), '*.log\n.dockerignore\n');
  await writeFile(join(files, 'run.sh'), '#!/bin/sh\necho run.sh ran\n');
  await chmod(join(files, 'run.sh'), 0o755);
  await symlink('hello.txt', join(files, 'link'));
  engine = await startDockerd();
}, 600_000);
afterAll(async () => {
  await engine?.stop();
  await Promise.all([a?.stop(), b?.stop(), basic?.stop(), token?.stop()]);
  await work?.remove();
});

describe('Image', () => {
  it('builds on a multi-platform base into another registry; docker pulls and runs what Cmd/Env/WorkingDir set', async () => {
    const c = client();
    try {
      const saved = await build(`${b.host}/built/app:1`, c);
      expect(saved.images.map((i) => i.platform?.architecture)).toEqual(['amd64', 'arm64', 'arm']);
      const pushed = await inspectPushed(`${b.host}/built/app:1`);
      expect(pushed.digest, 'the index skopeo reads is the one saved').toBe(saved.digest);
      expect(pushed.manifests?.map((m) => m.digest)).toEqual(saved.images.map((i) => i.digest));
      // One files layer for all platforms: the last layer of each image is the same blob.
      const last = new Set(pushed.manifests?.map((m) => m.layers?.at(-1)?.digest));
      expect(last.size, 'the files layer is shared').toBe(1);

      await engine.docker(['pull', `${b.host}/built/app:1`]);
      const ran = await engine.docker(['run', '--rm', '--network', 'none', `${b.host}/built/app:1`]);
      expect(ran.stdout.split('\n'), 'docker run output').toEqual(RUN_OUTPUT);
      const config = JSON.parse(
        (await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${b.host}/built/app:1`])).stdout,
      ) as InspectedConfig;
      expect(config.config.WorkingDir).toBe('/app');
      expect(config.config.Env).toContain('GREETING=hi from etch');
      expect(config.config.Labels).toEqual({ 'org.example.built-by': 'etch' });
      expect(config.created).toBe('1970-01-01T00:00:00Z');
      expect(config.history.at(-1)?.created_by).toMatch(/^etch build: add /);
    } finally {
      await c.close();
    }
  });

  it('gives the same digests when built twice', async () => {
    const c = client();
    try {
      const first = await build(`${b.host}/twice/app:1`, c);
      const second = await build(`${b.host}/twice/app:2`, c);
      expect(second.digest).toBe(first.digest);
      expect(second.images).toEqual(first.images);
    } finally {
      await c.close();
    }
  });

  it('mounts the base layers within one registry: only the files layer and the configs are uploaded', async () => {
    const c = client();
    try {
      const saved = await build(`${a.host}/same/app:1`, c);
      const uploads = (await a.log())
        .split('\n')
        .filter((l) => !l.includes('level=') && /"(PATCH|PUT) \/v2\/same\/app\/blobs\/uploads\//.test(l));
      for (const layer of baseLayers)
        expect(
          uploads.filter((l) => l.includes(layer.slice(7))),
          `base layer ${layer} uploaded`,
        ).toEqual([]);
      const puts = uploads.filter((l) => l.includes('"PUT '));
      expect(puts, 'one PUT for the files layer, one per config').toHaveLength(1 + saved.images.length);
    } finally {
      await c.close();
    }
  });

  it('saves to an htpasswd registry, to one platform, and to an OCI layout', async () => {
    const c = client();
    try {
      const image = new Image(BASE(), `${basic.host}/app:v1`, { client: c, platforms: ['linux/amd64'] });
      await image.addFiles({ '/srv/hello.txt': join(files, 'hello.txt') });
      image.Cmd = ['cat', '/srv/hello.txt'];
      const saved = await image.save();
      expect(saved.images).toHaveLength(1);
      const pushed = await inspectPushed(`${basic.host}/app:v1`, basic.creds);
      expect(pushed.manifests?.map((m) => m.digest)).toEqual([saved.images[0]?.digest]);

      const layout = work.join('layout');
      const toLayout = new Image(BASE(), `oci:${layout}:v1`, { client: c, platforms: ['linux/arm64'] });
      await toLayout.addFiles({ '/srv': files }, { ignores: ['sub', '*.log'] });
      toLayout.Entrypoint = ['/bin/sh'];
      await toLayout.save();
      const config = JSON.parse(
        (await run('skopeo', ['--override-arch', 'arm64', 'inspect', '--config', `oci:${layout}:v1`])).stdout,
      ) as InspectedConfig;
      expect(config.architecture).toBe('arm64');
      expect(config.config.Entrypoint).toEqual(['/bin/sh']);
    } finally {
      await c.close();
    }
  });

  it('saves to a token-auth registry with the digests of any other registry; skopeo reads the config bytes etch wrote', async () => {
    const c = client();
    try {
      const saved = await build(`${token.host}/tok/app:1`, c);
      const elsewhere = await build(`${b.host}/compare/app:1`, c);
      expect(saved.digest, 'the index digest in the token registry and in another one').toBe(elsewhere.digest);
      const pushed = await inspectPushed(`${token.host}/tok/app:1`, 'writer:w-pass');
      expect(pushed.digest, 'the index skopeo reads').toBe(saved.digest);
      for (const built of saved.images) {
        const raw = await run('skopeo', [
          'inspect',
          '--config',
          '--raw',
          '--tls-verify=false',
          '--creds',
          'writer:w-pass',
          `docker://${token.host}/tok/app@${built.digest}`,
        ]);
        expect(sha256(raw.stdoutBuffer), `config of ${built.platform?.architecture} as skopeo reads it`).toBe(
          built.config,
        );
        const config = JSON.parse(raw.stdout) as InspectedConfig;
        expect(config.architecture, 'the platform of the entry').toBe(built.platform?.architecture);
        expect(config.config, `runtime config of ${built.platform?.architecture}`).toMatchObject({
          Cmd: ['/bin/sh', '-c', 'echo "$GREETING"; pwd; cat hello.txt; readlink link; ls; ./run.sh'],
          WorkingDir: '/app',
          Labels: { 'org.example.built-by': 'etch' },
        });
        expect(config.config.Env).toContain('GREETING=hi from etch');
      }
    } finally {
      await c.close();
    }
  });

  it('saves the host platform to a docker archive that docker loads and runs', async () => {
    const c = client();
    const archive = work.join('built.tar');
    try {
      const saved = await build(`docker-archive:${archive}:etch/built:1`, c);
      expect(
        saved.images.map((i) => i.platform?.architecture),
        'one image, the host platform',
      ).toEqual(['amd64']);
      const loaded = await engine.docker(['load', '-i', archive]);
      expect(loaded.stdout, 'docker load names the image').toContain('etch/built:1');
      const id = (await engine.docker(['image', 'inspect', '--format', '{{.Id}}', 'etch/built:1'])).stdout.trim();
      expect(id, 'image ID is the config etch built').toBe(saved.images[0]?.config);
      expect(
        (await readdir(work.path)).filter((name) => name.startsWith('.built.tar')),
        'spooled blobs left beside the archive',
      ).toEqual([]);
      const ran = await engine.docker(['run', '--rm', '--network', 'none', 'etch/built:1']);
      expect(ran.stdout.split('\n'), 'docker run output').toEqual(RUN_OUTPUT);
    } finally {
      await c.close();
    }
  });

  it('builds on a docker-archive: base (as skopeo writes it); docker pulls and runs the result', async () => {
    const c = client();
    const archive = work.join('base-b.tar');
    await run('skopeo', ['copy', '--quiet', `oci:${layout}:b`, `docker-archive:${archive}:etch/base-b:1`]);
    const image = new Image(`docker-archive:${archive}`, `${b.host}/on-archive/app:1`, { client: c });
    try {
      const base = await image.getImageData();
      await image.addFiles({ '/app/hello.txt': join(files, 'hello.txt') });
      image.Cmd = ['/bin/sh', '-c', 'cat /b.txt /app/hello.txt'];
      const saved = await image.save();
      const pushed = await inspectPushed(`${b.host}/on-archive/app:1`);
      expect(pushed.digest, 'the manifest skopeo reads').toBe(saved.digest);
      expect(pushed.layers?.length, 'the base layers and the files layer').toBe(base.manifest.layers.length + 1);
      await engine.docker(['pull', '-q', `${b.host}/on-archive/app:1`]);
      const ran = await engine.docker(['run', '--rm', '--network', 'none', `${b.host}/on-archive/app:1`]);
      expect(ran.stdout, 'docker run output').toBe('image b\nhello.txt says hello\n');
    } finally {
      await image.close();
      await c.close();
    }
  });
});
