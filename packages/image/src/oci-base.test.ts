/**
 * The builder on an `oci:` base (a multi-platform layout made by umoci) saved to an htpasswd registry: every
 * config field the builder sets lands in each platform's config as skopeo reads it, the files layer has the
 * owners and the followed symlinks asked for (as GNU tar lists it), and the same build gives the same digests.
 */
import { mkdir, symlink, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@etch/registry';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  run,
  startBasicAuthRegistry,
  type BasicAuthRegistry,
  type RegistryFixtures,
} from '@etch/test-utils/system';
import { Image, type SavedImage } from './image.js';

let work: TempDir;
let fixtures: RegistryFixtures;
let registry: BasicAuthRegistry;
let files: string;

/** `skopeo inspect --config` of one image, as far as the test reads it. */
interface InspectedConfig {
  architecture: string;
  variant?: string;
  created: string;
  config: Record<string, unknown>;
  rootfs: { diff_ids: string[] };
  history: { created_by?: string }[];
}

/** What the build sets, as the config must hold it. */
const EXPECTED_CONFIG = {
  User: '1000:2000',
  ExposedPorts: { '53/udp': {}, '8080/tcp': {} },
  Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'MODE=test'],
  Entrypoint: ['/app/run.sh'],
  Cmd: ['--serve'],
  Volumes: { '/data': {} },
  WorkingDir: '/app',
  Labels: { 'org.example.from': 'oci' },
  StopSignal: 'SIGTERM',
};

async function build(target: string): Promise<SavedImage> {
  const client = new RegistryClient({
    dockerConfig: false,
    credentials: { [registry.host]: registry.credentials },
    retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 },
  });
  const image = new Image(`oci:${fixtures.layout}:${fixtures.images.platforms.tag}`, target, { client });
  try {
    await image.addFiles({ '/app': files }, { followSymlinks: true, uid: 1000, gid: 2000 });
    image.User = '1000:2000';
    image.ExposedPorts = ['8080/tcp', '53/udp'];
    image.Volumes = ['/data'];
    image.StopSignal = 'SIGTERM';
    image.Entrypoint = ['/app/run.sh'];
    image.Cmd = ['--serve'];
    image.Env = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'MODE=test'];
    image.WorkingDir = '/app';
    image.Labels = { 'org.example.from': 'oci' };
    return await image.save();
  } finally {
    await image.close();
    await client.close();
  }
}

function skopeo(args: string[]) {
  return run('skopeo', [args[0] as string, '--tls-verify=false', '--creds', registry.creds, ...args.slice(1)]);
}

beforeAll(async () => {
  work = await createTempDir('etch-image-oci-');
  [fixtures, registry] = await Promise.all([
    buildRegistryFixtures(work.join('fixtures')),
    startBasicAuthRegistry({ users: { builder: 'b-pass' } }),
  ]);
  files = work.join('files');
  await mkdir(files, { recursive: true });
  await writeFile(join(files, 'hello.txt'), 'hello\n');
  await writeFile(join(files, 'run.sh'), '#!/bin/sh\necho ran\n');
  await chmod(join(files, 'run.sh'), 0o755);
  await symlink('hello.txt', join(files, 'link'));
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  await work?.remove();
});

describe('Image on an oci: base', () => {
  it('saves every platform with the config fields set, the owners asked for and symlinks followed', async () => {
    const ref = `${registry.host}/from-oci/app`;
    const saved = await build(`${ref}:1`);
    expect(
      saved.images.map((i) => [i.platform?.architecture, i.platform?.variant]),
      'the platforms built, in the base index order, without its attestation entry',
    ).toEqual(fixtures.platforms.map((p) => [p.architecture, p.variant]));
    const pushed = JSON.parse((await skopeo(['inspect', '--raw', `docker://${ref}:1`])).stdout) as {
      manifests: { digest: string }[];
    };
    expect(
      pushed.manifests.map((m) => m.digest),
      'the index in the registry lists the images saved',
    ).toEqual(saved.images.map((i) => i.digest));

    let filesLayer: string | undefined;
    for (const [i, image] of saved.images.entries()) {
      const platform = fixtures.platforms[i];
      const config = JSON.parse(
        (await skopeo(['inspect', '--config', `docker://${ref}@${image.digest}`])).stdout,
      ) as InspectedConfig;
      const what = `the config of ${platform?.architecture}${platform?.variant ? `/${platform.variant}` : ''}`;
      expect(config.config, `${what}: its runtime fields`).toEqual(EXPECTED_CONFIG);
      expect([config.architecture, config.variant], `${what}: its platform`).toEqual([
        platform?.architecture,
        platform?.variant,
      ]);
      expect(config.created, `${what}: created (SOURCE_DATE_EPOCH unset: the epoch)`).toBe('1970-01-01T00:00:00Z');
      expect(config.history.at(-1)?.created_by, `${what}: the history entry of the files layer`).toBe(
        `etch build: add ${files} /app`,
      );
      const manifest = JSON.parse((await skopeo(['inspect', '--raw', `docker://${ref}@${image.digest}`])).stdout) as {
        layers: { digest: string }[];
      };
      expect(manifest.layers.length, `${what}: the base layer and the files layer`).toBe(config.rootfs.diff_ids.length);
      filesLayer ??= manifest.layers.at(-1)?.digest;
      expect(manifest.layers.at(-1)?.digest, `${what}: the files layer, shared by every platform`).toBe(filesLayer);
    }

    await run('skopeo', [
      'copy',
      '--src-tls-verify=false',
      '--src-creds',
      registry.creds,
      `docker://${ref}@${saved.images[0]?.digest}`,
      `dir:${work.join('dir')}`,
    ]);
    const listing = await run('tar', ['--numeric-owner', '-tvzf', work.join('dir', (filesLayer ?? '').slice(7))]);
    const entries = listing.stdout
      .trim()
      .split('\n')
      .map((line) => {
        const [mode, owner, size, , , name] = line.split(/\s+/);
        return `${mode} ${owner} ${size} ${name}`;
      });
    expect(entries, 'the files layer as GNU tar lists it: uid/gid 1000/2000, the symlink followed to a file').toEqual([
      'drwxr-xr-x 1000/2000 0 app/',
      '-rw-r--r-- 1000/2000 6 app/hello.txt',
      '-rw-r--r-- 1000/2000 6 app/link',
      '-rwxr-xr-x 1000/2000 19 app/run.sh',
    ]);

    const again = await build(`${ref}:2`);
    expect(
      [again.digest, ...again.images.map((i) => i.digest)],
      'the index and image digests of the same build, saved again',
    ).toEqual([saved.digest, ...saved.images.map((i) => i.digest)]);
  });
});
