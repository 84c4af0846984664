/**
 * Issue 7's acceptance, end to end: a balenaOS-like disk image, a `.etch` preloaded with container images and
 * boot files, `etch apply --verify` onto an image file, then every independent check we can think of: the
 * filesystem checkers, mtools, and a Debian dockerd started on the data partition (loop-mounted) that must
 * show exactly what a dockerd that pulled the same images from the same registry shows.
 */
import { spawn } from 'node:child_process';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, createTempDir, type TempDir } from '@etch/test-utils';
import {
  DISK_TOOLS,
  DOCKERD_TOOLS,
  REGISTRY_SERVER_TOOLS,
  buildPreloadFixtures,
  containerFingerprint,
  engineImageRows,
  ensureTools,
  makeBalenaLikeImage,
  pushFixture,
  readLayoutImage,
  run,
  startDockerd,
  startRegistryServer,
  type Dockerd,
  type RegistryServer,
} from '@etch/test-utils/system';
import { readBaseRepositories } from '@etch/docker-store';
import { formatPlatform, hostPlatform } from '@etch/registry';

const bin = fileURLToPath(new URL('../bin/etch.js', import.meta.url));
const DATA = 6;
/** Smaller than the preloaded store, so the flasher has to grow the partition and its filesystem. */
const DATA_MIB = 2;
const BOOT = 1;
const SECTOR = 512;
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

/** The OS's own reference: an image the base OS ships (the supervisor), which the preload must not drop. */
const SUPERVISOR_ID = `sha256:${'5'.repeat(64)}`;
const OS_REPOSITORIES = { Repositories: { balena_supervisor: { 'balena_supervisor:v17.0.0': SUPERVISOR_ID } } };

/** What this suite runs beyond the global setup's lists; a missing one fails the suite before any test. */
const TOOLS = [
  ...DISK_TOOLS,
  ...DOCKERD_TOOLS,
  ...REGISTRY_SERVER_TOOLS,
  { command: 'e2fsck', aptPackage: 'e2fsprogs' },
  { command: 'resize2fs', aptPackage: 'e2fsprogs' },
  { command: 'mdir', aptPackage: 'mtools' },
  { command: 'mount', aptPackage: 'mount' },
  { command: 'umount', aptPackage: 'mount' },
];

interface Pushed {
  repository: string;
  tag: string;
  /** What a pull by tag records: the index digest for a multi-arch tag. */
  digest: string;
}

let work: TempDir;
let registry: RegistryServer | undefined;
let preloaded: Dockerd | undefined;
let pulled: Dockerd | undefined;
let pulling: Promise<void> | undefined;
let mountPoint: string | undefined;
let disk: string;
let summary: {
  output: string;
  baseImage: { name: string };
  verified: boolean;
  partitions: { number: number; filesystem: string; entries: number; size: number; grown: boolean }[];
};
let applyStderr: string;
let createSummary: {
  images: {
    reference: string;
    imageId: string;
    digest: string;
    indexDigest?: string;
    tags: string[];
    digests: string[];
  }[];
};
let partitions: { node: string; start: number; size: number }[];
const pushed: Record<string, Pushed> = {};

/** Runs the real `etch` binary, as a user would, with a home in the suite's folder (its cache goes there). */
async function etchBinary(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const home = work.join('home');
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: home, XDG_CACHE_HOME: join(home, '.cache') },
  });
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stdout: (await stdout).toString(), stderr: (await stderr).toString() };
}

/** Where partition `number` is, as sfdisk (not our own reader) sees the written disk. */
function extent(number: number): { offset: number; size: number } {
  const p = partitions.find((entry) => entry.node.endsWith(`img${number}`));
  if (p === undefined) throw new Error(`sfdisk shows no partition ${number} on ${disk}`);
  return { offset: p.start * SECTOR, size: p.size * SECTOR };
}

beforeAll(async () => {
  ensureTools(TOOLS);
  if (process.getuid?.() !== 0)
    throw new Error('The apply acceptance loop-mounts a partition and runs dockerd: it must run as root.');
  await access(new URL('../dist/cli/commands/apply.js', import.meta.url)).catch((cause: unknown) => {
    throw new Error(
      'The acceptance runs the etch binary, which loads dist/: build first (pnpm exec tsc -b packages/dotetch).',
      { cause },
    );
  });
  work = await createTempDir('etch-apply-e2e-');

  const fixtures = await buildPreloadFixtures(work.path);
  registry = await startRegistryServer();
  for (const key of ['a', 'b', 'multi'] as const) {
    const repository = `${registry.host}/etch/${key}`;
    await pushFixture(fixtures.layout, fixtures.images[key].tag, `${repository}:v1`);
    const image = await readLayoutImage(fixtures.layout, fixtures.images[key].tag);
    pushed[key] = { repository, tag: 'v1', digest: image.indexDigest ?? image.manifestDigest };
  }
  // The pulling engine starts now, so its start-up overlaps with building and applying the .etch.
  pulling = (async () => {
    const engine = await startDockerd();
    pulled = engine;
    for (const key of ['a', 'b', 'multi'] as const) await engine.docker(['pull', `${pushed[key]?.repository}:v1`]);
  })();
  // Awaited below; until then a failure must not count as unhandled.
  pulling.catch(() => {});

  // The OS: an engine store that already names the supervisor, in a data partition too small for the preload.
  const osData = work.join('os-data');
  await mkdir(join(osData, 'docker', 'image', 'overlay2'), { recursive: true });
  await writeFile(join(osData, 'docker', 'image', 'overlay2', 'repositories.json'), JSON.stringify(OS_REPOSITORIES));
  const base = work.join('balena.img');
  await makeBalenaLikeImage(base, { dataMiB: DATA_MIB, dataContent: osData });
  const boot = work.join('boot');
  await mkdir(join(boot, 'splash'), { recursive: true });
  await writeFile(join(boot, 'config.json'), '{"deviceType":"genericx86-64","hostname":"preloaded"}\n');
  await writeFile(
    join(boot, 'splash', 'balena-logo.png'),
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 255]),
  );

  // The flasher replaces repositories.json with the preload's: `etch create` reads the OS's entries from the
  // raw base image and merges them in. The images come from the registry, through the CLI, as a user would.
  expect(await readBaseRepositories(base, { partition: DATA })).toEqual(OS_REPOSITORIES);
  const etch = work.join('preload.etch');
  const created = await etchBinary([
    'create',
    '--base',
    base,
    '--inject',
    `${BOOT}:${boot}`,
    ...(['a', 'b', 'multi'] as const).flatMap((key) => ['--image', `${pushed[key]?.repository}:v1`]),
    '--platform',
    formatPlatform(hostPlatform()),
    '-o',
    etch,
    '--json',
  ]);
  if (created.code !== 0) throw new Error(`etch create exited with ${created.code}:\n${created.stderr}`);
  createSummary = JSON.parse(created.stdout) as typeof createSummary;

  disk = work.join('disk.img');
  const applied = await etchBinary(['apply', etch, '--output', disk, '--verify', '--json']);
  applyStderr = applied.stderr;
  if (applied.code !== 0) throw new Error(`etch apply exited with ${applied.code}:\n${applied.stderr}`);
  summary = JSON.parse(applied.stdout) as typeof summary;
  partitions = (
    JSON.parse((await run('sfdisk', ['--json', disk])).stdout) as { partitiontable: { partitions: typeof partitions } }
  ).partitiontable.partitions;
}, 90_000);

afterAll(async () => {
  await pulling?.catch(() => {});
  // stop() also empties the data root; the partition is thrown away with the image.
  await preloaded?.stop();
  if (mountPoint !== undefined) {
    const unmounted = await run('umount', [mountPoint], { allowFailure: true });
    if (unmounted.code !== 0) await run('umount', ['-l', mountPoint], { allowFailure: true });
  }
  await pulled?.stop();
  await registry?.stop();
  await work?.remove();
}, 60_000);

describe('etch apply of a preloaded .etch onto a balenaOS-like image', () => {
  it('etch create resolved the images from the registry and records the digests a pull by tag records', () => {
    expect(createSummary.images.map((i) => i.reference)).toEqual(
      (['a', 'b', 'multi'] as const).map((key) => `${pushed[key]?.repository}:v1`),
    );
    for (const [i, key] of (['a', 'b', 'multi'] as const).entries()) {
      expect(createSummary.images[i]?.tags).toEqual([`${pushed[key]?.repository}:v1`]);
      expect(createSummary.images[i]?.digests).toEqual([`${pushed[key]?.repository}@${pushed[key]?.digest}`]);
    }
    expect(createSummary.images[2]?.indexDigest).toBe(pushed['multi']?.digest);
  });

  it('verifies what it wrote and grows the data partition to fit the images', () => {
    expect(summary).toMatchObject({
      output: disk,
      baseImage: { name: 'balena.img' },
      verified: true,
      partitions: [
        { number: BOOT, filesystem: 'fat', entries: 3 },
        { number: DATA, filesystem: 'ext', grown: true },
      ],
    });
    expect(summary.partitions.find((p) => p.number === DATA)?.size).toBe(extent(DATA).size);
    expect(extent(DATA).size).toBeGreaterThan(DATA_MIB * 1024 * 1024);
    expect(applyStderr).toContain('etch: verifying what was written');
  });

  // The checks on the image run before anything mounts it.
  it('leaves an ext4 data partition that e2fsck -fn finds clean', async () => {
    const fsck = await run('e2fsck', ['-fn', `${disk}?offset=${extent(DATA).offset}`], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
  });

  it('puts the boot files into the FAT partition, where mdir sees them and fsck.vfat finds it clean', async () => {
    const boot = extent(BOOT);
    const listing = await run('mdir', ['-i', `${disk}@@${boot.offset}`, '-/', '-b', '::/'], { env: mtoolsEnv });
    expect(listing.stdout.split('\n').filter(Boolean).sort()).toEqual([
      '::/config.json',
      '::/splash/',
      '::/splash/balena-logo.png',
    ]);
    const config = await run('mcopy', ['-n', '-i', `${disk}@@${boot.offset}`, '::/config.json', '-'], {
      env: mtoolsEnv,
    });
    expect(config.stdout).toBe('{"deviceType":"genericx86-64","hostname":"preloaded"}\n');
    const piece = work.join('boot.vfat');
    await run('dd', [
      `if=${disk}`,
      `of=${piece}`,
      'bs=512',
      `skip=${boot.offset / SECTOR}`,
      `count=${boot.size / SECTOR}`,
      'status=none',
    ]);
    const fsck = await run('fsck.vfat', ['-n', piece], { allowFailure: true });
    expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
  });

  it('merges the OS reference to its supervisor into the preloaded repositories.json', async () => {
    const cat = await run('debugfs', [
      '-R',
      'cat /docker/image/overlay2/repositories.json',
      `${disk}?offset=${extent(DATA).offset}`,
    ]);
    const written = JSON.parse(cat.stdout) as typeof OS_REPOSITORIES;
    expect(written.Repositories.balena_supervisor).toEqual(OS_REPOSITORIES.Repositories.balena_supervisor);
    for (const key of ['a', 'b', 'multi']) expect(Object.keys(written.Repositories)).toContain(pushed[key]?.repository);
  });

  describe('a dockerd on the loop-mounted data partition', () => {
    beforeAll(async () => {
      // The data partition as the device will see it, the engine's data root inside.
      const data = extent(DATA);
      mountPoint = work.join('mnt');
      await mkdir(mountPoint);
      await run('mount', ['-o', `loop,offset=${data.offset},sizelimit=${data.size}`, disk, mountPoint]);
      preloaded = await startDockerd({ dataRoot: join(mountPoint, 'docker') });
      await pulling;
    }, 60_000);

    it('lists the same images, tags, IDs and digests as a pull', async () => {
      const host = (registry as RegistryServer).host;
      const ours = await engineImageRows(preloaded as Dockerd, host);
      expect(ours).toHaveLength(3);
      expect(ours).toEqual(await engineImageRows(pulled as Dockerd, host));
    });

    it.each(['a', 'b', 'multi'])('runs containers of %s with the same filesystem as a pull', async (key) => {
      const ref = `${pushed[key]?.repository}:v1`;
      const [ours, theirs] = await Promise.all([
        containerFingerprint(preloaded as Dockerd, ref),
        containerFingerprint(pulled as Dockerd, ref),
      ]);
      expect(ours).toContain('hardlink ok');
      expect(ours).toMatch(/^\/suid file 4755 1000:1000 /m);
      expect(ours).toEqual(theirs);
    });

    it('still has the OS reference to its supervisor once the engine runs', async () => {
      const text = await readFile(
        join(mountPoint as string, 'docker', 'image', 'overlay2', 'repositories.json'),
        'utf8',
      );
      expect((JSON.parse(text) as typeof OS_REPOSITORIES).Repositories.balena_supervisor).toEqual(
        OS_REPOSITORIES.Repositories.balena_supervisor,
      );
    });

    it('loads the store without layer or image errors in the daemon log', async () => {
      const log = await (preloaded as Dockerd).log();
      expect(log).not.toMatch(
        /failed to load layer|not restoring image|invalid image|failed to get layer|no such file or directory.*layerdb/i,
      );
    });
  });
});
