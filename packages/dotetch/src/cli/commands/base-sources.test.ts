/** `etch create --base` from a zip (extract and passthrough), a compressed image and a URL, through the CLI. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  makeBalenaLikeImage,
  pushOciArtifact,
  run,
  startRegistryServer,
  type RegistryServer,
} from '@etch/test-utils/system';
import { fileURLToPath } from 'node:url';
import { runCli } from '../in-process.test.helper.js';

const bin = fileURLToPath(new URL('../../../bin/etch.js', import.meta.url));

let dir: TempDir;
let registry: RegistryServer;
let server: Server;
let baseUrl: string;
let size: number;

const etch = (args: string[]) => runCli(args, { cwd: dir.path, env: { HOME: dir.path } });

async function inspect(file: string) {
  const result = await etch(['inspect', file, '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as { baseImage: { name: string; container: string; size: number } };
}

beforeAll(async () => {
  dir = await createTempDir('etch-base-sources-');
  await makeBalenaLikeImage(dir.join('balena.img'), { dataMiB: 4 });
  size = (await stat(dir.join('balena.img'))).size;
  await run('zip', ['-q', '-9', dir.join('balena.zip'), 'balena.img'], { cwd: dir.path });
  await run('sh', ['-c', `xz -k -T1 -c balena.img > balena.img.xz`], { cwd: dir.path });
  // A plain static server, with Range support as CDNs have it.
  server = createServer((req, res) => {
    const path = dir.join((req.url ?? '/').slice(1));
    stat(path).then(
      (info) => {
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        const start = range ? Number(range[1]) : 0;
        const end = range && range[2] ? Number(range[2]) : info.size - 1;
        res.writeHead(range ? 206 : 200, {
          'content-length': end - start + 1,
          'accept-ranges': 'bytes',
          etag: `"${info.mtimeMs}"`,
          ...(range ? { 'content-range': `bytes ${start}-${end}/${info.size}` } : {}),
        });
        if (req.method === 'HEAD') res.end();
        else createReadStream(path, { start, end }).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  baseUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  // The OS image as an edge-containers artifact (lfedge media types, the disk-root role), in two versions.
  registry = await startRegistryServer();
  const disk = await readFile(dir.join('balena.img'));
  for (const tag of ['2.58.3_rev1', '2.60.1', '3.0.0-beta.1']) {
    await pushOciArtifact(
      dir.path,
      registry.host,
      'eci/balena',
      tag,
      { mediaType: 'application/vnd.lfedge.eci.config.v1+json', data: Buffer.from('{}') },
      [
        {
          mediaType: 'application/vnd.lfedge.disk.layer.v1+raw',
          data: disk,
          annotations: { 'org.lfedge.eci.role': 'disk-root', 'org.opencontainers.image.title': 'disk-root-balena.img' },
        },
      ],
    );
  }
}, 120_000);
afterAll(async () => {
  await registry?.stop();
  await new Promise((resolve) => server?.close(resolve));
  await dir?.remove();
});

describe('etch create --base', () => {
  it('extracts the image from a zip by default, so the .etch holds the raw image', async () => {
    expect((await etch(['create', '--base', 'balena.zip', '-o', 'zip.etch', '-q'])).code).toBe(0);
    expect((await inspect('zip.etch')).baseImage).toEqual({ name: 'balena.img', container: 'raw', size });
  });

  it('keeps the zip as it is with --base-mode passthrough', async () => {
    expect(
      (await etch(['create', '--base', 'balena.zip', '--base-mode', 'passthrough', '-o', 'pass.etch', '-q'])).code,
    ).toBe(0);
    expect((await inspect('pass.etch')).baseImage).toEqual({
      name: 'balena.zip',
      container: 'zip',
      size: (await stat(dir.join('balena.zip'))).size,
    });
  });

  it('decompresses an .img.xz base image', async () => {
    // The installed binary, not the in-process CLI: the xz decoder is loaded lazily, and only Node itself
    // shows how a CommonJS module arrives through import().
    await run('node', [bin, 'create', '--base', 'balena.img.xz', '-o', 'xz.etch', '-q'], { cwd: dir.path });
    expect((await inspect('xz.etch')).baseImage).toEqual({ name: 'balena.img', container: 'raw', size });
  });

  it('fetches a base image from a URL, and a zip at a URL, into the cache', async () => {
    const url = await etch([
      'create',
      '--base',
      `${baseUrl}/balena.img`,
      '--cache-dir',
      'cache',
      '-o',
      'url.etch',
      '-q',
    ]);
    expect(url.code, url.stderr).toBe(0);
    expect((await inspect('url.etch')).baseImage).toEqual({ name: 'balena.img', container: 'raw', size });
    const zip = await etch([
      'create',
      '--base',
      `${baseUrl}/balena.zip`,
      '--cache-dir',
      'cache',
      '-o',
      'urlzip.etch',
      '-q',
    ]);
    expect(zip.code, zip.stderr).toBe(0);
    expect((await inspect('urlzip.etch')).baseImage).toEqual({ name: 'balena.img', container: 'raw', size });
    const listed = JSON.parse((await etch(['cache', 'ls', '--cache-dir', 'cache', '--json'])).stdout);
    expect(listed.baseImages.length).toBeGreaterThanOrEqual(1);
  });

  it('pulls the base image from an ECI artifact, choosing the version like balena-image-manager', async () => {
    const recommended = await etch([
      'create',
      '--base',
      `eci:${registry.host}/eci/balena@recommended`,
      '--cache-dir',
      'cache',
      '-o',
      'eci.etch',
      '--json',
    ]);
    expect(recommended.code, recommended.stderr).toBe(0);
    expect((await inspect('eci.etch')).baseImage).toEqual({ name: 'balena.img', container: 'raw', size });
    // recommended: the newest release that is not a pre-release.
    expect(JSON.parse(recommended.stdout).baseImage.source).toMatchObject({
      kind: 'eci',
      resolvedVersion: '2.60.1',
      fromCache: false,
    });
    const ranged = await etch([
      'create',
      '--base',
      `eci:${registry.host}/eci/balena@~2.58`,
      '--cache-dir',
      'cache',
      '-o',
      'eci2.etch',
      '--json',
    ]);
    expect(ranged.code, ranged.stderr).toBe(0);
    expect(JSON.parse(ranged.stdout).baseImage.source).toMatchObject({ kind: 'eci', resolvedVersion: '2.58.3_rev1' });
    const again = await etch([
      'create',
      '--base',
      `eci:${registry.host}/eci/balena@recommended`,
      '--cache-dir',
      'cache',
      '-o',
      'eci4.etch',
      '--json',
    ]);
    expect(JSON.parse(again.stdout).baseImage.source).toMatchObject({ resolvedVersion: '2.60.1', fromCache: true });
    const none = await etch(['create', '--base', `eci:${registry.host}/eci/balena@^4`, '-o', 'eci3.etch']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^etch: ETCH_NOT_FOUND: /m);
  });

  it('refuses an unknown mode, and preloading onto a base it cannot read without --repositories', async () => {
    expect((await etch(['create', '--base', 'balena.zip', '--base-mode', 'copy', '-o', 'x.etch'])).code).toBe(2);
    const url = await etch([
      'create',
      '--base',
      `${baseUrl}/balena.img`,
      '--image',
      'alpine',
      '--platform',
      'linux/amd64',
      '-o',
      'x.etch',
    ]);
    expect(url.code).toBe(2);
    expect(url.stderr).toMatch(/--repositories FILE/);
  });
});
