/**
 * Issue 16's acceptance: images nobody here wrote by hand go through `etch create` → `etch apply --verify` → a
 * dockerd on the loop-mounted data partition, and every layer's `diff/` must equal, file by file and field by
 * field, what a dockerd that pulled the same images from the same registry extracted. One image is built by
 * the engine itself (`docker build` RUN steps that delete, replace, hardlink, setcap, mkfifo, mknod, and set
 * fractional and pre-epoch times); the other is a generated rootfs of a few thousand files with GNU tar's
 * sub-second PAX times, imported with `docker import`.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, lstat, mkdir, readFile, readdir, readlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, createTempDir, type TempDir } from '@etch/test-utils';
import {
  DISK_TOOLS,
  DOCKERD_TOOLS,
  REGISTRY_SERVER_TOOLS,
  engineImageRows,
  ensureTools,
  makeBalenaLikeImage,
  run,
  startDockerd,
  startRegistryServer,
  type Dockerd,
  type RegistryServer,
} from '@etch/test-utils/system';
import { formatPlatform, hostPlatform } from '@etch/registry';

const bin = fileURLToPath(new URL('../bin/etch.js', import.meta.url));
const DATA = 6;
const SECTOR = 512;
const ROOTFS_FILES = 3000;
const TOOLS = [
  ...DISK_TOOLS,
  ...DOCKERD_TOOLS,
  ...REGISTRY_SERVER_TOOLS,
  { command: 'setcap', aptPackage: 'libcap2-bin' },
  { command: 'getfattr', aptPackage: 'attr' },
  { command: 'mount', aptPackage: 'mount' },
];

let work: TempDir;
let registry: RegistryServer | undefined;
let engine: Dockerd | undefined;
let preloaded: Dockerd | undefined;
let mountPoint: string | undefined;
const refs: Record<'built' | 'rootfs', string> = { built: '', rootfs: '' };

async function etchBinary(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stdout: (await stdout).toString(), stderr: (await stderr).toString() };
}

/** The build context: busybox, setcap with the libraries it loads, and a reference file with a fractional mtime. */
async function buildContext(dir: string): Promise<void> {
  await mkdir(join(dir, 'lib'), { recursive: true });
  await copyFile('/bin/busybox', join(dir, 'busybox'));
  await copyFile('/usr/sbin/setcap', join(dir, 'setcap'));
  const ldd = (await run('ldd', ['/usr/sbin/setcap'])).stdout;
  const libs = [...ldd.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1] as string);
  for (const lib of libs) await copyFile(lib, join(dir, 'lib', lib.split('/').pop() as string));
  await writeFile(join(dir, 'libs.txt'), libs.join('\n'));
  await writeFile(join(dir, 'ref'), 'fraction\n');
  // 2001-02-03T04:05:06.123456Z: utimes takes microseconds from a fractional second count.
  await utimes(join(dir, 'ref'), 981173106.123456, 981173106.123456);
  const copies = libs.map((lib) => `COPY lib/${lib.split('/').pop()} ${lib}`).join('\n');
  await writeFile(
    join(dir, 'Dockerfile'),
    `FROM scratch
COPY busybox /bin/busybox
${copies}
COPY setcap /bin/setcap
COPY ref /ref
SHELL ["/bin/busybox", "sh", "-c"]
RUN /bin/busybox --install -s /bin && mkdir -p /data /etc /tmp && echo one > /data/file && ln /data/file /data/hard \\
 && echo gone > /etc/delete-me && echo old > /data/replace-me && mkdir -p /opq/sub && echo x > /opq/sub/old
RUN rm /etc/delete-me && echo new > /data/replace-me && rm -r /opq && mkdir /opq && echo y > /opq/new \\
 && echo two >> /data/file && ln /data/file /data/hard2 \\
 && cp /bin/busybox /bin/capable && setcap cap_net_bind_service+ep /bin/capable \\
 && mkfifo /data/fifo && mknod /data/null c 1 3 && mknod /data/loop b 7 0 && chown 1000:1000 /data/loop \\
 && touch -r /ref /data/fraction && echo old > /data/pre-epoch && touch -d '1960-01-01 00:00:00' /data/pre-epoch \\
 && ln -s pre-epoch /data/old-link && touch -h -d '1961-06-01 00:00:00' /data/old-link
`,
  );
}

/** A rootfs of ROOTFS_FILES files in nested folders, with nanosecond times, a few links, as GNU tar writes it. */
async function rootfsTar(dir: string, out: string): Promise<void> {
  for (let i = 0; i < ROOTFS_FILES; i++) {
    const folder = join(dir, 'usr', `d${i % 40}`, `e${i % 7}`);
    await mkdir(folder, { recursive: true });
    const file = join(folder, `f${i}.txt`);
    await writeFile(file, `file ${i}\n`.repeat(1 + (i % 13)));
    const seconds = 1_600_000_000 + i;
    await utimes(file, seconds + 0.000123 * (i % 1000), seconds + 0.000123 * (i % 1000));
  }
  await mkdir(join(dir, 'bin'), { recursive: true });
  await copyFile('/bin/busybox', join(dir, 'bin', 'busybox'));
  await run('tar', ['--format=pax', '--numeric-owner', '--sort=name', '-C', dir, '-cf', out, '.']);
}

interface Field {
  type: string;
  mode: string;
  owner: string;
  size: string;
  links: string;
  mtime: string;
  rdev: string;
  content: string;
  target: string;
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every entry below `root`, with the fields the engine sets (directories' own times are checked too). */
async function describeTree(root: string): Promise<Map<string, Field>> {
  const out = new Map<string, Field>();
  const walk = async (rel: string) => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, path);
      const info = await lstat(abs, { bigint: true });
      const type = info.isFile()
        ? 'file'
        : info.isDirectory()
          ? 'directory'
          : info.isSymbolicLink()
            ? 'symlink'
            : info.isFIFO()
              ? 'fifo'
              : info.isCharacterDevice()
                ? 'char'
                : info.isBlockDevice()
                  ? 'block'
                  : 'other';
      const whiteout = type === 'char' && info.rdev === 0n;
      out.set(path, {
        type,
        mode: (info.mode & 0o7777n).toString(8),
        owner: `${info.uid}:${info.gid}`,
        size: type === 'file' ? String(info.size) : '',
        links: type === 'directory' ? '' : String(info.nlink),
        // The engine mknods whiteouts without setting their time: it is the time of the pull.
        mtime: whiteout ? '' : String(info.mtimeNs),
        rdev: type === 'char' || type === 'block' ? String(info.rdev) : '',
        content: type === 'file' ? await hashFile(abs) : '',
        target: type === 'symlink' ? await readlink(abs) : '',
      });
      if (type === 'directory') await walk(path);
    }
  };
  await walk('');
  return out;
}

/** `path: field ours ≠ pulled` for every difference; empty when the trees match. */
function differences(ours: Map<string, Field>, theirs: Map<string, Field>): string[] {
  const found: string[] = [];
  for (const [path, field] of theirs) {
    const mine = ours.get(path);
    if (mine === undefined) {
      found.push(`${path}: missing from the preload`);
      continue;
    }
    for (const key of Object.keys(field) as (keyof Field)[])
      if (mine[key] !== field[key]) found.push(`${path}: ${key} ${mine[key]} ≠ pulled ${field[key]}`);
  }
  for (const path of ours.keys()) if (!theirs.has(path)) found.push(`${path}: only in the preload`);
  return found;
}

async function xattrs(root: string): Promise<string> {
  const dump = await run('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root });
  // One block per file, in directory order, which differs between filesystems: sorted.
  return dump.stdout
    .split('\n\n')
    .map((block) => block.trim())
    .filter(Boolean)
    .sort()
    .join('\n\n');
}

/** chain ID → diff directory, from a data root's layerdb. */
async function diffDirs(dataRoot: string): Promise<Map<string, string>> {
  const db = join(dataRoot, 'image', 'overlay2', 'layerdb', 'sha256');
  const map = new Map<string, string>();
  for (const chain of await readdir(db)) {
    const cacheId = (await readFile(join(db, chain, 'cache-id'), 'utf8')).trim();
    map.set(chain, join(dataRoot, 'overlay2', cacheId, 'diff'));
  }
  return map;
}

beforeAll(async () => {
  ensureTools(TOOLS);
  if (process.getuid?.() !== 0) throw new Error('This acceptance runs dockerd and mounts a partition: run as root.');
  work = await createTempDir('etch-fidelity-e2e-');
  registry = await startRegistryServer();
  engine = await startDockerd();
  const context = work.join('context');
  await buildContext(context);
  refs.built = `${registry.host}/fidelity/built:v1`;
  refs.rootfs = `${registry.host}/fidelity/rootfs:v1`;
  await engine.docker(['build', '--network', 'none', '-t', refs.built, context], {
    env: { ...process.env, DOCKER_BUILDKIT: '0' },
  });
  await rootfsTar(work.join('rootfs'), work.join('rootfs.tar'));
  await engine.docker(['import', '-c', 'CMD ["/bin/busybox","sh"]', work.join('rootfs.tar'), refs.rootfs]);
  // What a device does: pull from the registry. The images are pushed, removed and pulled back.
  for (const ref of Object.values(refs)) await engine.docker(['push', ref]);
  await engine.docker(['rmi', ...Object.values(refs)]);
  for (const ref of Object.values(refs)) await engine.docker(['pull', ref]);

  const base = work.join('balena.img');
  await makeBalenaLikeImage(base, { dataMiB: 4 });
  const etch = work.join('fidelity.etch');
  const created = await etchBinary([
    'create',
    '--base',
    base,
    ...Object.values(refs).flatMap((ref) => ['--image', ref]),
    '--platform',
    formatPlatform(hostPlatform()),
    '--ignore-base-repositories',
    '--cache-dir',
    work.join('cache'),
    '-o',
    etch,
  ]);
  if (created.code !== 0) throw new Error(`etch create exited with ${created.code}:\n${created.stderr}`);
  const disk = work.join('disk.img');
  const applied = await etchBinary(['apply', etch, '--output', disk, '--verify']);
  if (applied.code !== 0) throw new Error(`etch apply exited with ${applied.code}:\n${applied.stderr}`);
  const table = JSON.parse((await run('sfdisk', ['--json', disk])).stdout) as {
    partitiontable: { partitions: { node: string; start: number; size: number }[] };
  };
  const data = table.partitiontable.partitions.find((p) => p.node.endsWith(`img${DATA}`));
  if (data === undefined) throw new Error('no data partition on the applied disk');
  mountPoint = work.join('mnt');
  await mkdir(mountPoint);
  await run('mount', ['-o', `loop,offset=${data.start * SECTOR},sizelimit=${data.size * SECTOR}`, disk, mountPoint]);
  preloaded = await startDockerd({ dataRoot: join(mountPoint, 'docker') });
}, 300_000);

afterAll(async () => {
  await preloaded?.stop();
  if (mountPoint !== undefined) {
    const unmounted = await run('umount', [mountPoint], { allowFailure: true });
    if (unmounted.code !== 0) await run('umount', ['-l', mountPoint], { allowFailure: true });
  }
  await engine?.stop();
  await registry?.stop();
  await work?.remove();
}, 60_000);

describe('images built by the engine and a generated rootfs, preloaded vs pulled', () => {
  it('lists the same images, IDs and digests', async () => {
    const host = (registry as RegistryServer).host;
    const ours = await engineImageRows(preloaded as Dockerd, host);
    expect(ours).toHaveLength(2);
    expect(ours).toEqual(await engineImageRows(engine as Dockerd, host));
  });

  it('has every layer diff/ equal to the pulled one: type, mode, owner, size, links, mtime (ns), device, content, target, xattrs', async () => {
    const ours = await diffDirs(join(mountPoint as string, 'docker'));
    const theirs = await diffDirs((engine as Dockerd).dataRoot);
    expect([...ours.keys()].sort(), 'layer chain IDs').toEqual([...theirs.keys()].sort());
    let files = 0;
    for (const [chain, pulledDir] of theirs) {
      const [mine, pulled] = await Promise.all([describeTree(ours.get(chain) as string), describeTree(pulledDir)]);
      files += pulled.size;
      expect(differences(mine, pulled), `layer ${chain}`).toEqual([]);
      expect(await xattrs(ours.get(chain) as string), `xattrs of layer ${chain}`).toBe(await xattrs(pulledDir));
    }
    expect(files).toBeGreaterThan(ROOTFS_FILES);
  });

  it('carries sub-second times, the epoch for a pre-epoch time, and the FIFO and devices the build made', async () => {
    const ours = await diffDirs(join(mountPoint as string, 'docker'));
    const all = new Map<string, Field>();
    for (const dir of ours.values()) for (const [path, field] of await describeTree(dir)) all.set(path, field);
    // busybox's touch -r keeps whole seconds; the rootfs's GNU tar PAX times carry the fractions.
    const fractional = [...all.values()].filter((f) => f.mtime !== '' && !f.mtime.endsWith('000000000'));
    expect(fractional.length, 'entries with a sub-second mtime').toBeGreaterThan(ROOTFS_FILES / 2);
    expect(all.get('data/pre-epoch')?.mtime, 'data/pre-epoch mtime').toBe('0');
    expect(all.get('data/fifo')?.type, 'data/fifo').toBe('fifo');
    expect(all.get('data/loop'), 'data/loop').toMatchObject({ type: 'block', owner: '1000:1000' });
    expect(all.get('data/null')?.type, 'data/null').toBe('char');
  });

  it('runs a container of each image, and the engine logs no layer error', async () => {
    for (const ref of Object.values(refs)) {
      const out = await (preloaded as Dockerd).docker([
        'run',
        '--rm',
        '--network',
        'none',
        '--entrypoint',
        '/bin/busybox',
        ref,
        'cat',
        ref === refs.built ? '/data/replace-me' : '/usr/d0/e0/f0.txt',
      ]);
      expect(out.stdout, ref).toBe(ref === refs.built ? 'new\n' : 'file 0\n');
    }
    expect(await (preloaded as Dockerd).log()).not.toMatch(/failed to load layer|not restoring image|invalid image/i);
  });
});
