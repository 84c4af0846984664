import { randomBytes } from 'node:crypto';
import { open, readFile, realpath, rename, rm, stat, truncate, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EtchError } from '@etch/format';
import { runTool } from './exec.js';

/** Where the disk is written: an image file (through a temporary name) or a block device. */
export interface Target {
  kind: 'file' | 'device';
  /** The path the tools write to (the temporary file for an image). */
  path: string;
  /** Size of the device; for a file, its current size. */
  size(): Promise<number>;
  /** Makes the image at least `bytes` long (files only). */
  extendTo(bytes: number): Promise<void>;
  /** Flushes to stable storage and, for a file, renames it to its final name. */
  commit(): Promise<void>;
  /** Removes the temporary file; a device is left as it is. */
  abort(): Promise<void>;
}

/** Devices that back a mounted filesystem or swap, and the disk that holds `/`. */
async function devicesInUse(): Promise<{ mounted: string[]; system: string[] }> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const swaps = await readFile('/proc/swaps', 'utf8').catch(() => '');
  const mounted = [...mounts.split('\n').map((line) => line.split(' ')[0] ?? ''), ...swaps.split('\n').slice(1).map((line) => line.split(/\s+/)[0] ?? '')].filter((d) => d.startsWith('/dev/'));
  const root = mounts.split('\n').find((line) => line.split(' ')[1] === '/')?.split(' ')[0];
  return { mounted, system: root?.startsWith('/dev/') ? [root] : [] };
}

/** `/dev/sda1` belongs to `/dev/sda`, `/dev/nvme0n1p2` to `/dev/nvme0n1`, `/dev/loop0p1` to `/dev/loop0`. */
function belongsTo(partition: string, disk: string): boolean {
  return partition === disk || new RegExp(`^${disk.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}p?\\d+$`).test(partition);
}

async function deviceTarget(path: string, force: boolean): Promise<Target> {
  const device = await realpath(path);
  if (!force) {
    const { mounted, system } = await devicesInUse();
    const resolvedMounted = await Promise.all(mounted.map((m) => realpath(m).catch(() => m)));
    const resolvedSystem = await Promise.all(system.map((m) => realpath(m).catch(() => m)));
    if (resolvedSystem.some((s) => belongsTo(s, device))) {
      throw new EtchError('ETCH_USAGE', `${path} holds the running system's root filesystem; refusing to overwrite it (use --force only if you are sure).`);
    }
    const busy = resolvedMounted.filter((m) => belongsTo(m, device));
    if (busy.length > 0) throw new EtchError('ETCH_USAGE', `${path} is in use (${busy.join(', ')} mounted or swap); unmount it first, or use --force.`);
  }
  let handle: FileHandle | undefined = await open(device, 'r+');
  return {
    kind: 'device',
    path: device,
    async size() {
      const { stdout } = await runTool('blockdev', ['--getsize64', device]);
      return Number(stdout.trim());
    },
    async extendTo() {
      // A device cannot grow; growPartitionTo checks its size instead.
    },
    async commit() {
      // Flush the page cache for the device to the medium before reporting success.
      await handle?.sync();
      await handle?.close();
      handle = undefined;
    },
    async abort() {
      await handle?.close();
      handle = undefined;
    },
  };
}

async function fileTarget(path: string): Promise<Target> {
  const temporary = join(dirname(path), `.${basename(path)}.etch-apply-${randomBytes(4).toString('hex')}`);
  // Exclusive create: never clobber a file we did not make.
  await (await open(temporary, 'wx')).close();
  return {
    kind: 'file',
    path: temporary,
    size: async () => (await stat(temporary)).size,
    async extendTo(bytes) {
      if ((await stat(temporary)).size < bytes) await truncate(temporary, bytes);
    },
    async commit() {
      const handle = await open(temporary, 'r+');
      await handle.sync();
      await handle.close();
      await rename(temporary, path);
    },
    abort: () => rm(temporary, { force: true }),
  };
}

/**
 * Opens where a `.etch` is applied. A block device is refused when it is mounted, used as swap or holds the
 * root filesystem, unless `force`; an image file is written under a temporary name and only renamed into
 * place once everything is written (and verified), so a failed apply never leaves an image that looks done.
 */
export async function openTarget(path: string, options: { force?: boolean } = {}): Promise<Target> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isBlockDevice()) return deviceTarget(path, Boolean(options.force));
  if (info !== undefined && !info.isFile()) throw new EtchError('ETCH_USAGE', `${path} is neither a regular file nor a block device.`);
  return fileTarget(path);
}
