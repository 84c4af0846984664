import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '@etch/format';
import { closed, createTempDir, rejectionOf, sha256Of, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { ImageCache } from './cache.js';
import { cleanCache, listCache, openBaseImage } from './open.js';

/** A file the test server serves. */
interface Served {
  body: Buffer;
  etag: string;
  lastModified: string;
}

interface ServerOptions {
  /** Honour Range requests (default true). */
  ranges?: boolean;
  /** Cut the connection after this many body bytes, on the first `drops` GETs of a path. */
  dropAfter?: number;
  drops?: number;
  /** Delay between 64 KiB writes (ms), to make a download slow enough to kill. */
  throttleMs?: number;
}

interface Recorded {
  method: string;
  path: string;
  range: string | undefined;
  ifNoneMatch: string | undefined;
  status: number;
  bytes: number;
}

interface TestServer {
  url(path: string): string;
  files: Map<string, Served>;
  requests: Recorded[];
  options: ServerOptions;
  close(): Promise<void>;
}

function served(body: Buffer, version = 1): Served {
  return {
    body,
    etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}-${version}"`,
    lastModified: new Date(Date.UTC(2024, 0, version)).toUTCString(),
  };
}

async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const files = new Map<string, Served>();
  const requests: Recorded[] = [];
  const dropped = new Map<string, number>();
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const record: Recorded = {
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      ifNoneMatch: req.headers['if-none-match'],
      status: 200,
      bytes: 0,
    };
    requests.push(record);
    const file = files.get(path);
    if (!file) {
      record.status = 404;
      res.writeHead(404).end();
      return;
    }
    const headers: Record<string, string> = {
      etag: file.etag,
      'last-modified': file.lastModified,
      'content-type': 'application/octet-stream',
    };
    if (options.ranges !== false) headers['accept-ranges'] = 'bytes';
    if (req.headers['if-none-match'] === file.etag) {
      record.status = 304;
      res.writeHead(304, headers).end();
      return;
    }
    let start = 0;
    let end = file.body.length;
    let status = 200;
    const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (
      options.ranges !== false &&
      match &&
      (ifRange === undefined || ifRange === file.etag || ifRange === file.lastModified)
    ) {
      start = Number(match[1]);
      end = match[2] ? Math.min(Number(match[2]) + 1, file.body.length) : file.body.length;
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${file.body.length}`;
    }
    headers['content-length'] = String(end - start);
    record.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const body = file.body.subarray(start, end);
    const drops = dropped.get(path) ?? 0;
    const cut = options.dropAfter !== undefined && drops < (options.drops ?? 1) ? options.dropAfter : undefined;
    if (cut !== undefined) dropped.set(path, drops + 1);
    for (let at = 0; at < body.length; at += 65536) {
      if (cut !== undefined && at >= cut) {
        res.socket?.destroy();
        return;
      }
      const chunk = body.subarray(at, at + 65536);
      record.bytes += chunk.length;
      if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
      if (options.throttleMs) await new Promise((r) => setTimeout(r, options.throttleMs));
      if (res.destroyed) return;
    }
    res.end();
  };
  const server: Server = createServer((req, res) => void handler(req, res).catch(() => res.destroy()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    files,
    requests,
    options,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    debug: (m) => lines.push(`debug ${m}`),
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
  };
}

let dir: TempDir;
let image: Buffer;
let zip: Buffer;
let xz: Buffer;
let gz: Buffer;
const retry = { retries: 4 };

beforeAll(async () => {
  dir = await createTempDir('etch-baseimage-http-');
  // Incompressible half, so the zip is larger than yauzl's 64 KiB end-of-directory read.
  image = Buffer.concat([randomBytes(2 * 1024 * 1024), Buffer.alloc(2 * 1024 * 1024, 1)]);
  await writeFile(dir.join('os.img'), image);
  await writeFile(dir.join('notes.txt'), 'release notes\n');
  await run(
    'sh',
    ['-c', 'zip -q -9 os.zip notes.txt os.img && xz -T1 -c os.img > os.img.xz && gzip -c os.img > os.img.gz'],
    { cwd: dir.path },
  );
  zip = await readFile(dir.join('os.zip'));
  xz = await readFile(dir.join('os.img.xz'));
  gz = await readFile(dir.join('os.img.gz'));
});

afterAll(async () => {
  await dir?.remove();
});

let servers: TestServer[] = [];
async function server(options: ServerOptions = {}): Promise<TestServer> {
  const s = await startServer(options);
  s.files.set('/os.img', served(image));
  s.files.set('/os.zip', served(zip));
  s.files.set('/os.img.xz', served(xz));
  s.files.set('/os.img.gz', served(gz));
  servers.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

describe('URLs without the cache', () => {
  it('streams a raw image with the size from HEAD', async () => {
    const s = await server();
    const opened = await openBaseImage(s.url('/os.img'), { cache: false });
    expect(opened).toMatchObject({
      name: 'os.img',
      size: image.length,
      source: { kind: 'url', fromCache: false, etag: s.files.get('/os.img')?.etag },
    });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    expect(s.requests.map((r) => r.method)).toEqual(['HEAD', 'GET']);
  });

  it('reads the image out of a zip with Range requests, never fetching the whole zip', async () => {
    const s = await server();
    const opened = await openBaseImage(s.url('/os.zip'), { cache: false });
    expect(opened).toMatchObject({ name: 'os.img', size: image.length, source: { kind: 'url', entryName: 'os.img' } });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    const gets = s.requests.filter((r) => r.method === 'GET');
    expect(gets.every((r) => r.range !== undefined && r.status === 206)).toBe(true);
    // The notes.txt entry is never read: what was fetched is the image data, the directory, and headers.
    expect(gets.reduce((sum, r) => sum + r.bytes, 0)).toBeLessThan(zip.length + 70_000);
  });

  it('passes a remote zip through whole in passthrough mode', async () => {
    const s = await server();
    const opened = await openBaseImage(s.url('/os.zip'), { cache: false, mode: 'passthrough' });
    expect(opened).toMatchObject({
      name: 'os.zip',
      size: zip.length,
      source: { mode: 'passthrough', entryName: 'os.img' },
    });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(zip));
  });

  it('downloads the zip first when the server ignores Range', async () => {
    const s = await server({ ranges: false });
    const logger = recordingLogger();
    const opened = await openBaseImage(s.url('/os.zip'), { cache: false, logger });
    expect(opened.size).toBe(image.length);
    expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    expect(logger.lines.join('\n')).toContain('downloading the base image before reading it');
  });

  it.each([true, false])('resumes after the server drops the connection (ranges %s)', async (ranges) => {
    const s = await server({ ranges, dropAfter: 1024 * 1024, drops: 2 });
    const opened = await openBaseImage(s.url('/os.img'), { cache: false, ...retry });
    expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    const gets = s.requests.filter((r) => r.method === 'GET');
    expect(gets.length).toBe(3);
    if (ranges) expect(gets[1]?.range).toBe('bytes=1048576-4194303');
  });

  it('fails with ETCH_SIZE_MISMATCH or ETCH_NETWORK when the server keeps dropping', async () => {
    const s = await server({ dropAfter: 0, drops: 100 });
    const opened = await openBaseImage(s.url('/os.img'), { cache: false, retries: 2 });
    const error = await rejectionOf(sha256Of(opened.stream));
    expect(['ETCH_SIZE_MISMATCH', 'ETCH_NETWORK']).toContain((error as { code: string }).code);
  });

  it('decompresses .img.xz and .img.gz from URLs', async () => {
    const s = await server();
    for (const path of ['/os.img.xz', '/os.img.gz']) {
      const opened = await openBaseImage(s.url(path), { cache: false });
      expect(opened).toMatchObject({
        name: 'os.img',
        size: image.length,
        source: { kind: 'url', compression: path.endsWith('xz') ? 'xz' : 'gzip' },
      });
      expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    }
  });

  it('maps 404 to ETCH_NOT_FOUND and keeps credentials out of errors and the source', async () => {
    const s = await server();
    const url = s.url('/missing.img').replace('http://', 'http://user:s3cret@');
    const error = await rejectionOf(openBaseImage(url, { cache: false }));
    expect(error).toMatchObject({ code: 'ETCH_NOT_FOUND' });
    expect(String((error as Error).message)).not.toContain('s3cret');
    const opened = await openBaseImage(s.url('/os.img').replace('http://', 'http://user:s3cret@'), { cache: false });
    expect(JSON.stringify(opened.source)).not.toContain('s3cret');
    opened.stream.destroy();
  });
});

describe('the cache', () => {
  it('stores on first use, revalidates with If-None-Match, refetches when the ETag changes, and works offline', async () => {
    const s = await server();
    const cacheDir = dir.join('cache-a');
    const first = await openBaseImage(s.url('/os.zip'), { cacheDir });
    expect(first.source.fromCache).toBe(false);
    expect((await sha256Of(first.stream)).sha).toBe(sha(image));
    const [entry] = await listCache(cacheDir);
    expect(entry).toMatchObject({
      name: 'os.img',
      size: image.length,
      sha256: sha(image),
      mode: 'extract',
      etag: s.files.get('/os.zip')?.etag,
    });

    s.requests.length = 0;
    const second = await openBaseImage(s.url('/os.zip'), { cacheDir });
    expect(second.source).toMatchObject({ fromCache: true, digest: `sha256:${sha(image)}` });
    expect((await sha256Of(second.stream)).sha).toBe(sha(image));
    expect(s.requests).toMatchObject([{ method: 'HEAD', ifNoneMatch: entry?.etag, status: 304 }]);

    // passthrough is another key: the zip itself.
    const zipped = await openBaseImage(s.url('/os.zip'), { cacheDir, mode: 'passthrough' });
    expect(zipped.source.fromCache).toBe(false);
    expect((await sha256Of(zipped.stream)).sha).toBe(sha(zip));
    expect(await listCache(cacheDir)).toHaveLength(2);

    // A new release behind the same URL.
    const changed = Buffer.concat([image.subarray(0, 1000), Buffer.alloc(5000, 9)]);
    await writeFile(dir.join('os.img'), changed);
    await run('sh', ['-c', 'rm -f os2.zip && zip -q os2.zip os.img'], { cwd: dir.path });
    s.files.set('/os.zip', served(await readFile(dir.join('os2.zip')), 2));
    const third = await openBaseImage(s.url('/os.zip'), { cacheDir });
    expect(third).toMatchObject({ size: changed.length, source: { fromCache: false } });
    expect((await sha256Of(third.stream)).sha).toBe(sha(changed));
    expect(await readdir(dir.join('cache-a', 'blobs'))).toHaveLength(2);

    await s.close();
    s.requests.length = 0;
    const offline = await openBaseImage(s.url('/os.zip'), { cacheDir, offline: true });
    expect(offline.source.fromCache).toBe(true);
    expect((await sha256Of(offline.stream)).sha).toBe(sha(changed));
    expect(await rejectionOf(openBaseImage(s.url('/other.img'), { cacheDir, offline: true }))).toMatchObject({
      code: 'ETCH_NOT_FOUND',
    });
  });

  it('uses the cached copy with a warning when the server cannot be reached to revalidate', async () => {
    const s = await server();
    const cacheDir = dir.join('cache-b');
    (await sha256Of((await openBaseImage(s.url('/os.img'), { cacheDir })).stream)).sha;
    const url = s.url('/os.img');
    await s.close();
    const logger = recordingLogger();
    const reused = await openBaseImage(url, { cacheDir, logger, retries: 1 });
    expect(reused.source.fromCache).toBe(true);
    expect((await sha256Of(reused.stream)).sha).toBe(sha(image));
    expect(logger.lines.join('\n')).toContain('using the cached copy');
  });

  it('detects a corrupted cache file on reuse (sha256) and removes the entry', async () => {
    const s = await server();
    const cacheDir = dir.join('cache-c');
    (await sha256Of((await openBaseImage(s.url('/os.img'), { cacheDir })).stream)).sha;
    const [entry] = await listCache(cacheDir);
    const path = `${cacheDir}/${entry?.file}`;
    const bytes = await readFile(path);
    bytes[12345] = (bytes[12345] as number) ^ 1;
    await writeFile(path, bytes);
    const reused = await openBaseImage(s.url('/os.img'), { cacheDir });
    expect(reused.source.fromCache).toBe(true);
    expect(await rejectionOf(sha256Of(reused.stream))).toMatchObject({ code: 'ETCH_DIGEST_MISMATCH' });
    expect(await listCache(cacheDir)).toHaveLength(0);
    const again = await openBaseImage(s.url('/os.img'), { cacheDir });
    expect(again.source.fromCache).toBe(false);
    expect((await sha256Of(again.stream)).sha).toBe(sha(image));
  });

  it('is safe under concurrent gets of the same source: every caller gets the bytes, one entry remains, no temp file', async () => {
    const s = await server();
    const cacheDir = dir.join('cache-d');
    const results = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const opened = await openBaseImage(s.url('/os.img.xz'), { cacheDir });
        return (await sha256Of(opened.stream)).sha;
      }),
    );
    expect(results).toEqual(Array(4).fill(sha(image)));
    expect(await listCache(cacheDir)).toHaveLength(1);
    expect(await readdir(dir.join('cache-d', 'blobs'))).toEqual([sha(image)]);
    expect(await readdir(dir.join('cache-d', 'tmp'))).toEqual([]);
  });

  it('ignores what a download killed half-way left behind, and the next writer removes it', async () => {
    const slow = await server({ throttleMs: 20 });
    const cacheDir = dir.join('cache-e');
    const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
    if (!existsSync(dist)) await run('pnpm', ['exec', 'tsc', '-b', fileURLToPath(new URL('..', import.meta.url))]);
    const script = dir.join('child.mjs');
    await writeFile(
      script,
      `import { openBaseImage } from ${JSON.stringify(dist)};
const opened = await openBaseImage(process.argv[2], { cacheDir: process.argv[3] });
let n = 0;
for await (const chunk of opened.stream) { n += chunk.length; if (n > 300000) process.stdout.write('started\\n'); }
`,
    );
    const child = spawn(process.execPath, [script, slow.url('/os.img'), cacheDir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (data: Buffer) => data.toString().includes('started') && resolve());
      child.once('exit', (code) => reject(new Error(`child exited with ${code} before downloading`)));
    });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const leftovers = await readdir(dir.join('cache-e', 'tmp'));
    expect(leftovers).toHaveLength(1);
    expect(leftovers[0]).toMatch(new RegExp(`^${child.pid}-`));
    expect(await listCache(cacheDir)).toEqual([]);

    slow.options.throttleMs = 0;
    const opened = await openBaseImage(slow.url('/os.img'), { cacheDir });
    expect(opened.source.fromCache).toBe(false);
    expect((await sha256Of(opened.stream)).sha).toBe(sha(image));
    expect(await readdir(dir.join('cache-e', 'tmp'))).toEqual([]);
    const reused = await openBaseImage(slow.url('/os.img'), { cacheDir });
    expect(reused.source.fromCache).toBe(true);
    expect((await sha256Of(reused.stream)).sha).toBe(sha(image));
  });

  it('keeps no entry when the consumer stops early or the stream fails', async () => {
    const s = await server({ dropAfter: 0, drops: 100 });
    const cacheDir = dir.join('cache-f');
    const failing = await openBaseImage(s.url('/os.img'), { cacheDir, retries: 1 });
    await rejectionOf(sha256Of(failing.stream));
    const good = await server();
    const stopped = await openBaseImage(good.url('/os.img.xz'), { cacheDir });
    for await (const _chunk of stopped.stream) break;
    // The stream closes once its generators have run their cleanup (temp files removed).
    await closed(stopped.stream);
    expect(await listCache(cacheDir)).toEqual([]);
    expect(await readdir(dir.join('cache-f', 'tmp'))).toEqual([]);
  });

  it('aborts a download mid-way with ETCH_ABORTED and keeps nothing', async () => {
    const slow = await server({ throttleMs: 10 });
    const cacheDir = dir.join('cache-g');
    const controller = new AbortController();
    const opened = await openBaseImage(slow.url('/os.img'), { cacheDir, signal: controller.signal });
    let seen = 0;
    const error = await rejectionOf(
      (async () => {
        for await (const chunk of opened.stream) {
          seen += (chunk as Buffer).length;
          if (seen >= 256 * 1024) controller.abort();
        }
      })(),
    );
    expect(error).toMatchObject({ code: 'ETCH_ABORTED' });
    await closed(opened.stream);
    expect(await listCache(cacheDir)).toEqual([]);
    expect(await readdir(dir.join('cache-g', 'tmp'))).toEqual([]);
  });

  it('cleanCache removes only its own files, even from a shared directory', async () => {
    const s = await server();
    const shared = dir.join('shared');
    (await sha256Of((await openBaseImage(s.url('/os.img'), { cacheDir: shared })).stream)).sha;
    await writeFile(dir.join('shared', 'keep-me.txt'), 'mine');
    expect(await cleanCache(shared)).toEqual({ entries: 1, bytes: image.length });
    expect(await readdir(shared)).toEqual(['keep-me.txt']);
    const own = dir.join('own');
    (await sha256Of((await openBaseImage(s.url('/os.img'), { cacheDir: own })).stream)).sha;
    await new ImageCache(own).clean();
    expect(existsSync(own)).toBe(false);
  });
});
