import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chainIds } from '@etch/docker-store';
import { EtchError, type EtchRequirements, type InjectEntryType } from '@etch/format';
import { readEtch, type Compression } from '@etch/tar';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';

const usage = `Usage: etch inspect FILE.etch [--json]

  Reads the whole .etch, checks every rule of the format, and prints what it holds.
  --json    print the report as JSON on stdout`;

/** An image named in a `repositories.json` inside the archive, once per repository. */
export interface InspectImage {
  partition: number;
  /** Familiar repository name (`alpine`, `127.0.0.1:5000/etch/a`, `balena_supervisor`). */
  repository: string;
  tags: string[];
  digests: string[];
  imageId: string;
  /** Σ layer sizes as `docker images` shows them; absent when the image's layers are not in this .etch (an image of the base OS). */
  size?: number;
  /** True when the image's config and layers are in this `.etch`; false for names kept from the base OS. */
  preloaded: boolean;
}

/** What `etch inspect` reports. */
export interface InspectReport {
  file: string;
  version: string;
  compression: Compression;
  baseImage: { name: string; container: 'raw' | 'zip'; size: number };
  partitions: { partition: number; entries: number; bytes: number; types: Partial<Record<InjectEntryType, number>> }[];
  images: InspectImage[];
  /** Entries from a newer minor version that this reader skipped. */
  skipped: string[];
  /** 1.1: what the flasher is told each partition receives (`requirements.json`). */
  requirements?: EtchRequirements;
}

// Engine store files the report reads, wherever the data root is in the partition.
const REPOSITORIES = /(?:^|\/)image\/overlay2\/repositories\.json$/;
const IMAGE_CONFIG = /(?:^|\/)image\/overlay2\/imagedb\/content\/sha256\/([0-9a-f]{64})$/;
const LAYER_SIZE = /(?:^|\/)image\/overlay2\/layerdb\/sha256\/([0-9a-f]{64})\/size$/;
const MAX_METADATA_SIZE = 32 * 1024 * 1024;

/** What the engine store files of one partition say, gathered while the archive streams by. */
interface StoreFacts {
  repositories: { path: string; text: Buffer }[];
  diffIds: Map<string, string[]>;
  layerSizes: Map<string, number>;
}

function parseJson(text: Buffer, partition: number, path: string): unknown {
  try {
    return JSON.parse(text.toString('utf8'));
  } catch (cause) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `inject/${partition}/${path} is not valid JSON; an engine would refuse to start with it.`,
      { cause },
    );
  }
}

function imagesFrom(partition: number, facts: StoreFacts): InspectImage[] {
  const images: InspectImage[] = [];
  for (const { path, text } of facts.repositories) {
    const repositories =
      (parseJson(text, partition, path) as { Repositories?: Record<string, Record<string, string>> })?.Repositories ??
      {};
    for (const [repository, refs] of Object.entries(repositories)) {
      const byImage = new Map<string, InspectImage>();
      for (const [reference, imageId] of Object.entries(refs ?? {})) {
        let image = byImage.get(imageId);
        if (image === undefined) {
          const diffIds = facts.diffIds.get(imageId);
          const sizes =
            diffIds === undefined ? undefined : chainIds(diffIds).map((chain) => facts.layerSizes.get(chain));
          const size = sizes?.every((n) => n !== undefined) ? sizes.reduce((sum: number, n) => sum + n, 0) : undefined;
          image = {
            partition,
            repository,
            tags: [],
            digests: [],
            imageId,
            ...(size !== undefined ? { size } : {}),
            preloaded: diffIds !== undefined,
          };
          byImage.set(imageId, image);
          images.push(image);
        }
        const at = reference.lastIndexOf('@');
        if (at > 0) image.digests.push(reference.slice(at + 1));
        else image.tags.push(reference.slice(reference.lastIndexOf(':') + 1));
      }
    }
  }
  return images;
}

async function readSmall(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Reads and validates a whole `.etch`, returning what it contains. */
export async function inspectEtch(path: string, signal?: AbortSignal): Promise<InspectReport> {
  const partitions = new Map<number, InspectReport['partitions'][number]>();
  const stores = new Map<number, StoreFacts>();
  const report: Partial<InspectReport> & { images: InspectImage[]; skipped: string[] } = {
    file: path,
    images: [],
    skipped: [],
  };
  const input = createReadStream(path);
  try {
    await new Promise<void>((ok, fail) => input.once('open', () => ok()).once('error', fail));
  } catch (cause) {
    throw new EtchError('ETCH_IO', `Cannot read ${path}: ${(cause as Error).message}.`, { cause, details: { path } });
  }
  for await (const entry of readEtch(input, signal ? { signal } : {})) {
    switch (entry.kind) {
      case 'version':
        report.version = `${entry.version.major}.${entry.version.minor}`;
        report.compression = entry.compression;
        break;
      case 'base-image':
        report.baseImage = { name: entry.name, container: entry.container, size: entry.size };
        break;
      case 'inject': {
        let stats = partitions.get(entry.partition);
        if (stats === undefined) {
          stats = { partition: entry.partition, entries: 0, bytes: 0, types: {} };
          partitions.set(entry.partition, stats);
        }
        stats.entries += 1;
        stats.bytes += entry.size;
        stats.types[entry.type] = (stats.types[entry.type] ?? 0) + 1;
        if (entry.type !== 'file' || !entry.stream || entry.size > MAX_METADATA_SIZE) break;
        const config = IMAGE_CONFIG.exec(entry.path);
        const layer = LAYER_SIZE.exec(entry.path);
        if (!config && !layer && !REPOSITORIES.test(entry.path)) break;
        let facts = stores.get(entry.partition);
        if (facts === undefined) {
          facts = { repositories: [], diffIds: new Map(), layerSizes: new Map() };
          stores.set(entry.partition, facts);
        }
        const text = await readSmall(entry.stream);
        if (config) {
          const diffIds = (parseJson(text, entry.partition, entry.path) as { rootfs?: { diff_ids?: unknown } })?.rootfs
            ?.diff_ids;
          if (Array.isArray(diffIds)) facts.diffIds.set(`sha256:${config[1]}`, diffIds.map(String));
        } else if (layer) {
          facts.layerSizes.set(`sha256:${layer[1]}`, Number(text.toString('utf8')));
        } else {
          facts.repositories.push({ path: entry.path, text });
        }
        break;
      }
      case 'requirements':
        report.requirements = entry.requirements;
        break;
      case 'unknown':
        report.skipped.push(entry.name);
        break;
    }
  }
  report.partitions = [...partitions.values()].sort((a, b) => a.partition - b.partition);
  for (const [partition, facts] of [...stores.entries()].sort(([a], [b]) => a - b))
    report.images.push(...imagesFrom(partition, facts));
  return report as InspectReport;
}

function human(report: InspectReport): string {
  const lines = [
    `${report.file}`,
    `  format       ${report.version}${report.compression === 'none' ? '' : ` (${report.compression}-compressed)`}`,
    `  base image   ${report.baseImage.name} (${report.baseImage.container}, ${formatBytes(report.baseImage.size)})`,
  ];
  for (const p of report.partitions) {
    const types = Object.entries(p.types)
      .map(([type, count]) => `${count} ${type}`)
      .join(', ');
    const needs = report.requirements?.partitions[String(p.partition)];
    lines.push(
      `  partition ${p.partition}  ${p.entries} entries, ${formatBytes(p.bytes)} (${types})${needs ? `; announced: up to ${needs.entries} entries, ${formatBytes(needs.bytes)}` : ''}`,
    );
  }
  if (report.images.length > 0) {
    lines.push('  images');
    const rows = report.images.map((image) => [
      image.repository,
      image.tags.join(',') || '<none>',
      image.imageId.slice(7, 19),
      image.size === undefined ? (image.preloaded ? '?' : 'from the base OS') : formatBytes(image.size),
      `partition ${image.partition}`,
    ]);
    const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => (row[i] as string).length)));
    for (const row of rows)
      lines.push(`    ${row.map((cell, i) => (i < 4 ? cell.padEnd(widths[i] as number) : cell)).join('  ')}`);
  }
  if (report.skipped.length > 0) lines.push(`  skipped ${report.skipped.length} entries of a newer format minor`);
  return `${lines.join('\n')}\n`;
}

export const inspectCommand: Command = {
  name: 'inspect',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () => parseArgs({ args, allowPositionals: true, options: { ...helpFlag, json: { type: 'boolean' } } }),
      usage,
    );
    if (values.help) {
      context.stderr.write(`${usage}\n`);
      return EXIT.ok;
    }
    if (positionals.length !== 1) throw usageError('Give exactly one .etch file.', usage);
    const report = await inspectEtch(resolve(context.cwd, positionals[0] as string), context.signal);
    if (values.json) context.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else context.stderr.write(human(report));
    return EXIT.ok;
  },
};
