import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { EtchError, type Logger } from '@etch/format';
import type { PartitionInfo } from '@etch/disk';
import { runTool } from './exec.js';

/** Mounts made by this process and not yet undone: unmounted lazily if the process exits first. */
const active = new Set<string>();
let exitHookInstalled = false;

/** Whether `path` is a mount point now, from the kernel's table (an unescaped path is compared). */
export function isMounted(path: string): boolean {
  const escaped = path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === escaped);
}

/**
 * A second Ctrl-C ends the process at once: whatever is still mounted is detached on the way out (a lazy
 * unmount, synchronous, as nothing asynchronous runs any more), so no mount outlives etch.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const path of active) spawnSync('umount', ['-l', path], { stdio: 'ignore' });
  });
}

/**
 * Loop-mounts partition `partition` of `image` read-write on `mountpoint`. nosuid/nodev/noexec: nothing on it
 * runs or opens as a device while it is mounted (mknod still works); noinit_itable: no kernel thread zeroing
 * inode tables, which would fill an image file's holes; errors=remount-ro: a damaged filesystem stops the
 * writes, whatever its superblock asks for (errors=panic would take the host down). `mount` runs in its own
 * process group and is not stopped by the signal: killed half-way it could leave a mount nobody undoes.
 */
export async function loopMount(image: string, partition: PartitionInfo, mountpoint: string): Promise<void> {
  installExitHook();
  const options = [
    'loop',
    `offset=${partition.offset}`,
    `sizelimit=${partition.size}`,
    'nosuid',
    'nodev',
    'noexec',
    'noinit_itable',
    'errors=remount-ro',
  ].join(',');
  try {
    await runTool('mount', ['-w', '-t', 'ext4', '-o', options, image, mountpoint], { detached: true });
    active.add(mountpoint);
  } catch (error) {
    // A mount that happened although `mount` reported a failure is undone here, or nobody would.
    if (isMounted(mountpoint)) await runTool('umount', [mountpoint], { detached: true, allowFailure: true });
    throw new EtchError(
      'ETCH_IO',
      `Mounting partition ${partition.number} failed (${(error as Error).message}); apply without --mount, which writes it with debugfs.`,
      { cause: error },
    );
  }
}

/**
 * Unmounts what {@link loopMount} mounted. A failed `umount` that unmounted anyway counts as done; one that
 * left it mounted (busy: a process of the host looking inside) detaches it lazily and fails, since the loop
 * device then stays until that process lets go.
 */
export async function loopUnmount(mountpoint: string, logger?: Logger): Promise<void> {
  if (!active.has(mountpoint)) return;
  const result = await runTool('umount', [mountpoint], { detached: true, allowFailure: true });
  if (result.code !== 0 && isMounted(mountpoint)) {
    logger?.warn('unmounting failed; detaching lazily', { mountpoint, reason: result.stderr.trim() });
    await runTool('umount', ['-l', mountpoint], { detached: true, allowFailure: true });
    active.delete(mountpoint);
    throw new EtchError(
      'ETCH_IO',
      `Unmounting ${mountpoint} failed (${result.stderr.trim()}); it was detached lazily, and its loop device stays until whatever keeps it busy lets go.`,
    );
  }
  active.delete(mountpoint);
}
