import { open, readFile, readdir, readlink, realpath, stat, truncate, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { EtchError } from '@etch/format';
import { AtomicFile } from '@etch/disk';
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

/** The kernel's name of a block device node (`/dev/sda1` → `sda1`, `/dev/mapper/vg-root` → `dm-0`). */
async function kernelName(path: string): Promise<string | undefined> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isBlockDevice()) return undefined;
  return nameOfDevNumber(info.rdev);
}

/** `major:minor` of a Linux device number → its kernel name, through /sys/dev/block. */
async function nameOfDevNumber(dev: number): Promise<string | undefined> {
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  const link = await readlink(`/sys/dev/block/${major}:${minor}`).catch(() => undefined);
  return link === undefined ? undefined : basename(link);
}

/**
 * Every block device built on `disk`: the disk, its partitions, and recursively what is stacked on them
 * (device-mapper: LVM, LUKS; md RAID), from the `holders` directories in sysfs.
 */
async function stackedOn(disk: string): Promise<Set<string>> {
  const found = new Set<string>([disk]);
  const partitions = (await readdir(`/sys/class/block/${disk}`).catch(() => [] as string[])).filter((name: string) =>
    name.startsWith(disk),
  );
  const queue = [disk, ...partitions];
  for (const name of partitions) found.add(name);
  while (queue.length > 0) {
    const name = queue.shift() as string;
    for (const holder of await readdir(`/sys/class/block/${name}/holders`).catch(() => [] as string[])) {
      if (!found.has(holder)) {
        found.add(holder);
        queue.push(holder);
      }
    }
  }
  return found;
}

/** Kernel names of what is mounted or used as swap, and of the device holding `/` (found by its number: `/dev/root` is no path). */
async function devicesInUse(): Promise<{ mounted: Map<string, string>; root: string | undefined }> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  const swaps = await readFile('/proc/swaps', 'utf8').catch(() => '');
  const paths = [
    ...mounts.split('\n').map((line) => line.split(' ')[0] ?? ''),
    ...swaps
      .split('\n')
      .slice(1)
      .map((line) => line.split(/\s+/)[0] ?? ''),
  ].filter((d) => d.startsWith('/dev/'));
  const mounted = new Map<string, string>();
  for (const path of paths) {
    const name = await kernelName(path);
    if (name !== undefined) mounted.set(name, path);
  }
  const root = await nameOfDevNumber((await stat('/')).dev);
  return { mounted, root };
}

async function deviceTarget(path: string, force: boolean): Promise<Target> {
  const device = await realpath(path);
  if (!force) {
    const name = await kernelName(device);
    const users = name === undefined ? new Set<string>() : await stackedOn(name);
    const { mounted, root } = await devicesInUse();
    if (root !== undefined && users.has(root)) {
      throw new EtchError(
        'ETCH_USAGE',
        `${path} holds the running system's root filesystem; refusing to overwrite it (use --force only if you are sure).`,
      );
    }
    const busy = [...mounted].filter(([kernel]) => users.has(kernel)).map(([, mount]) => mount);
    if (busy.length > 0)
      throw new EtchError(
        'ETCH_USAGE',
        `${path} is in use (${busy.join(', ')} mounted or swap); unmount it first, or use --force.`,
      );
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
  // Created exclusively beside the image, so a file we did not make is never clobbered. The tools write to it by path.
  const file = await AtomicFile.create(path);
  const temporary = file.temporaryPath;
  return {
    kind: 'file',
    path: temporary,
    size: async () => (await stat(temporary)).size,
    async extendTo(bytes) {
      if ((await stat(temporary)).size < bytes) await truncate(temporary, bytes);
    },
    commit: () => file.commit(),
    abort: () => file.abort(),
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
  if (info !== undefined && !info.isFile())
    throw new EtchError('ETCH_USAGE', `${path} is neither a regular file nor a block device.`);
  return fileTarget(path);
}
