/**
 * Issue 6's bars, through the CLI: a target state becomes apps.json and exactly its images, proven by a Debian
 * dockerd opened on the result; pinning below supervisor 7 is refused; the OS's apps.json is merged; an abort
 * leaves nothing; a warm cache rebuild makes no registry request.
 */
import { mkdir, readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildPreloadFixtures,
  makeBalenaLikeImage,
  pushFixture,
  readLayoutImage,
  run,
  startDockerd,
  startRegistryServer,
  type Dockerd,
  type RegistryServer,
} from '@etch/test-utils/system';
import { runCli } from './cli/in-process.test.helper.js';

let dir: TempDir;
let registry: RegistryServer;
let engine: Dockerd | undefined;
const refs: Record<'a' | 'b' | 'multi', { repository: string; digest: string }> = {} as never;

const etch = (args: string[], signal?: AbortSignal) =>
  runCli(args, { cwd: dir.path, env: { HOME: dir.path }, ...(signal ? { signal } : {}) });

/** A fleet target state (the shape the balena API returns) whose two services run images a and multi by digest. */
function fleetState(withUuidKey: boolean): unknown {
  const app = {
    id: 1001,
    name: 'greenhouse',
    is_host: false,
    class: 'fleet',
    releases: {
      c0ffee00c0ffee00c0ffee00c0ffee00: {
        id: 2002,
        services: {
          sensors: {
            id: 31,
            image_id: 41,
            image: `${refs.a.repository}@${refs.a.digest}`,
            environment: { RATE: '10' },
            labels: {},
            composition: { restart: 'always' },
          },
          dashboard: {
            id: 32,
            image_id: 42,
            image: `${refs.multi.repository}@${refs.multi.digest}`,
            environment: {},
            labels: {},
            composition: {},
          },
          worker: {
            id: 33,
            image_id: 42,
            image: `${refs.multi.repository}@${refs.multi.digest}`,
            environment: { ROLE: 'worker' },
            labels: {},
            composition: {},
          },
        },
        volumes: {},
        networks: {},
      },
    },
  };
  const fleet = {
    name: 'greenhouse',
    config: { RESIN_SUPERVISOR_POLL_INTERVAL: '900000' },
    apps: { aaaabbbbccccddddeeeeffff00001111: app },
  };
  return withUuidKey ? { aaaabbbbccccddddeeeeffff00001111: fleet } : fleet;
}

/** The old device state a supervisor < 7 takes: one single-container app. */
function legacyState(): unknown {
  return {
    local: {
      config: {},
      apps: {
        '1001': {
          name: 'kiosk',
          commit: 'c0ffee',
          releaseId: 2002,
          serviceId: 31,
          image: `${refs.b.repository}@${refs.b.digest}`,
          environment: { URL: 'x' },
          config: {},
        },
      },
    },
  };
}

/** Extracts a path of a .etch with GNU tar, as root, keeping xattrs. */
async function extract(etchFile: string, into: string, member: string): Promise<void> {
  await mkdir(into, { recursive: true });
  await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xf', etchFile, '-C', into, member]);
}

function registryRequests(log: string): number {
  return log.split('\n').filter((line) => /"(GET|HEAD) \/v2\//.test(line)).length;
}

beforeAll(async () => {
  dir = await createTempDir('etch-pipeline-');
  const fixtures = await buildPreloadFixtures(dir.join('fixtures'));
  registry = await startRegistryServer();
  for (const key of ['a', 'b', 'multi'] as const) {
    const repository = `${registry.host}/etch/${key}`;
    await pushFixture(fixtures.layout, fixtures.images[key].tag, `${repository}:v1`);
    const image = await readLayoutImage(fixtures.layout, fixtures.images[key].tag);
    refs[key] = { repository, digest: image.indexDigest ?? image.manifestDigest };
  }
  // The base OS ships an apps.json of its own (a host extension) in the data partition.
  const osData = dir.join('os-data');
  await mkdir(osData);
  await writeFile(
    join(osData, 'apps.json'),
    JSON.stringify({
      apps: { hostext0: { id: 7, name: 'os-extension', is_host: true, class: 'fleet', releases: {} } },
      config: { KEEP: '1' },
    }),
  );
  await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 8, dataContent: osData });
  await makeBalenaLikeImage(dir.join('plain.img'), { dataMiB: 8 });
  await writeFile(dir.join('state-v3.json'), JSON.stringify(fleetState(true)));
  await writeFile(dir.join('state-v3-nokey.json'), JSON.stringify(fleetState(false)));
  await writeFile(dir.join('state-v1.json'), JSON.stringify(legacyState()));
}, 180_000);

afterAll(async () => {
  await engine?.stop();
  await registry?.stop();
  await dir?.remove();
}, 60_000);

describe('etch create --target-state', () => {
  it("writes a v3 apps.json merged with the OS one, and exactly the state's images, which a dockerd runs", async () => {
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--target-state',
      'state-v3.json',
      '--supervisor-version',
      'v14.11.2',
      '--pin-device',
      '--platform',
      'linux/amd64',
      '--cache-dir',
      'cache',
      '-o',
      'v3.etch',
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary.images.map((i: { reference: string }) => i.reference)).toEqual([
      `${refs.a.repository}@${refs.a.digest}`,
      `${refs.multi.repository}@${refs.multi.digest}`,
    ]);
    expect(summary.appsJson).toBe('inject/6/apps.json');

    await extract(dir.join('v3.etch'), dir.join('v3'), 'inject/6');
    const apps = JSON.parse(await readFile(dir.join('v3', 'inject', '6', 'apps.json'), 'utf8'));
    expect(apps.pinDevice).toBe(true);
    expect(Object.keys(apps.apps).sort()).toEqual(['aaaabbbbccccddddeeeeffff00001111', 'hostext0']);
    expect(apps.config).toMatchObject({ KEEP: '1', RESIN_SUPERVISOR_POLL_INTERVAL: '900000' });

    engine = await startDockerd({ dataRoot: dir.join('v3', 'inject', '6', 'docker') });
    const listed = (await engine.docker(['images', '--digests', '--format', '{{.Repository}}@{{.Digest}}'])).stdout
      .trim()
      .split('\n')
      .sort();
    expect(listed).toEqual(
      [`${refs.a.repository}@${refs.a.digest}`, `${refs.multi.repository}@${refs.multi.digest}`].sort(),
    );
    for (const ref of [`${refs.a.repository}@${refs.a.digest}`, `${refs.multi.repository}@${refs.multi.digest}`]) {
      const ran = await engine.docker([
        'run',
        '--rm',
        '--network',
        'none',
        '--entrypoint',
        '/bin/busybox',
        ref,
        'echo',
        'preloaded',
      ]);
      expect(ran.stdout.trim()).toBe('preloaded');
    }
    expect(await engine.log()).not.toMatch(/level=(error|fatal).*(layer|image)/i);
    await engine.stop();
    engine = undefined;
  });

  it('rebuilds from a warm cache without a single registry request', async () => {
    const before = registryRequests(await registry.log());
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--target-state',
      'state-v3-nokey.json',
      '--supervisor-version',
      '14.11.2',
      '--platform',
      'linux/amd64',
      '--cache-dir',
      'cache',
      '-o',
      'warm.etch',
      '-q',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(registryRequests(await registry.log())).toBe(before);
    // And the rebuild carries the same store as the cold build.
    const listing = async (file: string) =>
      (await run('tar', ['-tvf', dir.join(file), '--numeric-owner'])).stdout
        .split('\n')
        .filter((l) => l.includes('/docker/'))
        .map((l) => l.replace(/\s+\d{4}-\d\d-\d\d \d\d:\d\d/, ''))
        .sort();
    expect(await listing('warm.etch')).toEqual(await listing('v3.etch'));
  });

  it('writes the v1 format for a supervisor below 7 and preloads its single image', async () => {
    // An OS whose apps.json is v3 cannot take a v1 preload (that is refused); this one has none.
    const result = await etch([
      'create',
      '--base',
      'plain.img',
      '--target-state',
      'state-v1.json',
      '--supervisor-version',
      '6.6.11',
      '--platform',
      'linux/amd64',
      '--ignore-base-repositories',
      '--no-cache',
      '-o',
      'v1.etch',
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).images.map((i: { reference: string }) => i.reference)).toEqual([
      `${refs.b.repository}@${refs.b.digest}`,
    ]);
    await extract(dir.join('v1.etch'), dir.join('v1'), 'inject/6/apps.json');
    const apps = JSON.parse(await readFile(dir.join('v1', 'inject', '6', 'apps.json'), 'utf8'));
    expect(Array.isArray(apps)).toBe(true);
    expect(apps).toMatchObject([
      { appId: '1001', imageId: `${refs.b.repository}@${refs.b.digest}`, env: { URL: 'x' } },
    ]);
  });

  it('preloads the supervisor tagged as balenaOS starts it, and puts a splash where the OS reads it', async () => {
    await writeFile(dir.join('logo.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]));
    await writeFile(dir.join('logo.jpg'), 'not a png');
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--supervisor',
      `${refs.b.repository}:v1`,
      '--supervisor-version',
      '14.11.2',
      '--splash',
      'logo.png',
      '--platform',
      'linux/amd64',
      '--no-cache',
      '-o',
      'sv.etch',
      '-q',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse((await etch(['inspect', 'sv.etch', '--json'])).stdout);
    expect(report.images).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          tags: expect.arrayContaining(['balena_supervisor:v14.11.2']) as string[],
          preloaded: true,
        }),
      ]),
    );
    const members = (await run('tar', ['-tf', dir.join('sv.etch')])).stdout.split('\n');
    expect(members).toContain('inject/1/splash/balena-logo.png');
    const refused = await etch(['create', '--base', 'base.img', '--splash', 'logo.jpg', '-o', 'bad.etch']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/not a PNG/);
  });

  it('refuses to merge with an OS apps.json of another format than the supervisor reads', async () => {
    const result = await etch([
      'create',
      '--base',
      'base.img',
      '--target-state',
      'state-v1.json',
      '--supervisor-version',
      '6.6.11',
      '--platform',
      'linux/amd64',
      '-o',
      'mixed.etch',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/format v3, but supervisor 6\.6\.11 reads v1/);
  });

  it('refuses to pin below supervisor 7, and an unknown supervisor version, before writing anything', async () => {
    const pinned = await etch([
      'create',
      '--base',
      'base.img',
      '--target-state',
      'state-v3.json',
      '--supervisor-version',
      '6.6.11',
      '--pin-device',
      '--platform',
      'linux/amd64',
      '-o',
      'pin.etch',
    ]);
    expect(pinned.code).toBe(2);
    expect(pinned.stderr).toMatch(/7\.0\.0/);
    const unknown = await etch([
      'create',
      '--base',
      'base.img',
      '--target-state',
      'state-v3.json',
      '--supervisor-version',
      'latest',
      '--platform',
      'linux/amd64',
      '-o',
      'pin.etch',
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/ETCH_USAGE/);
    expect((await readdir(dir.path)).filter((n) => n.includes('pin.etch'))).toEqual([]);
  });

  it('stops within a second of Ctrl-C and leaves no .etch, not even a temporary one', async () => {
    await run('cp', [dir.join('base.img'), dir.join('big.img')]);
    await truncate(dir.join('big.img'), 3 * 1024 * 1024 * 1024);
    const controller = new AbortController();
    const running = etch(
      [
        'create',
        '--base',
        'big.img',
        '--target-state',
        'state-v3.json',
        '--supervisor-version',
        '14.11.2',
        '--platform',
        'linux/amd64',
        '--no-cache',
        '--ignore-base-repositories',
        '-o',
        'aborted.etch',
      ],
      controller.signal,
    );
    // Abort mid-run: once the temporary .etch exists.
    await vi.waitUntil(async () => (await readdir(dir.path)).some((name) => name.endsWith('.partial')), {
      timeout: 60_000,
      interval: 20,
    });
    const abortedAt = Date.now();
    controller.abort();
    const result = await running;
    expect(Date.now() - abortedAt).toBeLessThan(1000);
    expect(result.code, result.stderr).toBe(130);
    expect((await readdir(dir.path)).filter((n) => n.includes('aborted'))).toEqual([]);
  });
});
