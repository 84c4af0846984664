import { spawnSync } from 'node:child_process';

/** A command the tests need, and the Debian package that provides it. */
export interface RequiredTool {
  command: string;
  aptPackage: string;
}

/** Tools every suite may use. Suites that need daemons add their own. */
export const BASE_TOOLS: readonly RequiredTool[] = [
  { command: 'tar', aptPackage: 'tar' },
  { command: 'gzip', aptPackage: 'gzip' },
  { command: 'zstd', aptPackage: 'zstd' },
  { command: 'xz', aptPackage: 'xz-utils' },
  { command: 'setfattr', aptPackage: 'attr' },
];

/** Tools that build and check disk images: partition tables, ext4 and FAT filesystems. */
export const DISK_TOOLS: readonly RequiredTool[] = [
  { command: 'sfdisk', aptPackage: 'fdisk' },
  { command: 'mkfs.ext4', aptPackage: 'e2fsprogs' },
  { command: 'debugfs', aptPackage: 'e2fsprogs' },
  { command: 'mkfs.vfat', aptPackage: 'dosfstools' },
  { command: 'mcopy', aptPackage: 'mtools' },
  { command: 'fsck.vfat', aptPackage: 'dosfstools' },
  { command: 'zip', aptPackage: 'zip' },
  // etch apply --mount extracts with bsdtar, which refuses to follow a symlink of the target.
  { command: 'bsdtar', aptPackage: 'libarchive-tools' },
];

/** Tools that make a registry's credentials: bcrypt htpasswd files and the token server's certificate. */
export const REGISTRY_AUTH_TOOLS: readonly RequiredTool[] = [
  { command: 'htpasswd', aptPackage: 'apache2-utils' },
  { command: 'openssl', aptPackage: 'openssl' },
];

/** A terminal the CLI's progress display is tested in (detached panes of a chosen size). */
export const TERMINAL_TOOLS: readonly RequiredTool[] = [{ command: 'tmux', aptPackage: 'tmux' }];

function hasCommand(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

function apt(args: string[]): void {
  const result = spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=600', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (result.status !== 0) {
    throw new Error(
      `apt-get ${args.join(' ')} failed (${result.status}): ${result.stderr?.toString() ?? result.error}`,
    );
  }
}

/**
 * Makes sure every tool is on PATH, installing the missing ones with apt-get (the tests run as root on Debian).
 * Throws, loudly, when a tool cannot be had: a test that needs it must not pass without it.
 */
export function ensureTools(tools: readonly RequiredTool[]): void {
  const missing = tools.filter((tool) => !hasCommand(tool.command));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((tool) => tool.aptPackage))];
  try {
    apt(['update', '-qq']);
    apt(['install', '-y', '-qq', '--no-install-recommends', ...packages]);
  } catch (cause) {
    throw new Error(
      `The tests need ${missing.map((t) => t.command).join(', ')} (Debian: ${packages.join(' ')}) and could not install them. ` +
        'Install them by hand (as root: apt-get install ' +
        packages.join(' ') +
        ') and run again.',
      { cause },
    );
  }
  const still = missing.filter((tool) => !hasCommand(tool.command));
  if (still.length > 0) {
    throw new Error(`After apt-get install, still missing: ${still.map((t) => t.command).join(', ')}.`);
  }
}
