// pnpm loadtest: `etch serve` (the real CLI, one process) under 32 concurrent clients on loopback, for a fixed
// number of requests: identical and different releases, 10 % of clients disconnecting mid-stream, 10 % reading
// at 1 MB/s. Reports throughput, time to first byte, peak RSS, open file descriptors and temp files, and fails
// (exit 1) unless every completed body is byte-identical to `etch create` for the same request, no response
// fails but the designed 503s, RSS stays under the bound, and nothing leaks. Bounded: 96 requests, 5 minutes.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, readlink } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createTempDir } from '@etch/test-utils';
import {
  BASE_TOOLS,
  DISK_TOOLS,
  REGISTRY_SERVER_TOOLS,
  buildRegistryFixtures,
  ensureTools,
  freePort,
  makeBalenaLikeImage,
  pushRegistryFixture,
  run,
  startRegistryServer,
} from '@etch/test-utils/system';

const root = new URL('..', import.meta.url).pathname;
const etchBin = join(root, 'packages/dotetch/bin/etch.js');
const REQUESTS = 96;
const CLIENTS = 32;
const MAX_CONCURRENT = 8;
const MAX_QUEUE = 16;
const SLOW_RATE = 1_000_000; // bytes per second
const EPOCH = '1700000000';
// The bound: Node's baseline (~70 MiB) plus, per build, the tar pipeline's buffers and the base image reads in
// flight (a few MiB), the staged layer bookkeeping and fastify's per-request state; 8 builds at once stay far
// below it. Nothing scales with the size of a base image or a layer: those stream. 512 MiB leaves room for V8's
// heap growth under GC pressure without hiding a leak that grows with the request count (96 × ~30 MiB bodies).
const RSS_BOUND = 512 * 1024 * 1024;
const MIB = 1024 * 1024;
const deadline = Date.now() + 5 * 60_000;

const sha256 = (data) => createHash('sha256').update(data).digest('hex');
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};
const statusOf = async (pid) => readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
const kib = (status, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
/** Open descriptors of a process: all, and those that are not sockets (files, pipes: what a leak leaves). */
const fds = async (pid) => {
  const names = await readdir(`/proc/${pid}/fd`).catch(() => []);
  const targets = await Promise.all(names.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
  return { all: names.length, files: targets.filter((t) => !t.startsWith('socket:')).length };
};

/** One request: resolves to what happened. `mode`: full, disconnect (after 1 MiB) or slow (1 MB/s). */
function fetchEtch(url, body, mode) {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = httpRequest(`${url}/v1/etch`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', (error) => resolve({ kind: 'error', error: error.message }));
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () =>
          resolve({ kind: 'status', status: res.statusCode, retryAfter: Number(res.headers['retry-after']), text }),
        );
        return;
      }
      const hash = createHash('sha256');
      let bytes = 0;
      let ttfb;
      let done = false;
      const finish = (result) => {
        if (!done) {
          done = true;
          resolve(result);
        }
      };
      res.on('data', (chunk) => {
        ttfb ??= performance.now() - started;
        hash.update(chunk);
        bytes += chunk.length;
        if (mode === 'disconnect' && bytes >= MIB) {
          finish({ kind: 'disconnected', ttfb, bytes });
          res.destroy();
        } else if (mode === 'slow') {
          res.pause();
          setTimeout(() => res.resume(), (chunk.length / SLOW_RATE) * 1000);
        }
      });
      res.on('end', () => finish({ kind: 'complete', ttfb, bytes, sha256: hash.digest('hex') }));
      res.on('error', (error) => finish({ kind: 'cut', error: error.message, bytes }));
      res.on('aborted', () => finish({ kind: 'cut', error: 'aborted', bytes }));
    });
    req.end(JSON.stringify(body));
  });
}

async function main() {
  await ensureTools([...BASE_TOOLS, ...DISK_TOOLS, ...REGISTRY_SERVER_TOOLS]);
  const dir = await createTempDir('etch-loadtest-');
  const registry = await startRegistryServer();
  let server;
  try {
    console.error('building the base image and the release images …');
    await mkdir(dir.join('os'));
    await makeBalenaLikeImage(join(dir.path, 'os', 'base.img'), { dataMiB: 16 });
    const fixtures = await buildRegistryFixtures(dir.join('fixtures'));
    await pushRegistryFixture(fixtures.layout, fixtures.images.layers3.tag, `${registry.host}/load/app:1`);
    await pushRegistryFixture(fixtures.layout, fixtures.images.uncompressed.tag, `${registry.host}/load/app:2`);
    const releases = [
      [`${registry.host}/load/app:1`],
      [`${registry.host}/load/app:2`],
      [`${registry.host}/load/app:1`, `${registry.host}/load/app:2`],
    ];
    const expected = [];
    for (const [i, images] of releases.entries()) {
      const out = dir.join(`release-${i}.etch`);
      await run(
        'node',
        [
          etchBin,
          'create',
          '--base',
          dir.join('os', 'base.img'),
          ...images.flatMap((image) => ['--image', image]),
          '--platform',
          'linux/amd64',
          '-o',
          out,
          '-q',
        ],
        { env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH, XDG_CACHE_HOME: dir.join('cli-cache') } },
      );
      expected.push(sha256(await readFile(out)));
    }

    const port = await freePort();
    const cacheDir = dir.join('serve-cache');
    server = spawn(
      process.execPath,
      [
        etchBin,
        'serve',
        '--no-auth',
        '--listen',
        `127.0.0.1:${port}`,
        '--base-dir',
        dir.join('os'),
        '--cache-dir',
        cacheDir,
        '--allow-host',
        registry.host,
        '--max-concurrent',
        String(MAX_CONCURRENT),
        '--max-queue',
        String(MAX_QUEUE),
        '--retry-after',
        '1',
        '--stall-timeout',
        '30',
        '--log-level',
        'warn',
      ],
      { env: { ...process.env, SOURCE_DATE_EPOCH: EPOCH }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    server.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => server.once('exit', resolve));
    while (!stderr.includes('listening on')) {
      if (server.exitCode !== null || Date.now() > deadline) throw new Error(`etch serve did not start:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const url = `http://127.0.0.1:${port}`;
    const fdsBefore = await fds(server.pid);
    let peakRss = 0;
    const sampler = setInterval(async () => {
      peakRss = Math.max(peakRss, kib(await statusOf(server.pid), 'VmRSS'));
    }, 50);

    console.error(`${REQUESTS} requests from ${CLIENTS} clients …`);
    const results = [];
    let next = 0;
    let busy = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        for (let i = next++; i < REQUESTS; i = next++) {
          const release = i % releases.length;
          const mode = i % 10 === 3 ? 'disconnect' : i % 10 === 7 ? 'slow' : 'full';
          for (;;) {
            if (Date.now() > deadline) throw new Error('the load test ran past its 5 minutes');
            const result = await fetchEtch(
              url,
              { base: 'file:base.img', images: releases[release], platform: 'linux/amd64' },
              mode,
            );
            if (result.kind === 'status' && result.status === 503) {
              busy += 1;
              await new Promise((resolve) => setTimeout(resolve, (result.retryAfter || 1) * 1000));
              continue;
            }
            results.push({ i, release, mode, ...result });
            break;
          }
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    // Let the server notice the last disconnects and finish its bookkeeping, then count what is left.
    const settle = Date.now() + 10_000;
    let metrics = '';
    while (Date.now() < settle) {
      metrics = await fetch(`${url}/metrics`).then((r) => r.text());
      if (/^etch_active_streams 0$/m.test(metrics)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const fdsAfter = await fds(server.pid);
    const rssAfter = kib(await statusOf(server.pid), 'VmRSS');
    const leftovers = [
      ...(await readdir(join(cacheDir, 'oci', 'tmp')).catch(() => [])),
      ...(await readdir(join(cacheDir, 'oci')).catch(() => [])).filter((name) => name.startsWith('stage-')),
    ];
    server.kill('SIGTERM');
    const exitCode = await exited;
    // What the registry saw: blob GETs per digest (single flight: once each, whatever the request count).
    const blobGets = new Map();
    for (const match of (await registry.log()).matchAll(
      /"GET \/v2\/[^ ]+\/blobs\/(sha256:[0-9a-f]{64}) HTTP\/1\.1" 20[06]/g,
    ))
      blobGets.set(match[1], (blobGets.get(match[1]) ?? 0) + 1);
    const cliGets = 1; // the etch create runs that made the reference files downloaded each blob once

    const complete = results.filter((r) => r.kind === 'complete');
    const wrong = complete.filter((r) => r.sha256 !== expected[r.release]);
    const disconnected = results.filter((r) => r.kind === 'disconnected');
    const failures = results.filter((r) => r.kind !== 'complete' && r.kind !== 'disconnected');
    const bytes = results.reduce((sum, r) => sum + (r.bytes ?? 0), 0);
    const ttfb = results.filter((r) => r.ttfb !== undefined).map((r) => r.ttfb);
    const report = {
      requests: REQUESTS,
      clients: CLIENTS,
      complete: complete.length,
      completeIdentical: complete.length - wrong.length,
      slowComplete: complete.filter((r) => r.mode === 'slow').length,
      disconnected: disconnected.length,
      designed503: busy,
      otherFailures: failures.length,
      seconds: Number(seconds.toFixed(1)),
      throughputMiBs: Number((bytes / MIB / seconds).toFixed(1)),
      ttfbP50s: Number((percentile(ttfb, 50) / 1000).toFixed(2)),
      ttfbP95s: Number((percentile(ttfb, 95) / 1000).toFixed(2)),
      peakRssMiB: Math.round(peakRss / MIB),
      rssAfterMiB: Math.round(rssAfter / MIB),
      rssBoundMiB: RSS_BOUND / MIB,
      fdsBefore: fdsBefore.all,
      fdsAfter: fdsAfter.all,
      nonSocketFdsBefore: fdsBefore.files,
      nonSocketFdsAfter: fdsAfter.files,
      tempFilesLeft: leftovers.length,
      serverExit: exitCode,
      cacheHits: Number(/^etch_blob_cache_hits_total (\d+)/m.exec(metrics)?.[1] ?? NaN),
      registryBlobs: blobGets.size,
      registryGetsPerBlobMax: Math.max(0, ...blobGets.values()) - cliGets,
      blobDownloads: Number(/^etch_blob_downloads_total (\d+)/m.exec(metrics)?.[1] ?? NaN),
    };
    console.log(JSON.stringify(report, null, 2));
    const problems = [];
    if (wrong.length > 0)
      problems.push(
        `${wrong.length} completed bodies differ from etch create (requests ${wrong.map((r) => r.i).join(', ')})`,
      );
    if (failures.length > 0)
      problems.push(`${failures.length} failed other than by 503: ${JSON.stringify(failures.slice(0, 3))}`);
    if (complete.length + disconnected.length !== REQUESTS) problems.push('requests unaccounted for');
    if (peakRss > RSS_BOUND)
      problems.push(`peak RSS ${report.peakRssMiB} MiB over the ${report.rssBoundMiB} MiB bound`);
    // Sockets may stay open after the run: the registry's keep-alive pool (at most 16 per origin, closed after
    // 30 s idle) and the /metrics scrape's connection. Files and pipes must all be closed.
    if (fdsAfter.files > fdsBefore.files)
      problems.push(`file and pipe descriptors grew from ${fdsBefore.files} to ${fdsAfter.files}`);
    if (fdsAfter.all > fdsBefore.all + 17) problems.push(`descriptors grew from ${fdsBefore.all} to ${fdsAfter.all}`);
    if (leftovers.length > 0) problems.push(`temp files left: ${leftovers.join(', ')}`);
    if (report.registryGetsPerBlobMax > 1)
      problems.push(`a blob was fetched ${report.registryGetsPerBlobMax} times by the server`);
    if (exitCode !== 0) problems.push(`etch serve exited ${exitCode} on SIGTERM:\n${stderr}`);
    if (problems.length > 0) {
      console.error(`FAIL\n- ${problems.join('\n- ')}`);
      process.exitCode = 1;
    } else console.error('PASS');
  } finally {
    if (server && server.exitCode === null) server.kill('SIGKILL');
    await registry.stop();
    await dir.remove();
  }
}

await main();
