import { mkdir, readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { removeStaleStages, stagePrefix } from './plan.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('etch-serve-plan-');
});
afterAll(async () => {
  await dir?.remove();
});

describe('removeStaleStages', () => {
  it("removes the stages of this host's dead processes and keeps live ones and other hosts'", async () => {
    // No process has pid 2^22 + 1 (above Linux's pid_max ceiling of 2^22).
    const dead = `${stagePrefix()}${2 ** 22 + 1}-abcd`;
    const live = `${stagePrefix()}${process.pid}-abcd`;
    const other = 'stage-another-host-1-abcd';
    for (const name of [dead, live, other]) await mkdir(dir.join('oci', name, 'sub'), { recursive: true });
    await removeStaleStages(dir.path);
    expect((await readdir(dir.join('oci'))).sort()).toEqual([live, other].sort());
  });
});
