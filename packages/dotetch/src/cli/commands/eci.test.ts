/** `etch eci push|pull` against a real docker-registry, and the round trip push → create --base eci: → apply. */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { makeBalenaLikeImage, run, startRegistryServer, type RegistryServer } from '@etch/test-utils/system';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
let registry: RegistryServer;

const etch = (args: string[]) => runCli(args, { cwd: dir.path });
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const shaOf = async (path: string) => sha(await readFile(path));

beforeAll(async () => {
  dir = await createTempDir('etch-eci-cli-');
  registry = await startRegistryServer();
  await makeBalenaLikeImage(dir.join('balena.img'), { dataMiB: 4 });
  await writeFile(dir.join('vmlinuz'), randomBytes(50_000));
  await writeFile(dir.join('notes.txt'), 'release notes\n');
  await writeFile(dir.join('arm.img'), randomBytes(30_000));
  await mkdir(dir.join('boot'), { recursive: true });
  await writeFile(dir.join('boot', 'config.json'), '{"hostname":"from-eci"}\n');
}, 60_000);
afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
});

describe('etch eci', () => {
  it('push → pull gives the same files; push → create --base eci: → apply flashes the pushed disk', async () => {
    const ref = `${registry.host}/eci/balenaos:2.58.4`;
    const pushed = await etch([
      'eci',
      'push',
      '--root',
      'balena.img:raw',
      '--kernel',
      'vmlinuz',
      '--other',
      'notes.txt',
      '--platform',
      'linux/arm64',
      '--annotation',
      'org.opencontainers.image.version=2.58.4',
      ref,
      '--json',
    ]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const result = JSON.parse(pushed.stdout);
    expect(result, 'push --json').toMatchObject({
      schemaVersion: 1,
      reference: ref,
      manifests: [{ platform: 'linux/arm64' }],
    });
    const manifest = JSON.parse(
      (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`])).stdout,
    );
    expect(manifest.annotations, 'manifest annotations').toEqual({ 'org.opencontainers.image.version': '2.58.4' });
    expect(
      manifest.layers.map(
        (l: { annotations: Record<string, string> }) => l.annotations['org.opencontainers.image.title'],
      ),
      'layer titles',
    ).toEqual(['kernel', 'disk-root-balena.img', 'notes.txt']);

    const pulled = await etch(['eci', 'pull', ref, '--dir', 'pulled']);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout, 'pull report').toContain(`wrote    ${dir.join('pulled', 'disk-root-balena.img')}`);
    expect(await shaOf(dir.join('pulled', 'disk-root-balena.img')), 'pulled root disk').toBe(
      await shaOf(dir.join('balena.img')),
    );
    expect(await shaOf(dir.join('pulled', 'kernel')), 'pulled kernel').toBe(await shaOf(dir.join('vmlinuz')));
    expect(await readFile(dir.join('pulled', 'notes.txt'), 'utf8'), 'pulled other file').toBe('release notes\n');

    const created = await etch([
      'create',
      '--base',
      `eci:${registry.host}/eci/balenaos@^2.58`,
      '--inject',
      '1:boot',
      '-o',
      'eci.etch',
      '--json',
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout).baseImage, 'create: base image').toMatchObject({
      name: 'balena.img',
      size: (await stat(dir.join('balena.img'))).size,
      source: { kind: 'eci', resolvedVersion: '2.58.4' },
    });
    const applied = await etch(['apply', 'eci.etch', '-o', 'flashed.img', '--verify', '--json']);
    expect(applied.code, applied.stderr).toBe(0);
    expect(JSON.parse(applied.stdout), 'apply summary').toMatchObject({
      baseImage: { name: 'balena.img' },
      verified: true,
      partitions: [{ number: 1, filesystem: 'fat', entries: 1 }],
    });
    // The flashed disk is the pushed disk plus the injected file: the same size, and config.json on the boot partition.
    expect((await stat(dir.join('flashed.img'))).size, 'flashed size').toBe((await stat(dir.join('balena.img'))).size);
  });

  it('pushes an index with one --platform per ECI, pulls by --platform, and refuses bad input with exit 2', async () => {
    const ref = `${registry.host}/eci/multi:1`;
    const pushed = await etch([
      'eci',
      'push',
      '--format',
      'legacy',
      '--platform',
      'linux/amd64',
      '--root',
      'balena.img:raw',
      '--platform',
      'linux/arm64',
      '--root',
      'arm.img:raw',
      '--kernel',
      'vmlinuz',
      ref,
      '-q',
    ]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const index = JSON.parse(
      (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`])).stdout,
    );
    expect(index.manifests.map((m: { digest: string }) => m.digest).length, 'index entries').toBe(2);
    expect(sha(Buffer.from(JSON.stringify(index))), 'printed digest').toBe(pushed.stdout.trim().slice(7));
    const pulled = await etch(['eci', 'pull', ref, '--platform', 'linux/arm64', '--dir', 'arm', '--json']);
    expect(pulled.code, pulled.stderr).toBe(0);
    const json = JSON.parse(pulled.stdout);
    expect(json, 'pull --json').toMatchObject({ platform: 'linux/arm64', shape: 'legacy' });
    expect(json.files.map((f: { name: string }) => f.name).sort(), 'arm64 files').toEqual([
      'disk-root-arm.img',
      'kernel',
    ]);
    expect(await shaOf(dir.join('arm', 'disk-root-arm.img')), 'arm64 root disk').toBe(await shaOf(dir.join('arm.img')));

    const badType = await etch(['eci', 'push', '--root', 'balena.img:vdi', `${registry.host}/eci/bad:1`]);
    expect(badType.code, 'exit code of an unknown disk type').toBe(2);
    expect(badType.stderr, 'message of an unknown disk type').toContain('vdi');
    const misplaced = await etch([
      'eci',
      'push',
      '--root',
      'balena.img:raw',
      '--platform',
      'linux/amd64',
      '--platform',
      'linux/arm64',
      '--root',
      'arm.img:raw',
      `${registry.host}/eci/bad:1`,
    ]);
    expect(misplaced.code, 'exit code of a file before the first of several --platform').toBe(2);
  });
});
