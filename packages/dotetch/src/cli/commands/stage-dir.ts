import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, statfs } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Logger } from '@etch/format';
import { isProcessRunning } from '@etch/disk';

const STAGE_MAX_BYTES = 4 * 1024 ** 3;
const PREFIX = 'stage-';

// Host and process in the name: a run can tell its own machine's dead runs from live ones, and leaves alone
// those of other machines (or containers) sharing the cache.
const hostTag = () => hostname().replace(/[^A-Za-z0-9.-]/g, '_');

/** Removes stage directories that runs on this host left when they were killed (a crash, `kill -9`). */
async function removeStaleStages(layerCache: string, logger: Logger): Promise<void> {
  const host = hostTag();
  for (const name of await readdir(layerCache).catch(() => [] as string[])) {
    if (!name.startsWith(`${PREFIX}${host}-`)) continue;
    const pid = Number(name.slice(PREFIX.length + host.length + 1).split('-')[0]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || isProcessRunning(pid)) continue;
    logger.debug('removing a stage left by a killed run', { dir: join(layerCache, name) });
    await rm(join(layerCache, name), { recursive: true, force: true });
  }
}

/**
 * Where layers are converted ahead while the base image streams: beside the layer cache (same disk as the
 * blobs), holding at most 4 GiB or half the free space, whichever is less. Stages that killed runs of this
 * host left behind are removed first; `etch cache clean` removes any.
 */
export async function stageFor(layerCache: string, logger: Logger): Promise<{ dir: string; maxBytes: number }> {
  await mkdir(layerCache, { recursive: true });
  await removeStaleStages(layerCache, logger);
  const fs = await statfs(layerCache);
  return {
    dir: join(layerCache, `${PREFIX}${hostTag()}-${process.pid}-${randomBytes(4).toString('hex')}`),
    maxBytes: Math.min(STAGE_MAX_BYTES, Math.floor((fs.bavail * fs.bsize) / 2)),
  };
}
