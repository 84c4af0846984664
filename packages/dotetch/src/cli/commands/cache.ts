import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ImageCache, defaultCacheDir, type CacheEntry } from '@etch/baseimage';
import type { ConvertedLayerUsage } from '@etch/docker-store';
import { BlobCache } from '@etch/registry';
import { REGISTRY_CACHE_SUBDIR } from '../registry-options.js';
import { convertedLayerCacheFor } from '../registry-cache.js';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { count, formatBytes } from '../format-bytes.js';
import { SCHEMA_VERSION, cachedBaseImageJson, jsonText, type CacheJson } from '../json.js';

const help = helpPage({
  usage: ['etch cache ls [--cache-dir DIR]', 'etch cache clean [--cache-dir DIR]'],
  description: `The cache of base images fetched from URLs and ECI registries (etch create --base URL|eci:…),
and of image layers and manifests pulled for preloading (DIR/oci), with the layers unpacked from them
(DIR/oci/converted, at most 8 GiB: the least recently used go first).
  ls      list the base images, newest first (name, size, resolved version, mode, when stored, source),
          and the number and size of cached layers and manifests, and of unpacked layers
  clean   remove the cache's own files (entries/, blobs/, tmp/, oci/, CACHEDIR.TAG), and its folder when
          that leaves it empty; nothing else in DIR is touched`,
  sections: [
    ['Options', `  --cache-dir DIR             the cache folder (default $XDG_CACHE_HOME/etch, else ~/.cache/etch)`],
    ['Output', commonHelp("ls: only the cached base images' sources, one a line; clean: nothing")],
  ],
  examples: [
    ['What is cached, and how much', 'etch cache ls'],
    ['Free the space', 'etch cache clean'],
  ],
});

function human(
  dir: string,
  entries: CacheEntry[],
  layers: { blobs: number; bytes: number },
  converted: ConvertedLayerUsage,
): string {
  const total = entries.reduce((sum, e) => sum + e.size, 0);
  const lines = [
    `${dir}`,
    `  base images           ${entries.length === 0 ? 'none' : `${entries.length}, ${formatBytes(total)}`}`,
  ];
  if (entries.length > 0) {
    const rows = entries.map((e) => [
      e.name,
      formatBytes(e.size),
      e.resolvedVersion ?? '',
      e.mode,
      e.storedAt.replace(/\.\d+Z$/, 'Z'),
      e.spec,
    ]);
    const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...rows.map((row) => (row[i] as string).length)));
    for (const row of rows)
      lines.push(
        `    ${row
          .map((cell, i) => (i < 5 ? cell.padEnd(widths[i] as number) : cell))
          .join('  ')
          .trimEnd()}`,
      );
  }
  lines.push(
    `  layers and manifests  ${layers.blobs === 0 ? 'none' : `${layers.blobs}, ${formatBytes(layers.bytes)}`}`,
    `  unpacked layers       ${converted.layers === 0 ? 'none' : `${converted.layers}, ${formatBytes(converted.bytes)}`}`,
  );
  return `${lines.join('\n')}\n`;
}

export const cacheCommand: Command = {
  name: 'cache',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() =>
      parseArgs({
        args,
        allowPositionals: true,
        options: { ...commonFlags, 'cache-dir': { type: 'string' } },
      }),
    );
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    const [action, ...rest] = positionals;
    if (rest.length > 0) throw usageError(`unexpected argument ${JSON.stringify(rest[0])}.`);
    const dir = values['cache-dir'] ? resolve(context.cwd, values['cache-dir']) : defaultCacheDir(context.env);
    const cache = new ImageCache(dir, context.logger);
    const layers = new BlobCache(join(dir, REGISTRY_CACHE_SUBDIR));
    const converted = convertedLayerCacheFor(join(dir, REGISTRY_CACHE_SUBDIR));
    if (action === 'ls' || action === 'list') {
      const entries = await cache.list();
      const blobs = await layers.usage();
      const unpacked = await converted.usage();
      const document: CacheJson = {
        schemaVersion: SCHEMA_VERSION,
        dir,
        baseImages: entries.map(cachedBaseImageJson),
        layers: { count: blobs.blobs, bytes: blobs.bytes },
        convertedLayers: { count: unpacked.layers, bytes: unpacked.bytes },
      };
      if (values.json) context.stdout.write(jsonText(document));
      else if (values.quiet) context.stdout.write(entries.map((e) => `${e.spec}\n`).join(''));
      else context.stdout.write(human(dir, entries, blobs, unpacked));
      return EXIT.ok;
    }
    if (action === 'clean') {
      const entries = await cache.list();
      const blobs = await layers.usage();
      const unpacked = await converted.usage();
      // The converted layers live inside the registry cache: clearing it removes them too.
      await layers.clear();
      const removed = await cache.clean();
      const document: CacheJson = {
        schemaVersion: SCHEMA_VERSION,
        dir,
        baseImages: entries.map(cachedBaseImageJson),
        layers: { count: blobs.blobs, bytes: blobs.bytes },
        convertedLayers: { count: unpacked.layers, bytes: unpacked.bytes },
      };
      if (values.json) context.stdout.write(jsonText(document));
      else if (!values.quiet)
        context.stdout.write(
          `removed ${count(removed.entries, 'cached base image', 'cached base images')} (${formatBytes(removed.bytes)}) and ${count(blobs.blobs, 'layer or manifest', 'layers and manifests')} (${formatBytes(blobs.bytes)}) and ${count(unpacked.layers, 'unpacked layer', 'unpacked layers')} (${formatBytes(unpacked.bytes)}) from ${dir}\n`,
        );
      return EXIT.ok;
    }
    throw usageError(
      action === undefined ? 'give ls or clean.' : `unknown cache action ${JSON.stringify(action)}; use ls or clean.`,
    );
  },
};
