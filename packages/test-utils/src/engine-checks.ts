import type { Dockerd } from './dockerd.js';

/**
 * What a container of `ref` sees: every path with type, mode, owner, size, mtime and content hash, and
 * whether the fixtures' hardlink pair is still one inode. Two engines that agree on this run the same image.
 * The fixture images carry busybox at /bin/busybox (see engine-images.ts).
 */
export async function containerFingerprint(engine: Dockerd, ref: string): Promise<string> {
  const script = [
    'cd /',
    // -xdev keeps /proc, /sys and /dev out; the files docker bind-mounts per container are dropped by name.
    'busybox find / -xdev | busybox sort | while read -r p; do case "$p" in /etc/hosts|/etc/hostname|/etc/resolv.conf|/.dockerenv|/proc|/sys|/dev) continue;; esac;',
    'if [ -L "$p" ]; then busybox echo "$p link $(busybox readlink "$p") $(busybox stat -c "%u:%g" "$p")";',
    'elif [ -f "$p" ]; then busybox echo "$p file $(busybox stat -c "%a %u:%g %s %Y" "$p") $(busybox md5sum < "$p" | busybox cut -c1-32)";',
    'else busybox echo "$p $(busybox stat -c "%F %a %u:%g" "$p")"; fi; done',
    // Hardlinks must stay one inode.
    'if [ /data/file.txt -ef /data/hard.txt ]; then echo "hardlink ok"; else echo "hardlink broken"; fi',
  ].join('\n');
  const result = await engine.docker([
    'run',
    '--rm',
    '--network',
    'none',
    '--entrypoint',
    '/bin/busybox',
    ref,
    'sh',
    '-c',
    script,
  ]);
  return result.stdout;
}

/** `repository tag id digest` rows of `docker images --digests` for images from `host`, sorted. */
export async function engineImageRows(engine: Dockerd, host: string): Promise<string[]> {
  const result = await engine.docker([
    'images',
    '--digests',
    '--no-trunc',
    '--format',
    '{{.Repository}} {{.Tag}} {{.ID}} {{.Digest}}',
  ]);
  return result.stdout
    .split('\n')
    .filter((line) => line.startsWith(host))
    .sort();
}
