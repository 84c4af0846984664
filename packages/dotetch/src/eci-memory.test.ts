// `etch eci push` and `etch eci pull` of a 2 GiB root disk in bounded memory: the real CLI in a child process,
// its peak RSS sampled, against a real docker-registry (issue 14: "a 2 GiB root disk streams in bounded memory").
import { randomBytes } from 'node:crypto';
import { mkdir, open, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { run, startRegistryServer, type RegistryServer } from '@etch/test-utils/system';
import { runEtch } from './hostile/run-etch.test.helper.js';

const GIB = 1024 * 1024 * 1024;
// Two 16 MiB chunks in flight, the read-ahead and Node itself: well under a quarter of the disk's size in MiB.
const BOUND_MIB = 256;

let dir: TempDir;
let registry: RegistryServer;

beforeAll(async () => {
  dir = await createTempDir('etch-eci-memory-');
  registry = await startRegistryServer();
  await mkdir(dir.join('tmp'), { recursive: true });
  // 2 GiB, sparse, with random data at the start, the middle and the end, so no part is left unchecked.
  const file = await open(dir.join('root.img'), 'w');
  try {
    await file.truncate(2 * GIB);
    for (const at of [0, GIB - 4096, 2 * GIB - 1024 * 1024])
      await file.write(randomBytes(1024 * 1024), 0, 1024 * 1024, at);
  } finally {
    await file.close();
  }
}, 60_000);

afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
});

describe('etch eci memory', () => {
  it('pushes and pulls a 2 GiB root disk with peak RSS under 256 MiB, byte-identical', async () => {
    const sandbox = { cwd: dir.path, tmp: dir.join('tmp'), cache: dir.join('cache') };
    const ref = `${registry.host}/eci/big:1`;
    const push = await runEtch(['eci', 'push', '--root', 'root.img:raw', ref, '--json'], sandbox, {
      timeoutMs: 240_000,
      maxRssMiB: 1024,
    });
    expect(push.code, push.stderr).toBe(0);
    const pull = await runEtch(['eci', 'pull', ref, '--dir', 'out', '--json'], sandbox, {
      timeoutMs: 240_000,
      maxRssMiB: 1024,
    });
    expect(pull.code, pull.stderr).toBe(0);
    console.log(
      `etch eci 2 GiB: push ${push.peakRssMiB} MiB peak RSS in ${push.ms} ms; pull ${pull.peakRssMiB} MiB in ${pull.ms} ms`,
    );
    expect(push.peakRssMiB, 'push: peak RSS in MiB').toBeLessThan(BOUND_MIB);
    expect(pull.peakRssMiB, 'pull: peak RSS in MiB').toBeLessThan(BOUND_MIB);
    const root = JSON.parse(push.stdout).blobs.find((b: { name: string }) => b.name === 'disk-root-root.img');
    expect(root, 'the root disk blob').toMatchObject({ size: 2 * GIB, how: 'uploaded' });
    const pulled = dir.join('out', 'disk-root-root.img');
    expect((await stat(pulled)).size, 'pulled size').toBe(2 * GIB);
    // cmp, not two more sha256 passes over 2 GiB: the pull already checked the digest push measured.
    const same = await run('cmp', [dir.join('root.img'), pulled], { allowFailure: true });
    expect(same.code, `cmp of source and pulled disk: ${same.stdout}`).toBe(0);
  }, 300_000);
});
