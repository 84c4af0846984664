import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ImageCache, defaultCacheDir, type CacheEntry } from '@etch/baseimage';
import { BlobCache } from '@etch/registry';
import { REGISTRY_CACHE_SUBDIR } from '../registry-options.js';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';

const usage = `Usage: etch cache ls [--cache-dir DIR] [--json]
       etch cache clean [--cache-dir DIR] [--json]

  The cache of base images fetched from URLs and ECI registries (etch create --base URL|eci:…), and of
  image layers and manifests pulled for preloading (DIR/oci).
  ls          list the base images, newest first (name, size, source, resolved version, when stored), and
              the number and size of cached layers and manifests
  clean       remove the cache's own files (entries/, blobs/, tmp/, oci/, CACHEDIR.TAG) and its directory
              when that leaves it empty; nothing else in DIR is touched
  --cache-dir DIR   the cache directory (default $XDG_CACHE_HOME/etch, else ~/.cache/etch)
  --json            print the result as JSON on stdout`;

function human(dir: string, entries: CacheEntry[]): string {
  if (entries.length === 0) return `${dir}: empty\n`;
  const total = entries.reduce((sum, e) => sum + e.size, 0);
  const rows = entries.map((e) => [
    e.name,
    formatBytes(e.size),
    e.resolvedVersion ?? '',
    e.mode,
    e.storedAt.replace(/\.\d+Z$/, 'Z'),
    e.spec,
  ]);
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...rows.map((row) => (row[i] as string).length)));
  const lines = rows.map((row) =>
    row
      .map((cell, i) => (i < 5 ? cell.padEnd(widths[i] as number) : cell))
      .join('  ')
      .trimEnd(),
  );
  return `${dir}: ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}, ${formatBytes(total)}\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}

export const cacheCommand: Command = {
  name: 'cache',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () =>
        parseArgs({
          args,
          allowPositionals: true,
          options: { ...helpFlag, 'cache-dir': { type: 'string' }, json: { type: 'boolean' } },
        }),
      usage,
    );
    if (values.help) {
      context.stderr.write(`${usage}\n`);
      return EXIT.ok;
    }
    const [action, ...rest] = positionals;
    if (rest.length > 0) throw usageError(`Unexpected argument ${JSON.stringify(rest[0])}.`, usage);
    const dir = values['cache-dir'] ? resolve(context.cwd, values['cache-dir']) : defaultCacheDir(context.env);
    const cache = new ImageCache(dir, context.logger);
    const layers = new BlobCache(join(dir, REGISTRY_CACHE_SUBDIR));
    if (action === 'ls' || action === 'list') {
      const entries = await cache.list();
      const blobs = await layers.usage();
      if (values.json) context.stdout.write(`${JSON.stringify({ dir, entries, layers: blobs }, null, 2)}\n`);
      else
        context.stderr.write(
          `${human(dir, entries)}  layers and manifests: ${blobs.blobs}, ${formatBytes(blobs.bytes)}\n`,
        );
      return EXIT.ok;
    }
    if (action === 'clean') {
      const blobs = await layers.usage();
      await layers.clear();
      const removed = await cache.clean();
      if (values.json) context.stdout.write(`${JSON.stringify({ dir, removed, layers: blobs }, null, 2)}\n`);
      else
        context.stderr.write(
          `etch: removed ${removed.entries} cached ${removed.entries === 1 ? 'image' : 'images'} (${formatBytes(removed.bytes)}) and ${blobs.blobs} layers and manifests (${formatBytes(blobs.bytes)}) from ${dir}\n`,
        );
      return EXIT.ok;
    }
    throw usageError(
      action === undefined ? 'Give ls or clean.' : `Unknown cache action ${JSON.stringify(action)}; use ls or clean.`,
      usage,
    );
  },
};
