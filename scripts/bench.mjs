// pnpm bench: times `etch create` (cold and warm cache) against `docker pull` and `skopeo copy` of the same
// images from the same loopback registry, and `etch copy` (a push) against `skopeo copy` of the same image, in
// one run, and prints the ratios. A benchmark, not a test: it asserts nothing, it measures. Needs root
// (dockerd), like the test suite. BENCH_ONLY=copy runs the push rows alone (no dockerd), for the bench image
// and for one of BENCH_COPY_BIG_MIB (default 500; 0 leaves it out), where throughput rather than start-up counts;
// BENCH_ONLY=warm the cold and warm `etch create` against copying the base image (issue 17, goal 3);
// BENCH_ONLY=realistic the engine-built workload alone, `etch create` and `docker pull` alternating
// BENCH_RUNS times (default 3; BENCH_PROFILE=DIR writes a CPU profile of each create there), then one warm
// create from the last run's cache;
// BENCH_ONLY=apply `etch apply` against a loop mount of the same .etch (issue 17, goal 6; root, no dockerd).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { createTempDir } from '@etch/test-utils';
import {
  BASE_TOOLS,
  DISK_TOOLS,
  DOCKERD_TOOLS,
  REGISTRY_SERVER_TOOLS,
  ensureTools,
  makeBalenaLikeImage,
  run,
  startDockerd,
  startRegistryServer,
} from '@etch/test-utils/system';
import { ROOTFS_DIRS, buildRealisticImages } from './bench-realistic.mjs';

const root = new URL('..', import.meta.url).pathname;
const etchBin = join(root, 'packages/dotetch/bin/etch.js');
// The Node flags of the binary's shebang, repeated when it is run through node with flags of its own.
const etchNodeFlags = readFileSync(etchBin, 'utf8')
  .split('\n', 1)[0]
  .split(/\s+/)
  .filter((word) => word.startsWith('--'));
const MIB = 1024 * 1024;
// Four unique layers, ~100 MB compressed (random data does not compress), shared as real images share bases.
const LAYERS = { base: 40, tools: 30, app: 20, other: 10 };
const IMAGES = { one: ['base', 'tools'], two: ['base', 'app'], three: ['other'] };

const sha256 = (data) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Runs a command, timing it and sampling its peak resident memory from /proc. */
function timed(command, args, env = process.env) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    let peak = 0;
    child.stderr.on('data', (d) => (stderr += d));
    const sample = setInterval(async () => {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
      const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
      peak = Math.max(peak, hwm);
    }, 20);
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(sample);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) reject(new Error(`${command} ${args.join(' ')} exited ${code}\n${stderr}`));
      else resolve({ seconds, peak });
    });
  });
}

/** Hashes a file as a stream: a layer of a few hundred MiB is not read into memory. */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
}

/** Adds a gzipped copy of the layer tar `tar` to the layout's blobs: its diff ID, digest and size. */
async function addLayer(blobs, tar) {
  const diffId = await sha256File(tar);
  const gz = `${tar}.gz`;
  await pipeline(createReadStream(tar), createGzip({ level: 1 }), createWriteStream(gz));
  const digest = await sha256File(gz);
  const { size } = await stat(gz);
  await rename(gz, join(blobs, digest.slice(7)));
  return { diffId, digest, size };
}

/** Writes the config, manifest and index of `images` (tag → layer names) over `layers` into the layout. */
async function writeImages(layout, layers, images) {
  const blobs = join(layout, 'blobs', 'sha256');
  const manifests = [];
  for (const [tag, names] of Object.entries(images)) {
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: ['/bin/true'] },
        rootfs: { type: 'layers', diff_ids: names.map((n) => layers[n].diffId) },
        history: names.map(() => ({ created_by: 'bench' })),
      }),
    );
    await writeFile(join(blobs, sha256(config).slice(7)), config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
        layers: names.map((n) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: layers[n].digest,
          size: layers[n].size,
        })),
      }),
    );
    await writeFile(join(blobs, sha256(manifest).slice(7)), manifest);
    manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256(manifest),
      size: manifest.length,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    });
  }
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

/** An OCI layout with the bench images, layers of random files, written by hand (the format is simple). */
async function buildLayout(dir, layerSizes = LAYERS, images = IMAGES) {
  const blobs = join(dir, 'layout', 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layers = {};
  for (const [name, mib] of Object.entries(layerSizes)) {
    const tree = join(dir, 'trees', name);
    await mkdir(join(tree, name), { recursive: true });
    for (let i = 0; i < mib / 5; i++) await writeFile(join(tree, name, `blob-${i}.bin`), randomBytes(5 * MIB));
    const tar = join(dir, `${name}.tar`);
    await run('tar', ['--format=pax', '--sort=name', '--mtime=@0', '--numeric-owner', '-C', tree, '-cf', tar, '.']);
    layers[name] = await addLayer(blobs, tar);
  }
  await writeImages(join(dir, 'layout'), layers, images);
  return {
    layout: join(dir, 'layout'),
    layers,
    compressed: Object.values(layers).reduce((n, l) => n + l.size, 0),
  };
}

/** Median wall time of `runs` runs of a short command, in seconds. */
async function medianOf(runs, command, args) {
  const times = [];
  for (let i = 0; i < runs; i++) times.push((await timed(command, args)).seconds);
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)];
}

/** Unique layers and their compressed bytes, as the registry holds them. */
async function layerTotals(refs) {
  const layers = new Map();
  for (const ref of refs) {
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
    for (const layer of JSON.parse(stdout).layers ?? []) layers.set(layer.digest, layer.size);
  }
  return { count: layers.size, bytes: [...layers.values()].reduce((a, b) => a + b, 0) };
}

/** Times `docker pull` of `refs` into `engine`, one after another as a device would. */
async function dockerPull(engine, refs) {
  const started = process.hrtime.bigint();
  for (const ref of refs) await engine.docker(['pull', '-q', ref]);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** Times `skopeo copy` of `refs` into directories under `into`. */
async function skopeoCopy(refs, into) {
  await mkdir(into, { recursive: true });
  const started = process.hrtime.bigint();
  for (const [i, ref] of refs.entries())
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${ref}`,
      `dir:${join(into, `skopeo-${i}`)}`,
    ]);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

const fmt = (s) => `${s.toFixed(2)} s`;
const mb = (b) => `${(b / MIB).toFixed(0)} MiB`;

/**
 * Runs a command for its wall time and the CPU seconds (user + system) it and its children used, as the shell's
 * `times` reports them: on a loaded machine CPU seconds say more than wall time about the work each tool does.
 */
function cpuTimed(command, args) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('sh', ['-c', '"$@" >/dev/null || exit $?; times', 'sh', command, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${command} ${args.join(' ')} exited ${code}\n${stderr}`));
      // The second line of `times`: the children's user and system time, e.g. `0m1.230000s 0m0.450000s`.
      const children = out.trim().split('\n').at(-1) ?? '';
      const cpu = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce((n, m) => n + Number(m[1]) * 60 + Number(m[2]), 0);
      resolve({ seconds, cpu });
    });
  });
}

/**
 * `etch copy` (the CLI, as users run it, and `copyImage` in this process) against `skopeo copy` of the same
 * OCI layout image to empty registries: the upload side. Runs alternate, each into a fresh registry of its
 * own, and the median of each is kept.
 */
async function copyRows(layout, tag, compressed) {
  const { copyImage } = await import(new URL('../packages/image/dist/index.js', import.meta.url).href);
  const { RegistryClient, openImageSource, openImageTarget } = await import(
    new URL('../packages/registry/dist/index.js', import.meta.url).href
  );
  const RUNS = Number(process.env['BENCH_COPY_RUNS'] ?? 5);
  const times = { etch: [], skopeo: [], api: [] };
  const cpu = { etch: [], skopeo: [], api: [] };
  const load = loadavg()[0];
  for (let i = 0; i < RUNS; i++) {
    process.stderr.write(`bench: etch copy / skopeo copy / copyImage, run ${i + 1} of ${RUNS}…\n`);
    // Fresh registries each run: skopeo remembers where blobs went and mounts them from there on the next run.
    const [etchRegistry, skopeoRegistry, apiRegistry] = await Promise.all([
      startRegistryServer(),
      startRegistryServer(),
      startRegistryServer(),
    ]);
    try {
      const etchRun = await cpuTimed(etchBin, [
        'copy',
        `oci:${layout}:${tag}`,
        `${etchRegistry.host}/bench/etch:1`,
        '-q',
      ]);
      times.etch.push(etchRun.seconds);
      cpu.etch.push(etchRun.cpu);
      const skopeoRun = await cpuTimed('skopeo', [
        'copy',
        '--quiet',
        '--preserve-digests',
        '--dest-tls-verify=false',
        `oci:${layout}:${tag}`,
        `docker://${skopeoRegistry.host}/bench/skopeo:1`,
      ]);
      times.skopeo.push(skopeoRun.seconds);
      cpu.skopeo.push(skopeoRun.cpu);
      const client = new RegistryClient({ dockerConfig: false });
      const started = process.hrtime.bigint();
      const startedCpu = process.cpuUsage();
      try {
        await copyImage(
          openImageSource(`oci:${layout}:${tag}`, client),
          openImageTarget(`${apiRegistry.host}/bench/api:1`, client),
        );
      } finally {
        await client.close();
      }
      times.api.push(Number(process.hrtime.bigint() - started) / 1e9);
      const usedCpu = process.cpuUsage(startedCpu);
      cpu.api.push((usedCpu.user + usedCpu.system) / 1e6);
    } finally {
      await Promise.all([etchRegistry.stop(), skopeoRegistry.stop(), apiRegistry.stop()]);
    }
  }
  const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const [etch, skopeo, api] = [median(times.etch), median(times.skopeo), median(times.api)];
  const [etchCpu, skopeoCpu, apiCpu] = [median(cpu.etch), median(cpu.skopeo), median(cpu.api)];
  const rate = (s) => `${(compressed / MIB / s).toFixed(0)} MiB/s`;
  return [
    [
      'push: image copied',
      `oci: layout tag ${tag}, ${mb(compressed)} of layers, to an empty loopback registry; medians of ${RUNS}; load ${load.toFixed(2)} (1 min) at start, ${loadavg()[0].toFixed(2)} at end`,
    ],
    ['etch copy (CLI)', `${fmt(etch)}  (${rate(etch)}), CPU ${fmt(etchCpu)}`],
    ['copyImage (in process, no start-up)', `${fmt(api)}  (${rate(api)}), CPU ${fmt(apiCpu)}`],
    ['skopeo copy --preserve-digests', `${fmt(skopeo)}  (${rate(skopeo)}), CPU ${fmt(skopeoCpu)}`],
    ['etch copy / skopeo copy', `${(etch / skopeo).toFixed(2)}  (goal ≤ 1.00: not slower)`],
    ['copyImage / skopeo copy', (api / skopeo).toFixed(2)],
    ['CPU: etch copy / skopeo copy', `${(etchCpu / skopeoCpu).toFixed(2)}  (what a loaded machine magnifies)`],
  ];
}

function printRows(rows) {
  const width = Math.max(...rows.map(([k]) => k.length));
  process.stdout.write(`${rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}\n`);
}

/** BENCH_ONLY=copy: the push rows alone. */
async function copyOnly() {
  ensureTools([...BASE_TOOLS, ...REGISTRY_SERVER_TOOLS]);
  const work = await createTempDir('etch-bench-');
  try {
    process.stderr.write('bench: building images…\n');
    const { layout, layers } = await buildLayout(work.path);
    const tag = 'one';
    const rows = await copyRows(layout, tag, imageBytes(layers, tag));
    // A 70 MiB copy is half start-up; throughput shows in an image big enough for the transfer to dominate.
    const bigMib = Number(process.env['BENCH_COPY_BIG_MIB'] ?? 500);
    if (bigMib > 0) {
      process.stderr.write(`bench: building a ${bigMib} MiB image…\n`);
      const big = await buildLayout(join(work.path, 'big'), { big: bigMib }, { big: ['big'] });
      rows.push(...(await copyRows(big.layout, 'big', big.compressed)));
    }
    printRows(rows);
  } finally {
    await work.remove();
  }
}

/** Compressed bytes of the layers of one bench image. */
function imageBytes(layers, tag) {
  return IMAGES[tag].reduce((n, name) => n + layers[name].size, 0);
}

/** The synthetic workload in a registry: its image references, and a ~1 GiB base image of real bytes. */
async function createWorkload(work, registry) {
  const { layout, layers, compressed } = await buildLayout(work.path);
  for (const tag of Object.keys(IMAGES))
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      '--preserve-digests',
      `oci:${layout}:${tag}`,
      `docker://${registry.host}/bench/${tag}:1`,
    ]);
  const { base, baseSize } = await makeBase(work);
  const refs = Object.keys(IMAGES).map((tag) => `${registry.host}/bench/${tag}:1`);
  return { layout, layers, compressed, base, baseSize, refs };
}

/** A balenaOS-like base image of ~1 GiB, `fillerMiB` of real bytes in its 1000 MiB data partition (6). */
async function makeBase(work, fillerMiB = 900, name = 'base.img') {
  const osData = work.join('os-data');
  await mkdir(osData);
  // Real bytes, not a hole: the base image must be read and written like a real OS image.
  await run('sh', ['-c', `head -c ${fillerMiB * MIB} /dev/urandom > ${join(osData, 'filler.bin')}`]);
  const base = work.join(name);
  const offsets = await makeBalenaLikeImage(base, { dataMiB: 1000, dataContent: osData });
  await rm(osData, { recursive: true });
  return { base, baseSize: (await stat(base)).size, dataOffset: offsets[6] };
}

/** The arguments of an `etch create` of `refs` onto `base`, images for linux/amd64, quiet. */
function createArgs(base, refs, cache, out) {
  return [
    'create',
    '--base',
    base,
    ...refs.flatMap((r) => ['--image', r]),
    '--platform',
    'linux/amd64',
    '--ignore-base-repositories',
    '--cache-dir',
    cache,
    '-o',
    out,
    '-q',
  ];
}

/** `etch create` of the workload's images onto `base`, as users run it: the binary itself (its shebang's flags apply). */
function createEtch(base, refs, cache, out) {
  return timed(etchBin, createArgs(base, refs, cache, out));
}

/**
 * The floor of a warm rebuild: copying the base image and flushing the copy to disk, best of two. Every byte,
 * holes included (`--sparse=never`), as the .etch carries them; `sync FILE` flushes the copy alone, not what
 * other work on the machine left dirty.
 */
async function baseCopy(base, work) {
  const runs = [];
  for (let i = 0; i < 2; i++) {
    const copy = work.join('base-copy.img');
    runs.push(await timed('sh', ['-c', 'cp --sparse=never "$0" "$1" && sync "$1"', base, copy]));
    await rm(copy);
  }
  return runs.reduce((a, b) => (a.seconds <= b.seconds ? a : b));
}

/** Cold and warm `etch create` of the workload (best of two warm runs), with the .etch size. */
async function coldAndWarm(work, base, refs) {
  process.stderr.write('bench: etch create (cold cache)…\n');
  const cold = await createEtch(base, refs, work.join('cache'), work.join('cold.etch'));
  const etchSize = (await stat(work.join('cold.etch'))).size;
  await rm(work.join('cold.etch'));
  process.stderr.write('bench: etch create (warm cache, best of two)…\n');
  // Two warm runs: the first after a cold one also pays for the kernel writing back the previous output.
  const warmRuns = [];
  for (let i = 0; i < 2; i++) {
    warmRuns.push(await createEtch(base, refs, work.join('cache'), work.join('warm.etch')));
    await rm(work.join('warm.etch'));
  }
  return { cold, warm: warmRuns.reduce((a, b) => (a.seconds <= b.seconds ? a : b)), etchSize };
}

const ratio = (a, b, goal) => `${(a / b).toFixed(2)}${goal ? `  (goal ${goal})` : ''}`;

/** `etch create` of the base image alone, best of two: what a warm rebuild costs without any layer. */
async function baseOnly(base, work) {
  const runs = [];
  for (let i = 0; i < 2; i++) {
    runs.push(await timed(etchBin, ['create', '--base', base, '-o', work.join('base-only.etch'), '-q']));
    await rm(work.join('base-only.etch'));
  }
  return runs.reduce((a, b) => (a.seconds <= b.seconds ? a : b));
}

/** The rows of issue 17's goal 3: cold and warm against the base copy and the images alone. */
function baseCopyRows({ cold, warm, copy, imagesOnly, alone }) {
  const rows = [
    ['cp base image + sync', fmt(copy.seconds)],
    ['etch create, base image alone', fmt(alone.seconds)],
    ['warm create / base copy', ratio(warm.seconds, copy.seconds, '≤ 1.10')],
    // What the layers add to a warm run, and the floor the base image's own path sets.
    ['warm create / base image alone', ratio(warm.seconds, alone.seconds)],
    ['base image alone / base copy', ratio(alone.seconds, copy.seconds)],
  ];
  if (imagesOnly)
    rows.push([
      'cold create / max(images only, base copy)',
      ratio(cold.seconds, Math.max(imagesOnly.seconds, copy.seconds), '≤ 1.20'),
    ]);
  return rows;
}

/** BENCH_ONLY=warm: cold and warm `etch create` with the 1 GiB base against copying the base (no dockerd). */
async function warmOnly() {
  ensureTools([...BASE_TOOLS, ...DISK_TOOLS, ...REGISTRY_SERVER_TOOLS]);
  const work = await createTempDir('etch-bench-');
  const registry = await startRegistryServer();
  try {
    process.stderr.write('bench: building images and a ~1 GiB base image…\n');
    const { base, baseSize, refs, compressed } = await createWorkload(work, registry);
    const { cold, warm, etchSize } = await coldAndWarm(work, base, refs);
    process.stderr.write('bench: etch create with a tiny base image (the images alone)…\n');
    const small = work.join('small.img');
    await makeBalenaLikeImage(small, { dataMiB: 8 });
    const imagesOnly = await createEtch(small, refs, work.join('cache-2'), work.join('small.etch'));
    process.stderr.write('bench: cp of the base image + sync, and etch create of the base image alone…\n');
    const copy = await baseCopy(base, work);
    const alone = await baseOnly(base, work);
    printRows([
      ['synthetic images', `${mb(compressed)} compressed; base image ${mb(baseSize)}; .etch ${mb(etchSize)}`],
      ['etch create, cold cache', `${fmt(cold.seconds)}  (peak RSS ${mb(cold.peak)})`],
      ['etch create, warm cache', `${fmt(warm.seconds)}  (peak RSS ${mb(warm.peak)})`],
      ['etch create, images only (tiny base)', `${fmt(imagesOnly.seconds)}  (peak RSS ${mb(imagesOnly.peak)})`],
      ['warm / cold create', ratio(warm.seconds, cold.seconds, '≤ 0.30')],
      ...baseCopyRows({ cold, warm, copy, imagesOnly, alone }),
    ]);
  } finally {
    await registry.stop();
    await work.remove();
  }
}

/** A peak RSS beside goal 4 of issue 17. */
const rssGoal = (bytes) => `${mb(bytes)}  (goal ≤ 143 MiB = 150 MB)`;

/** The `etch create` of the engine-built images, images only (a tiny base), into a cache dir of its own. */
function createImagesOnly(refs, base, work, tag, extraNodeArgs = []) {
  const args = createArgs(base, refs, join(work, `cache-real-${tag}`), join(work, `real-${tag}.etch`));
  // With Node flags of its own the binary is run through node, with its shebang's flags repeated.
  if (extraNodeArgs.length === 0) return timed(etchBin, args);
  return timed(process.execPath, [...extraNodeArgs, ...etchNodeFlags, etchBin, ...args]);
}

/**
 * BENCH_ONLY=realistic: the engine-built workload alone, `etch create` (images only, cold) and `docker pull`
 * into a fresh dockerd alternating, medians printed with the load: a shared machine's noise drifts, and
 * alternating spreads it over both.
 */
async function realisticOnly() {
  ensureTools([...BASE_TOOLS, ...DISK_TOOLS, ...REGISTRY_SERVER_TOOLS, ...DOCKERD_TOOLS]);
  if (process.getuid?.() !== 0) throw new Error('pnpm bench starts dockerd: run it as root.');
  const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
  const work = await createTempDir('etch-bench-');
  const registry = await startRegistryServer();
  try {
    process.stderr.write('bench: realistic workload: building images from real files with the engine…\n');
    const builder = await startDockerd();
    let real;
    try {
      real = await buildRealisticImages(work.path, builder, registry);
    } finally {
      await builder.stop();
    }
    const realLayers = await layerTotals(real.refs);
    const small = work.join('small.img');
    await makeBalenaLikeImage(small, { dataMiB: 8 });
    const profile = process.env['BENCH_PROFILE'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['BENCH_PROFILE']] : [];
    const creates = [];
    const pulls = [];
    const loads = [];
    for (let i = 0; i < RUNS; i++) {
      loads.push(loadavg()[0]);
      process.stderr.write(
        `bench: etch create / docker pull, run ${i + 1} of ${RUNS} (load ${loads.at(-1).toFixed(2)})…\n`,
      );
      creates.push(await createImagesOnly(real.refs, small, work.path, i, profile));
      await rm(work.join(`real-${i}.etch`));
      // The last run's cache stays for the warm run below.
      if (i < RUNS - 1) await rm(work.join(`cache-real-${i}`), { recursive: true });
      const engine = await startDockerd();
      try {
        pulls.push(await dockerPull(engine, real.refs));
      } finally {
        await engine.stop();
      }
    }
    process.stderr.write('bench: etch create (images only, warm)…\n');
    const warm = await createImagesOnly(real.refs, small, work.path, RUNS - 1);
    const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
    const create = median(creates.map((c) => c.seconds));
    const pull = median(pulls);
    const list = (values, f) => values.map(f).join(', ');
    printRows([
      [
        'engine-built images',
        `3 images from this machine's /usr, ${realLayers.count} unique layers, ${mb(realLayers.bytes)} compressed, ${mb(real.bytes)} in ${real.entries} entries unpacked; load (1 min) at each run ${list(loads, (l) => l.toFixed(2))}`,
      ],
      ['etch create, images only (tiny base)', `median ${fmt(create)}  (${list(creates, (c) => fmt(c.seconds))})`],
      ['docker pull (fresh dockerd)', `median ${fmt(pull)}  (${list(pulls, fmt)})`],
      ['images-only create / docker pull', `${(create / pull).toFixed(2)}  (goal ≤ 0.50; first milestone < 1.0)`],
      ['peak RSS of the creates, worst', rssGoal(Math.max(...creates.map((c) => c.peak)))],
      ['etch create, warm cache (images only)', fmt(warm.seconds)],
      ['peak RSS of the warm create', rssGoal(warm.peak)],
    ]);
  } finally {
    await registry.stop();
    await work.remove();
  }
}

/**
 * The `.etch` of the apply rows: the ~1 GiB base and one image whose single layer is real files of this
 * machine (ROOTFS_DIRS: thousands of files, a few hundred MB, directories of hundreds of entries), built from
 * a local OCI layout: no engine, no registry.
 */
async function buildApplyEtch(work, base) {
  const layout = work.join('apply-layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const tar = work.join('rootfs.tar');
  const dirs = ROOTFS_DIRS.filter((dir) => existsSync(join('/', dir)));
  await run('tar', ['--numeric-owner', '-C', '/', '-cf', tar, ...dirs]);
  const layers = { rootfs: await addLayer(join(layout, 'blobs', 'sha256'), tar) };
  await rm(tar);
  await writeImages(layout, layers, { rootfs: ['rootfs'] });
  const etch = work.join('apply.etch');
  await run(etchBin, createArgs(base, [`oci:${layout}:rootfs`], work.join('apply-cache'), etch));
  await rm(work.join('apply-cache'), { recursive: true, force: true });
  await rm(layout, { recursive: true });
  // The base image is the entry that is neither VERSION, requirements.json nor an inject entry.
  const { stdout } = await run('tar', ['-tvf', etch]);
  const lines = stdout.trim().split('\n');
  const name = (line) => line.split(/\s+/).slice(5).join(' ');
  const injected = lines.filter((line) => name(line).startsWith('inject/6/'));
  const baseName = lines.map(name).find((n) => !n.startsWith('inject/') && !/^(VERSION|requirements\.json)$/.test(n));
  const bytes = injected.reduce((n, line) => n + (line.startsWith('-') ? Number(line.split(/\s+/)[2]) : 0), 0);
  return { etch, baseName, entries: injected.length, bytes, size: (await stat(etch)).size };
}

// The loop-mount baseline of issue 17's goal 6: the base image written with tar -xO, partition 6 mounted
// through a loop device, the inject/6/ entries extracted into it with xattrs and numeric owners, synced.
const LOOP_BASELINE = `set -e
etch=$1 base=$2 img=$3 mnt=$4 offset=$5
tar -xOf "$etch" "$base" > "$img"
mount -o loop,offset="$offset" "$img" "$mnt"
trap 'umount "$mnt"' EXIT
tar -xf "$etch" -C "$mnt" --xattrs --xattrs-include='*' --numeric-owner --strip-components=2 --wildcards 'inject/6/*'
umount "$mnt"
trap - EXIT
sync "$img"`;

/**
 * Issue 17's goal 6: `etch apply` onto an image file against the loop-mount baseline, best of two each. The
 * base image has room for the entries (600 MiB of its data partition filled), as the baseline needs.
 */
async function applyRows(work) {
  process.stderr.write('bench: apply: building a ~1 GiB base image with room in its data partition…\n');
  const { base, dataOffset } = await makeBase(work, 600, 'apply-base.img');
  process.stderr.write("bench: apply: building a .etch of the base and an image of this machine's files…\n");
  const { etch, baseName, entries, bytes, size } = await buildApplyEtch(work, base);
  const out = work.join('applied.img');
  const mnt = work.join('mnt');
  await mkdir(mnt, { recursive: true });
  const loadBefore = loadavg()[0];
  const applies = [];
  const mounted = [];
  const baselines = [];
  // Alternating, so drifting load on a shared machine falls on all three.
  for (let i = 0; i < 2; i++) {
    process.stderr.write(`bench: apply: etch apply, etch apply --mount, loop-mount baseline, run ${i + 1} of 2…\n`);
    applies.push(await timed(etchBin, ['apply', etch, '-o', out, '-q']));
    await rm(out);
    mounted.push(await timed(etchBin, ['apply', etch, '-o', out, '-q', '--mount']));
    await rm(out);
    baselines.push(await timed('sh', ['-c', LOOP_BASELINE, 'sh', etch, baseName, out, mnt, String(dataOffset)]));
    await rm(out);
  }
  process.stderr.write('bench: apply: etch apply --size 4G, for the allocated size…\n');
  await run(etchBin, ['apply', etch, '-o', out, '-q', '--size', '4G']);
  const grown = await stat(out);
  await rm(out);
  const best = (runs) => runs.reduce((a, b) => (a.seconds <= b.seconds ? a : b));
  const [apply, mount, baseline] = [best(applies), best(mounted), best(baselines)];
  return [
    [
      'apply: .etch',
      `${mb(size)}: base image ${mb((await stat(base)).size)} + ${entries} inject/6 entries, ${mb(bytes)} of files; load ${loadBefore.toFixed(2)} (1 min) at start, ${loadavg()[0].toFixed(2)} at end`,
    ],
    [
      'etch apply onto an image file',
      `${fmt(apply.seconds)}  (best of 2: ${applies.map((r) => fmt(r.seconds)).join(', ')}; peak RSS ${mb(apply.peak)})`,
    ],
    [
      'tar -xO base + loop mount + tar -x + sync',
      `${fmt(baseline.seconds)}  (best of 2: ${baselines.map((r) => fmt(r.seconds)).join(', ')})`,
    ],
    [
      'etch apply --mount (loop mount + bsdtar)',
      `${fmt(mount.seconds)}  (best of 2: ${mounted.map((r) => fmt(r.seconds)).join(', ')}; peak RSS ${mb(mount.peak)})`,
    ],
    ['etch apply / loop-mount baseline', ratio(apply.seconds, baseline.seconds, '≤ 1.50')],
    ['etch apply --mount / loop-mount baseline', ratio(mount.seconds, baseline.seconds, '≤ 1.50')],
    [
      'etch apply --size 4G: allocated / apparent',
      `${mb(grown.blocks * 512)} / ${mb(grown.size)}  (goal: sparse, about the content)`,
    ],
  ];
}

/** BENCH_ONLY=apply: the apply rows alone (root: the baseline mounts a loop device). */
async function applyOnly() {
  ensureTools([...BASE_TOOLS, ...DISK_TOOLS]);
  if (process.getuid?.() !== 0) throw new Error('The apply baseline mounts a loop device: run it as root.');
  const work = await createTempDir('etch-bench-');
  try {
    printRows(await applyRows(work));
  } finally {
    await work.remove();
  }
}

async function main() {
  if (process.env['BENCH_ONLY'] === 'copy') return copyOnly();
  if (process.env['BENCH_ONLY'] === 'warm') return warmOnly();
  if (process.env['BENCH_ONLY'] === 'realistic') return realisticOnly();
  if (process.env['BENCH_ONLY'] === 'apply') return applyOnly();
  if (process.env['BENCH_ONLY'] !== undefined)
    throw new Error(`BENCH_ONLY=${process.env['BENCH_ONLY']}: the selections are copy, warm, realistic and apply.`);
  ensureTools([...BASE_TOOLS, ...DISK_TOOLS, ...REGISTRY_SERVER_TOOLS, ...DOCKERD_TOOLS]);
  if (process.getuid?.() !== 0) throw new Error('pnpm bench starts dockerd: run it as root.');
  const work = await createTempDir('etch-bench-');
  const registry = await startRegistryServer();
  let engine;
  let builder;
  try {
    process.stderr.write('bench: building images and a ~1 GiB base image…\n');
    const { layout, layers, compressed, base, baseSize, refs } = await createWorkload(work, registry);
    const { cold, warm, etchSize } = await coldAndWarm(work, base, refs);
    process.stderr.write('bench: cp of the base image + sync, and etch create of the base image alone…\n');
    const copy = await baseCopy(base, work);
    const alone = await baseOnly(base, work);
    process.stderr.write('bench: etch create with a tiny base image (the images alone)…\n');
    const small = work.join('small.img');
    await makeBalenaLikeImage(small, { dataMiB: 8 });
    // BENCH_PROFILE=DIR writes a V8 CPU profile of this run there (open it in Chrome's DevTools).
    const profile = process.env['BENCH_PROFILE'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['BENCH_PROFILE']] : [];
    const imagesOnly = await timed(profile.length ? process.execPath : etchBin, [
      ...(profile.length ? [...profile, ...etchNodeFlags, etchBin] : []),
      'create',
      '--base',
      small,
      ...refs.flatMap((r) => ['--image', r]),
      '--platform',
      'linux/amd64',
      '--ignore-base-repositories',
      '--cache-dir',
      work.join('cache-2'),
      '-o',
      work.join('small.etch'),
      '-q',
    ]);

    process.stderr.write('bench: docker pull into a fresh dockerd…\n');
    engine = await startDockerd();
    const pull = await dockerPull(engine, refs);
    process.stderr.write('bench: skopeo copy to directories…\n');
    const skopeo = await skopeoCopy(refs, work.path);

    process.stderr.write('bench: realistic workload: building images from real files with the engine…\n');
    builder = await startDockerd();
    const real = await buildRealisticImages(work.path, builder, registry);
    await builder.stop();
    builder = undefined;
    const realLayers = await layerTotals(real.refs);
    process.stderr.write('bench: realistic workload: etch create (images only, cold)…\n');
    const realCreate = await createImagesOnly(real.refs, small, work.path, 'main');
    await rm(work.join('real-main.etch'));
    process.stderr.write('bench: realistic workload: etch create (images only, warm)…\n');
    // The same cache again: every layer from the cache of converted layers, checked as it is read.
    const realWarm = await createImagesOnly(real.refs, small, work.path, 'main');
    await rm(work.join('real-main.etch'));
    process.stderr.write('bench: realistic workload: docker pull and skopeo copy…\n');
    const realPull = await dockerPull(engine, real.refs);
    const realSkopeo = await skopeoCopy(real.refs, work.join('real-skopeo'));

    process.stderr.write('bench: start-up…\n');
    const nodeStart = await medianOf(7, process.execPath, ['-e', '0']);
    const etchStart = await medianOf(7, etchBin, ['--version']);

    const rows = [
      [
        'synthetic images',
        `3 images, 4 unique layers of random data, ${mb(compressed)} compressed; base image ${mb(baseSize)}; .etch ${mb(etchSize)}`,
      ],
      ['etch create, cold cache', `${fmt(cold.seconds)}  (peak RSS ${mb(cold.peak)})`],
      ['etch create, warm cache', `${fmt(warm.seconds)}  (peak RSS ${mb(warm.peak)})`],
      ['etch create, images only (tiny base)', `${fmt(imagesOnly.seconds)}  (peak RSS ${mb(imagesOnly.peak)})`],
      ['docker pull (fresh dockerd)', fmt(pull)],
      ['skopeo copy to dir:', fmt(skopeo)],
      ['images-only create / docker pull', ratio(imagesOnly.seconds, pull, '≤ 0.50')],
      ['peak RSS, worst of the creates above', rssGoal(Math.max(cold.peak, warm.peak, imagesOnly.peak))],
      ['cold create / docker pull', ratio(cold.seconds, pull)],
      ['cold create / skopeo copy', ratio(cold.seconds, skopeo)],
      ['warm / cold create', ratio(warm.seconds, cold.seconds, '≤ 0.30')],
      ...baseCopyRows({ cold, warm, copy, imagesOnly, alone }),
      [
        'engine-built images',
        `3 images from this machine's /usr, ${realLayers.count} unique layers, ${mb(realLayers.bytes)} compressed, ${mb(real.bytes)} in ${real.entries} entries unpacked`,
      ],
      ['etch create, images only (tiny base)', `${fmt(realCreate.seconds)}  (peak RSS ${mb(realCreate.peak)})`],
      ['docker pull (fresh dockerd)', fmt(realPull)],
      ['skopeo copy to dir:', fmt(realSkopeo)],
      ['images-only create / docker pull', ratio(realCreate.seconds, realPull, '≤ 0.50; first milestone < 1.0')],
      ['images-only create / skopeo copy', ratio(realCreate.seconds, realSkopeo)],
      ['peak RSS of that create', rssGoal(realCreate.peak)],
      ['etch create, warm cache (images only)', `${fmt(realWarm.seconds)}  (peak RSS ${mb(realWarm.peak)})`],
      [
        'peak RSS, worst of the runs',
        rssGoal(Math.max(cold.peak, warm.peak, imagesOnly.peak, realCreate.peak, realWarm.peak)),
      ],
      [
        'start-up: etch --version / node -e 0',
        `${ratio(etchStart, nodeStart, '≤ 2')}  (${fmt(etchStart)} / ${fmt(nodeStart)}, medians of 7)`,
      ],
    ];
    process.stderr.write('bench: etch copy against skopeo copy…\n');
    rows.push(...(await copyRows(layout, 'one', imageBytes(layers, 'one'))));
    rows.push(...(await applyRows(work)));
    printRows(rows);
  } finally {
    await builder?.stop();
    await engine?.stop();
    await registry.stop();
    await work.remove();
  }
}

main().catch((error) => {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  process.exitCode = 1;
});
