/** `pushEci` and `pullEci` against a real docker-registry (open, htpasswd, token), read back with skopeo. */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '@etch/registry';
import { collect, craftTar, createTempDir, rejectionOf, sha256Of, type TempDir } from '@etch/test-utils';
import {
  pushOciArtifact,
  run,
  startBasicAuthRegistry,
  startFaultProxy,
  startRegistryServer,
  startTokenAuthRegistry,
  type RegistryServer,
} from '@etch/test-utils/system';
import { EciAnnotation, EciMediaType } from './eci.js';
import { pullEci } from './eci-pull.js';
import { parseEciDisk, pushEci, type EciImage } from './eci-push.js';
import { openBaseImage } from './open.js';

let registry: RegistryServer;
let dir: TempDir;
let client: RegistryClient;
const files = new Map<string, Buffer>();

const sha = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function file(name: string, data: Buffer): Promise<string> {
  const path = dir.join('in', name);
  await writeFile(path, data);
  files.set(name, data);
  return path;
}

/** The manifest as the registry serves it, read by skopeo (not by the client under test). */
async function rawManifest(ref: string, extra: string[] = []): Promise<Record<string, any>> {
  const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', ...extra, `docker://${ref}`]);
  return JSON.parse(stdout) as Record<string, any>;
}

/** Every file of `path` by name, with its bytes. */
async function tree(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(path, { recursive: true, withFileTypes: true }))
    if (entry.isFile())
      out[`${entry.parentPath.slice(path.length + 1) || '.'}/${entry.name}`.replace(/^\.\//, '')] = sha(
        await readFile(`${entry.parentPath}/${entry.name}`),
      );
  return out;
}

let image: EciImage;

beforeAll(async () => {
  dir = await createTempDir('etch-eci-push-');
  registry = await startRegistryServer();
  client = new RegistryClient({ dockerConfig: false });
  await mkdir(dir.join('in'), { recursive: true });
  image = {
    kernel: await file('vmlinuz', randomBytes(70_000)),
    initrd: await file('initrd.cpio', randomBytes(30_000)),
    root: { path: await file('root.img', randomBytes(300_000)), type: 'raw' },
    disks: [
      { path: await file('data.qcow2', randomBytes(20_000)), type: 'qcow2' },
      { path: await file('tools.iso', randomBytes(10_000)), type: 'iso' },
    ],
    other: [await file('notes.txt', Buffer.from('first other\n')), await file('extra.bin', randomBytes(5000))],
    platform: 'linux/arm64',
  };
}, 60_000);

afterAll(async () => {
  await client?.close();
  await registry?.stop();
  await dir?.remove();
});

const expectedNames = {
  kernel: 'vmlinuz',
  initrd: 'initrd.cpio',
  'disk-root-root.img': 'root.img',
  'disk-0-data.qcow2': 'data.qcow2',
  'disk-1-tools.iso': 'tools.iso',
  'notes.txt': 'notes.txt',
  'extra.bin': 'extra.bin',
};

function expectSameFiles(pulled: Record<string, string>): void {
  for (const [name, source] of Object.entries(expectedNames))
    expect(pulled[name], `pulled file ${name} (from ${source})`).toBe(sha(files.get(source) as Buffer));
}

describe('pushEci: artifacts format', () => {
  it('writes lf-edge media types, annotations, labels and file names that skopeo reads back; pull is byte-identical', async () => {
    const ref = `${registry.host}/eci/art:1.0.0`;
    const pushed = await pushEci(client, ref, image);
    const manifest = await rawManifest(ref);
    expect(sha(Buffer.from(JSON.stringify(manifest))), 'manifest digest').toBe(pushed.digest);
    expect(manifest['schemaVersion'], 'schemaVersion (b4)').toBe(2);
    expect(manifest['mediaType'], 'manifest mediaType').toBe('application/vnd.oci.image.manifest.v1+json');
    const layers = manifest['layers'] as { mediaType: string; annotations: Record<string, string> }[];
    expect(
      layers.map((l) => [
        l.mediaType,
        l.annotations[EciAnnotation.MEDIA_TYPE],
        l.annotations[EciAnnotation.ROLE],
        l.annotations[EciAnnotation.TITLE],
      ]),
      'layers: [mediaType, org.lfedge.eci.mediaType, role, title]',
    ).toEqual([
      [
        'application/vnd.lfedge.eci.kernel.layer.v1+kernel',
        'application/vnd.lfedge.eci.kernel.layer.v1+kernel',
        'kernel',
        'kernel',
      ],
      [
        'application/vnd.lfedge.eci.initrd.layer.v1+cpio',
        'application/vnd.lfedge.eci.initrd.layer.v1+cpio',
        'initrd',
        'initrd',
      ],
      [
        'application/vnd.lfedge.disk.layer.v1+raw',
        'application/vnd.lfedge.disk.layer.v1+raw',
        'disk-root',
        'disk-root-root.img',
      ],
      [
        'application/vnd.lfedge.disk.layer.v1+qcow2',
        'application/vnd.lfedge.disk.layer.v1+qcow2',
        'disk-additional',
        'disk-0-data.qcow2',
      ],
      [
        'application/vnd.lfedge.disk.layer.v1+iso',
        'application/vnd.lfedge.disk.layer.v1+iso',
        'disk-additional',
        'disk-1-tools.iso',
      ],
      ['application/vnd.lfedge.eci.layer.v1', 'application/vnd.lfedge.eci.layer.v1', '', 'notes.txt'],
      ['application/vnd.lfedge.eci.layer.v1', 'application/vnd.lfedge.eci.layer.v1', '', 'extra.bin'],
    ]);
    // The generated config: platform, labels saying where each file is (every "other" one too: b6), diff_ids (b2).
    const configDescriptor = manifest['config'] as { mediaType: string; digest: string };
    expect(configDescriptor.mediaType, 'config mediaType').toBe('application/vnd.oci.image.config.v1+json');
    const config = JSON.parse((await client.fetchBlob(ref, manifest['config'])).toString()) as Record<string, any>;
    expect(config, 'generated config').toMatchObject({ os: 'linux', architecture: 'arm64' });
    expect(config['created'], 'created (none: reproducible, b13)').toBeUndefined();
    expect(config['config'].Labels, 'config labels').toEqual({
      'org.lfedge.eci.artifact.kernel': '/kernel',
      'org.lfedge.eci.artifact.initrd': '/initrd',
      'org.lfedge.eci.artifact.root': '/disk-root-root.img',
      'org.lfedge.eci.artifact.disk-0': '/disk-0-data.qcow2',
      'org.lfedge.eci.artifact.disk-1': '/disk-1-tools.iso',
      'org.lfedge.eci.other': '/notes.txt',
      'org.lfedge.eci.other-0': '/notes.txt',
      'org.lfedge.eci.other-1': '/extra.bin',
    });
    expect(config['rootfs'].diff_ids, 'diff_ids are the layer digests').toEqual(layers.map((l: any) => l.digest));

    const out = dir.join('pull-art');
    const pulled = await pullEci(client, ref, { dir: out });
    expect(pulled.shape, 'shape').toBe('artifacts');
    expect(pulled.manifestDigest, 'manifestDigest').toBe(pushed.digest);
    expectSameFiles(await tree(out));
    expect(Object.keys(await tree(out)).length, 'files written (no temporaries left)').toBe(7);

    // The same push again: every blob is already there, the digest is the same.
    const again = await pushEci(client, ref, image);
    expect(again.digest, 'digest of a second push').toBe(pushed.digest);
    expect(new Set(again.blobs.map((b) => b.how)), 'how blobs got there on a second push').toEqual(
      new Set(['existed']),
    );
    // A second pull keeps what is there.
    const repull = await pullEci(client, ref, { dir: out });
    expect(new Set(repull.files.map((f) => f.how)), 'how files got there on a second pull').toEqual(
      new Set(['existed']),
    );
  });

  it('uses a config file as it is (config.json on pull) and puts annotations on the manifest', async () => {
    const ref = `${registry.host}/eci/conf:1`;
    const config = await file('config.json', Buffer.from('{"name":"my-os","version":"1"}'));
    await pushEci(client, ref, { root: image.root, config }, { annotations: { 'org.example.os': 'my-os' } });
    const manifest = await rawManifest(ref);
    expect(manifest['annotations'], 'manifest annotations').toEqual({ 'org.example.os': 'my-os' });
    expect(manifest['config'], 'config descriptor').toMatchObject({
      mediaType: EciMediaType.CONFIG,
      annotations: { [EciAnnotation.MEDIA_TYPE]: EciMediaType.CONFIG, [EciAnnotation.TITLE]: 'config.json' },
    });
    const out = dir.join('pull-conf');
    await pullEci(client, ref, { dir: out });
    expect(await readFile(dir.join('pull-conf', 'config.json'), 'utf8'), 'config.json pulled').toBe(
      '{"name":"my-os","version":"1"}',
    );
  });

  it('is an eci: base image, for the disk-root layer, in both formats', async () => {
    for (const format of ['artifacts', 'legacy'] as const) {
      const ref = `${registry.host}/eci/base-${format}`;
      await pushEci(client, `${ref}:2.58.4`, { root: image.root }, { format });
      const opened = await openBaseImage(`eci:${ref}@^2.58`, { registry: client, cache: false });
      expect(opened.name, `${format}: base image name`).toBe('root.img');
      expect((await sha256Of(opened.stream)).sha, `${format}: base image bytes`).toBe(
        sha(files.get('root.img') as Buffer).slice(7),
      );
    }
  });
});

describe('pushEci: legacy format', () => {
  it('tar+gzips each file into an OCI layer with correct diff_ids; pull unpacks the same bytes', async () => {
    const ref = `${registry.host}/eci/legacy:1`;
    const pushed = await pushEci(client, ref, image, { format: 'legacy' });
    const manifest = await rawManifest(ref);
    const layers = manifest['layers'] as { mediaType: string; digest: string; annotations: Record<string, string> }[];
    expect(new Set(layers.map((l) => l.mediaType)), 'legacy layer media types').toEqual(
      new Set(['application/vnd.oci.image.layer.v1.tar+gzip']),
    );
    expect(layers[2]?.annotations, 'root disk layer annotations').toEqual({
      [EciAnnotation.MEDIA_TYPE]: 'application/vnd.lfedge.disk.layer.v1+raw',
      [EciAnnotation.ROLE]: 'disk-root',
      [EciAnnotation.TITLE]: 'disk-root-root.img',
    });
    const config = JSON.parse((await client.fetchBlob(ref, manifest['config'])).toString()) as Record<string, any>;
    const diffIds: string[] = [];
    for (const layer of layers) {
      const blob = await collect(client.openBlob(ref, layer as any));
      const tar = gunzipSync(blob);
      diffIds.push(sha(tar));
      // One entry named by the title, owned by root, mode 0644, mtime 0.
      expect(tar.subarray(0, 100).toString().replace(/\0+$/, ''), 'tar entry name').toBe(
        layer.annotations[EciAnnotation.TITLE],
      );
    }
    expect(config['rootfs'].diff_ids, 'diff_ids are the sha256 of each uncompressed tar (b2)').toEqual(diffIds);
    const out = dir.join('pull-legacy');
    const pulled = await pullEci(client, ref, { dir: out });
    expect(pulled.shape, 'shape').toBe('legacy');
    expectSameFiles(await tree(out));
    const again = await pushEci(client, ref, image, { format: 'legacy' });
    expect(again.digest, 'legacy push is reproducible').toBe(pushed.digest);
  });

  it("pulls the legacy shape of lf-edge's README sample: uncompressed tar layers, an annotated config", async () => {
    const layer = async (name: string, content: Buffer, role: string, type: string) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      data: await craftTar([{ name, content }]),
      annotations: {
        [EciAnnotation.MEDIA_TYPE]: type,
        [EciAnnotation.ROLE]: role,
        [EciAnnotation.TITLE]: name,
      },
    });
    await pushOciArtifact(
      dir.path,
      registry.host,
      'eci/sample',
      'ubuntu-1804-11715',
      {
        mediaType: EciMediaType.OCI_CONFIG,
        data: Buffer.from('{"cmd":"x"}\n'),
        annotations: { [EciAnnotation.MEDIA_TYPE]: EciMediaType.CONFIG, [EciAnnotation.TITLE]: 'config.json' },
      },
      [
        await layer('kernel', Buffer.from('kern'), 'kernel', EciMediaType.KERNEL),
        await layer('initrd', Buffer.from('init'), 'initrd', EciMediaType.INITRD),
        await layer('disk-root-root.raw', Buffer.from('root!'), 'disk-root', `${EciMediaType.DISK_PREFIX}raw`),
      ],
    );
    const out = dir.join('pull-sample');
    const pulled = await pullEci(client, `${registry.host}/eci/sample:ubuntu-1804-11715`, { dir: out });
    expect(pulled.shape, 'shape').toBe('legacy');
    expect(await tree(out), 'files of the sample').toEqual({
      kernel: sha(Buffer.from('kern')),
      initrd: sha(Buffer.from('init')),
      'disk-root-root.raw': sha(Buffer.from('root!')),
      'config.json': sha(Buffer.from('{"cmd":"x"}\n')),
    });
  });

  it('refuses legacy entries whose names leave the directory (zip-slip, absolute), writing nothing', async () => {
    for (const [tag, name] of [
      ['dotdot', '../escaped.img'],
      ['absolute', '/tmp/escaped.img'],
    ] as const) {
      await pushOciArtifact(
        dir.path,
        registry.host,
        'eci/hostile',
        tag,
        { mediaType: EciMediaType.OCI_CONFIG, data: Buffer.from('{}') },
        [
          {
            mediaType: EciMediaType.LEGACY_LAYER,
            data: gzipSync(await craftTar([{ name, content: Buffer.from('evil') }])),
            annotations: { [EciAnnotation.ROLE]: 'disk-root', [EciAnnotation.TITLE]: 'disk-root-x.img' },
          },
        ],
      );
      const out = dir.join('hostile', tag, 'out');
      const error = await rejectionOf(pullEci(client, `${registry.host}/eci/hostile:${tag}`, { dir: out }));
      expect(error, `${name}: error`).toMatchObject({ code: 'ETCH_UNSAFE_PATH' });
      expect(await readdir(dir.join('hostile', tag)), `${name}: nothing beside the pull directory`).toEqual(['out']);
      expect(await readdir(out), `${name}: nothing in it`).toEqual([]);
    }
    await expect(stat('/tmp/escaped.img'), 'nothing at the absolute path').rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses to write through a symlink in the pull directory', async () => {
    await pushOciArtifact(
      dir.path,
      registry.host,
      'eci/nested',
      '1',
      { mediaType: EciMediaType.OCI_CONFIG, data: Buffer.from('{}') },
      [
        {
          mediaType: EciMediaType.LEGACY_LAYER,
          data: gzipSync(await craftTar([{ name: 'bits/rootfs.img', content: Buffer.from('disk') }])),
          annotations: { [EciAnnotation.ROLE]: 'disk-root', [EciAnnotation.TITLE]: 'disk-root-rootfs.img' },
        },
      ],
    );
    const outside = dir.join('outside');
    const out = dir.join('pull-symlink');
    await mkdir(outside, { recursive: true });
    await mkdir(out, { recursive: true });
    await symlink(outside, dir.join('pull-symlink', 'bits'));
    const error = await rejectionOf(pullEci(client, `${registry.host}/eci/nested:1`, { dir: out }));
    expect(error, 'pull through a symlinked folder').toMatchObject({ code: 'ETCH_UNSAFE_PATH' });
    expect(await readdir(outside), 'nothing written where the symlink points').toEqual([]);
    const fine = await pullEci(client, `${registry.host}/eci/nested:1`, { dir: dir.join('pull-nested') });
    expect(
      fine.files.map((f) => f.name),
      'a legacy entry in a folder, without a symlink in the way',
    ).toEqual(['bits/rootfs.img']);
  });

  it('reads a docker-built image whose config labels name the files, and refuses a plain image', async () => {
    const rootfs = randomBytes(50_000);
    await pushOciArtifact(
      dir.path,
      registry.host,
      'eci/labelled',
      '1',
      {
        mediaType: EciMediaType.OCI_CONFIG,
        data: Buffer.from(
          JSON.stringify({
            config: {
              Labels: {
                [EciAnnotation.ROOT_LABEL]: '/bits/rootfs.img',
                'org.lfedge.eci.artifact.kernel': '/boot/kernel',
              },
            },
          }),
        ),
      },
      [
        {
          mediaType: EciMediaType.LEGACY_LAYER,
          data: gzipSync(
            await craftTar([
              { name: 'bits/rootfs.img', content: randomBytes(10) },
              { name: 'boot/kernel', content: Buffer.from('k') },
            ]),
          ),
        },
        {
          mediaType: EciMediaType.LEGACY_LAYER,
          data: gzipSync(await craftTar([{ name: 'bits/rootfs.img', content: rootfs }])),
        },
      ],
    );
    const out = dir.join('pull-labelled');
    const pulled = await pullEci(client, `${registry.host}/eci/labelled:1`, { dir: out });
    expect(pulled.shape, 'shape').toBe('labels');
    expect(await tree(out), 'files from the labels, the upper layer winning').toEqual({
      'disk-root-rootfs.img': sha(rootfs),
      kernel: sha(Buffer.from('k')),
    });
    await pushOciArtifact(
      dir.path,
      registry.host,
      'eci/plain',
      '1',
      { mediaType: EciMediaType.OCI_CONFIG, data: Buffer.from('{"config":{}}') },
      [
        {
          mediaType: EciMediaType.LEGACY_LAYER,
          data: gzipSync(await craftTar([{ name: 'hello', content: Buffer.from('hi') }])),
        },
      ],
    );
    expect(
      await rejectionOf(pullEci(client, `${registry.host}/eci/plain:1`, { dir: dir.join('pull-plain') })),
      'plain image',
    ).toMatchObject({
      code: 'ETCH_UNSUPPORTED_MANIFEST',
      message: expect.stringContaining('plain OCI image'),
    });
  });
});

describe('pushEci: platforms, checks, faults and auth', () => {
  it('pushes an index of two platforms; pull picks the one asked for', async () => {
    const arm = await file('arm.img', randomBytes(40_000));
    const amd = await file('amd.img', randomBytes(40_000));
    const ref = `${registry.host}/eci/multi:1`;
    const pushed = await pushEci(client, ref, [
      { root: { path: amd, type: 'raw' }, platform: 'linux/amd64' },
      { root: { path: arm, type: 'raw' }, platform: 'linux/arm64' },
    ]);
    const index = await rawManifest(ref);
    expect(index['mediaType'], 'index mediaType').toBe('application/vnd.oci.image.index.v1+json');
    expect(
      index['manifests'].map((m: any) => `${m.platform.os}/${m.platform.architecture}`),
      'index platforms',
    ).toEqual(['linux/amd64', 'linux/arm64']);
    const out = dir.join('pull-arm');
    const pulled = await pullEci(client, ref, { dir: out, platform: 'linux/arm64' });
    expect(pulled.platform, 'platform chosen').toBe('linux/arm64');
    expect(pulled.manifestDigest, 'manifest of arm64').toBe(pushed.manifests[1]?.digest);
    expect(await tree(out), 'arm64 files').toEqual({ 'disk-root-arm.img': sha(files.get('arm.img') as Buffer) });
    await pushEci(client, `${registry.host}/eci/single-arm:1`, {
      root: { path: arm, type: 'raw' },
      platform: 'linux/arm64',
    });
    const single = await rejectionOf(
      pullEci(client, `${registry.host}/eci/single-arm:1`, { dir: dir.join('pull-amd'), platform: 'linux/amd64' }),
    );
    expect(single, 'a single arm64 ECI asked for as amd64').toMatchObject({ code: 'ETCH_PLATFORM_NOT_FOUND' });
    expect(
      await rejectionOf(pullEci(client, ref, { dir: dir.join('pull-riscv'), platform: 'linux/riscv64' })),
      'absent platform',
    ).toMatchObject({
      code: 'ETCH_PLATFORM_NOT_FOUND',
    });
  });

  it('refuses an unknown disk type or a missing file before any upload', async () => {
    expect(() => parseEciDisk('disk.vdi:vdi'), 'parseEciDisk vdi').toThrow(
      expect.objectContaining({ code: 'ETCH_USAGE' }),
    );
    const ref = `${registry.host}/eci/refused:1`;
    const bad = await rejectionOf(
      pushEci(client, ref, { ...image, disks: [{ path: image.root.path, type: 'vdi' as 'raw' }] }),
    );
    expect(bad, 'unknown type').toMatchObject({ code: 'ETCH_USAGE', message: expect.stringContaining('vdi') });
    const missing = await rejectionOf(pushEci(client, ref, { ...image, other: [dir.join('in', 'nope')] }));
    expect(missing, 'missing file').toMatchObject({ code: 'ETCH_IO' });
    expect(
      await rejectionOf(client.listTags(`${registry.host}/eci/refused`)),
      'the repository was never written',
    ).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
    expect((await registry.log()).includes('eci/refused/blobs/uploads'), 'no upload was started').toBe(false);
  });

  it('resumes an upload cut mid-chunk and a download cut mid-blob', async () => {
    const proxy = await startFaultProxy(registry);
    const through = new RegistryClient({
      dockerConfig: false,
      retry: { attempts: 5, baseDelayMs: 10, maxDelayMs: 50 },
    });
    try {
      const big = await file('big.img', randomBytes(5 * 1024 * 1024 + 123));
      proxy.addFault({ kind: 'cutRequest', afterBytes: 300_000, path: /\/blobs\/uploads\//, method: 'PATCH' });
      const ref = `${proxy.host}/eci/cut:1`;
      const progress: number[] = [];
      await pushEci(
        through,
        ref,
        { root: { path: big, type: 'raw' } },
        {
          chunkSize: 1024 * 1024,
          onProgress: (p) => p.phase === 'upload' && p.name === 'disk-root-big.img' && progress.push(p.bytes),
        },
      );
      expect(proxy.pendingFaults(), 'the cut happened').toBe(0);
      expect(
        proxy.requests.some((r) => r.method === 'GET' && /\/blobs\/uploads\//.test(r.url)),
        'the upload asked the registry where to resume (GET on the session)',
      ).toBe(true);
      expect(progress.at(-1), 'upload progress reached the size').toBe(files.get('big.img')?.length);
      proxy.addFault({ kind: 'cut', afterBytes: 2_000_000, path: /\/blobs\/sha256:/, method: 'GET' });
      const out = dir.join('pull-cut');
      await pullEci(through, ref, { dir: out });
      expect(proxy.pendingFaults(), 'the download cut happened').toBe(0);
      expect(await tree(out), 'pulled after cuts').toEqual({
        'disk-root-big.img': sha(files.get('big.img') as Buffer),
      });
    } finally {
      await through.close();
      await proxy.stop();
    }
  });

  it('stops a push when its signal fires, with ETCH_ABORTED, and tags nothing', async () => {
    const controller = new AbortController();
    const ref = `${registry.host}/eci/aborted:1`;
    const error = await rejectionOf(
      pushEci(
        client,
        ref,
        { root: { path: await file('abort.img', randomBytes(4 * 1024 * 1024)), type: 'raw' } },
        {
          chunkSize: 1024 * 1024,
          signal: controller.signal,
          onProgress: (p) => p.phase === 'upload' && p.bytes >= 1024 * 1024 && controller.abort(),
        },
      ),
    );
    expect(error, 'the aborted push').toMatchObject({ code: 'ETCH_ABORTED' });
    expect(await rejectionOf(client.getManifest(ref)), 'no manifest under the tag').toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
  });

  it('continues an interrupted pull from its partial file with Range, and removes the partial once verified', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 77);
    const ref = `${registry.host}/eci/resume:1`;
    await pushEci(client, ref, { root: { path: await file('resume.img', data), type: 'raw' } });
    const out = dir.join('pull-resume');
    const controller = new AbortController();
    const interrupted = await rejectionOf(
      pullEci(client, ref, {
        dir: out,
        signal: controller.signal,
        onProgress: (p) => p.bytes >= 1024 * 1024 && controller.abort(),
      }),
    );
    expect(interrupted, 'the interrupted pull').toMatchObject({ code: 'ETCH_ABORTED' });
    const left = (await stat(dir.join('pull-resume', '.disk-root-resume.img.etch-partial'))).size;
    expect(left, 'bytes left in the partial file').toBeGreaterThan(0);
    expect(left, 'bytes left in the partial file').toBeLessThan(data.length);
    const proxy = await startFaultProxy(registry);
    const through = new RegistryClient({ dockerConfig: false });
    try {
      const pulled = await pullEci(through, `${proxy.host}/eci/resume:1`, { dir: out });
      const root = pulled.files.find((f) => f.name === 'disk-root-resume.img');
      const gets = proxy.requests.filter((r) => r.method === 'GET' && r.url.includes(root?.blob ?? '?'));
      expect(
        gets.map((r) => r.headers.range),
        'Range of the requests for the root disk',
      ).toEqual([`bytes=${left}-`]);
      expect(await tree(out), 'the file, whole, and no partial file').toEqual({ 'disk-root-resume.img': sha(data) });
    } finally {
      await through.close();
      await proxy.stop();
    }
  });

  it('pushes and pulls through htpasswd and token auth', async () => {
    const basic = await startBasicAuthRegistry({ users: { alice: 's3cret' } });
    const token = await startTokenAuthRegistry({ users: { bob: 'hunter2' } });
    try {
      for (const [server, username, password, format] of [
        [basic, 'alice', 's3cret', 'artifacts'],
        [token, 'bob', 'hunter2', 'legacy'],
      ] as const) {
        const authed = new RegistryClient({
          dockerConfig: false,
          credentials: { [server.host]: { username, password } },
        });
        try {
          const ref = `${server.host}/eci/auth:1`;
          await pushEci(authed, ref, { root: image.root, kernel: image.kernel as string }, { format });
          const manifest = await rawManifest(ref, ['--creds', `${username}:${password}`]);
          expect(manifest['layers'].length, `${format} through ${username}'s registry: layers`).toBe(2);
          const out = dir.join(`pull-auth-${username}`);
          await pullEci(authed, ref, { dir: out });
          expect(await tree(out), `${username}: pulled`).toEqual({
            kernel: sha(files.get('vmlinuz') as Buffer),
            'disk-root-root.img': sha(files.get('root.img') as Buffer),
          });
        } finally {
          await authed.close();
        }
      }
    } finally {
      await basic.stop();
      await token.stop();
    }
  });
});
