import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ImageCache, defaultCacheDir, type CacheEntry } from '@etch/baseimage';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';

const usage = `Usage: etch cache ls [--cache-dir DIR] [--json]
       etch cache clean [--cache-dir DIR] [--json]

  The cache of base images fetched from URLs and ECI registries (etch create --base URL|eci:…).
  ls          list the entries, newest first: name, size, source, resolved version, when stored
  clean       remove the cache's own files (entries/, blobs/, tmp/, CACHEDIR.TAG) and its directory
              when that leaves it empty; nothing else in DIR is touched
  --cache-dir DIR   the cache directory (default $XDG_CACHE_HOME/etch, else ~/.cache/etch)
  --json            print the result as JSON on stdout`;

function human(dir: string, entries: CacheEntry[]): string {
  if (entries.length === 0) return `${dir}: empty\n`;
  const total = entries.reduce((sum, e) => sum + e.size, 0);
  const rows = entries.map((e) => [e.name, formatBytes(e.size), e.resolvedVersion ?? '', e.mode, e.storedAt.replace(/\.\d+Z$/, 'Z'), e.spec]);
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...rows.map((row) => (row[i] as string).length)));
  const lines = rows.map((row) => row.map((cell, i) => (i < 5 ? cell.padEnd(widths[i] as number) : cell)).join('  ').trimEnd());
  return `${dir}: ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}, ${formatBytes(total)}\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}

export const cacheCommand: Command = {
  name: 'cache',
  summary: 'list or clean the base image cache',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () => parseArgs({ args, allowPositionals: true, options: { ...helpFlag, 'cache-dir': { type: 'string' }, json: { type: 'boolean' } } }),
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
    if (action === 'ls' || action === 'list') {
      const entries = await cache.list();
      if (values.json) context.stdout.write(`${JSON.stringify({ dir, entries }, null, 2)}\n`);
      else context.stderr.write(human(dir, entries));
      return EXIT.ok;
    }
    if (action === 'clean') {
      const removed = await cache.clean();
      if (values.json) context.stdout.write(`${JSON.stringify({ dir, removed }, null, 2)}\n`);
      else context.stderr.write(`etch: removed ${removed.entries} cached ${removed.entries === 1 ? 'image' : 'images'} (${formatBytes(removed.bytes)}) from ${dir}\n`);
      return EXIT.ok;
    }
    throw usageError(action === undefined ? 'Give ls or clean.' : `Unknown cache action ${JSON.stringify(action)}; use ls or clean.`, usage);
  },
};
