import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { findPartition, readPartitionTable, type PartitionTable } from '@etch/disk';
import { chainIds } from '@etch/docker-store';
import { EtchError, isEtchError, type EtchRequirements, type InjectEntryType } from '@etch/format';
import { readEtch, type Compression, type EtchBaseImageEntry } from '@etch/tar';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { count, formatBytes } from '../format-bytes.js';
import { openEtchInput } from '../input.js';
import { SCHEMA_VERSION, jsonText, partitionsJson, type InspectJson, type JsonImage } from '../json.js';
import { PassingReads } from '../passing-reads.js';

const help = helpPage({
  usage: ['etch inspect FILE.etch|-'],
  description: `Read a whole .etch ("-" reads stdin), check every rule of the format and that each inject/<n>/
names a partition of its base image (when its partition table can be read), and print what it holds:
format version, base image, entries and bytes per partition, what requirements.json announces, and the
preloaded images. An invalid .etch exits 3.`,
  sections: [['Options', commonHelp('print nothing: the exit code says whether the .etch is valid')]],
  examples: [
    ['What a .etch holds', 'etch inspect device.etch'],
    [
      'Check a download without keeping it',
      'curl -sL https://example.com/device.etch | etch inspect -q - && echo valid',
    ],
    ['The preloaded images, with jq', "etch inspect device.etch --json | jq -r '.images[].tags[]'"],
  ],
});

/** An image named in a `repositories.json` inside the archive. */
interface FoundImage {
  partition: number;
  imageId: string;
  tags: string[];
  digests: string[];
  /** Σ layer sizes as `docker images` shows them; absent when the image's layers are not in this .etch. */
  size?: number;
  /** True when the image's config and layers are in this `.etch`; false for names kept from the base OS. */
  preloaded: boolean;
}

/** What `etch inspect` found. */
export interface InspectReport {
  file: string;
  version: string;
  compression: Compression;
  baseImage: { name: string; container: 'raw' | 'zip'; size: number };
  partitions: Record<number, { entries: number; bytes: number; types: Partial<Record<InjectEntryType, number>> }>;
  images: FoundImage[];
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

function imagesFrom(partition: number, facts: StoreFacts): FoundImage[] {
  const byImage = new Map<string, FoundImage>();
  for (const { path, text } of facts.repositories) {
    const repositories =
      (parseJson(text, partition, path) as { Repositories?: Record<string, Record<string, string>> })?.Repositories ??
      {};
    for (const refs of Object.values(repositories)) {
      for (const [reference, imageId] of Object.entries(refs ?? {})) {
        let image = byImage.get(imageId);
        if (image === undefined) {
          const diffIds = facts.diffIds.get(imageId);
          const sizes =
            diffIds === undefined ? undefined : chainIds(diffIds).map((chain) => facts.layerSizes.get(chain));
          const size = sizes?.every((n) => n !== undefined)
            ? sizes.reduce((sum: number, n) => sum + (n ?? 0), 0)
            : undefined;
          image = {
            partition,
            tags: [],
            digests: [],
            imageId,
            ...(size !== undefined ? { size } : {}),
            preloaded: diffIds !== undefined,
          };
          byImage.set(imageId, image);
        }
        // repositories.json keys are the full references docker lists (`alpine:3.20`, `alpine@sha256:…`).
        (reference.includes('@') ? image.digests : image.tags).push(reference);
      }
    }
  }
  return [...byImage.values()];
}

async function readSmall(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The partition table of a base image in a `.etch` file, read in place: the rest of the image is not read. */
async function tableInPlace(
  readAt: NonNullable<EtchBaseImageEntry['readAt']>,
  size: number,
): Promise<PartitionTable | undefined> {
  return readPartitionTable(async (offset, length) => {
    const have = Math.max(0, Math.min(length, size - offset));
    const bytes = Buffer.alloc(have);
    await readAt(bytes, offset, have);
    return bytes;
  }).catch(() => undefined);
}

/** The partition table of a raw base image, read as it streams by; undefined when it has none readable. */
async function tableOf(stream: Readable): Promise<PartitionTable | undefined> {
  const reads = new PassingReads();
  const table = readPartitionTable(reads.read).catch(() => undefined);
  for await (const chunk of stream) reads.push(chunk as Buffer);
  reads.end();
  return table;
}

/** Reads and validates a whole `.etch`, returning what it contains. */
export async function inspectEtch(
  input: AsyncIterable<Uint8Array>,
  file: string,
  signal?: AbortSignal,
): Promise<InspectReport> {
  const stores = new Map<number, StoreFacts>();
  const report: Partial<InspectReport> & Pick<InspectReport, 'images' | 'skipped' | 'partitions'> = {
    file,
    partitions: {},
    images: [],
    skipped: [],
  };
  let table: PartitionTable | undefined;
  for await (const entry of readEtch(input, signal ? { signal } : {})) {
    switch (entry.kind) {
      case 'version':
        report.version = `${entry.version.major}.${entry.version.minor}`;
        report.compression = entry.compression;
        break;
      case 'base-image':
        report.baseImage = { name: entry.name, container: entry.container, size: entry.size };
        if (entry.container === 'raw')
          table = entry.readAt ? await tableInPlace(entry.readAt, entry.size) : await tableOf(entry.stream);
        break;
      case 'inject': {
        let stats = report.partitions[entry.partition];
        if (stats === undefined) {
          if (table !== undefined) {
            try {
              findPartition(table, entry.partition);
            } catch (error) {
              if (!isEtchError(error, 'ETCH_BAD_DISK_IMAGE')) throw error;
              throw new EtchError(
                'ETCH_BAD_ENTRY',
                `inject/${entry.partition}/${entry.path}: ${error.message} A flasher cannot write it.`,
                { details: { entryName: entry.header.name } },
              );
            }
          }
          stats = { entries: 0, bytes: 0, types: {} };
          report.partitions[entry.partition] = stats;
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
  for (const [partition, facts] of [...stores.entries()].sort(([a], [b]) => a - b))
    report.images.push(...imagesFrom(partition, facts));
  return report as InspectReport;
}

/** The document `inspect --json` prints. */
function inspectJson(report: InspectReport): InspectJson {
  const partitions = partitionsJson(report.partitions, report.requirements).map((p) => ({
    ...p,
    types: report.partitions[p.number]?.types ?? {},
  }));
  return {
    schemaVersion: SCHEMA_VERSION,
    file: report.file,
    version: report.version,
    compression: report.compression,
    baseImage: report.baseImage,
    partitions,
    images: report.images.map((image): JsonImage => ({
      imageId: image.imageId,
      tags: image.tags,
      digests: image.digests,
      partition: image.partition,
      preloaded: image.preloaded,
      ...(image.size !== undefined ? { unpackedSize: image.size } : {}),
    })),
    skipped: report.skipped,
  };
}

const TYPE_NAMES: Record<InjectEntryType, [string, string]> = {
  file: ['file', 'files'],
  directory: ['folder', 'folders'],
  symlink: ['symlink', 'symlinks'],
  link: ['hardlink', 'hardlinks'],
  'character-device': ['device', 'devices'],
  'block-device': ['block device', 'block devices'],
  fifo: ['FIFO', 'FIFOs'],
};

function human(report: InspectReport): string {
  const lines = [
    `${report.file}`,
    `  format       ${report.version}${report.compression === 'none' ? '' : ` (${report.compression}-compressed)`}`,
    `  base image   ${report.baseImage.name} (${report.baseImage.container}, ${formatBytes(report.baseImage.size)})`,
  ];
  for (const [partition, p] of Object.entries(report.partitions)) {
    const types = Object.entries(p.types)
      .map(([type, n]) => {
        const [one, many] = TYPE_NAMES[type as InjectEntryType] ?? [type, type];
        return count(n, one, many);
      })
      .join(', ');
    lines.push(`  partition ${partition}  ${count(p.entries, 'entry', 'entries')}, ${formatBytes(p.bytes)} (${types})`);
  }
  const announced = Object.entries(report.requirements?.partitions ?? {});
  if (announced.length > 0) {
    lines.push('  room the flasher is asked to make (requirements.json: an upper estimate, so above what is written)');
    for (const [partition, needs] of announced)
      lines.push(
        `    partition ${partition}  ${count(needs.entries, 'entry', 'entries')}, ${formatBytes(needs.bytes)}`,
      );
  }
  if (report.images.length > 0) {
    lines.push('  images');
    const rows = report.images.map((image) => [
      image.tags.join(', ') || image.digests[0] || '<none>',
      image.imageId.slice(7, 19),
      image.size === undefined ? (image.preloaded ? '?' : 'from the base OS') : formatBytes(image.size),
      `partition ${image.partition}`,
    ]);
    const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => (row[i] as string).length)));
    for (const row of rows)
      lines.push(`    ${row.map((cell, i) => (i < 3 ? cell.padEnd(widths[i] as number) : cell)).join('  ')}`);
  }
  if (report.skipped.length > 0)
    lines.push(`  skipped ${count(report.skipped.length, 'entry', 'entries')} of a newer format minor`);
  return `${lines.join('\n')}\n`;
}

export const inspectCommand: Command = {
  name: 'inspect',
  help,
  readsEtch: true,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() => parseArgs({ args, allowPositionals: true, options: commonFlags }));
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (positionals.length !== 1)
      throw usageError(
        positionals.length === 0 ? 'give the .etch file to inspect ("-" for stdin).' : 'give exactly one .etch file.',
      );
    const file = positionals[0] as string;
    const input = await openEtchInput(file, context, 'inspect');
    let report: InspectReport;
    try {
      report = await inspectEtch(input, file === '-' ? '-' : resolve(context.cwd, file), context.signal);
    } finally {
      if (input !== context.stdin) input.destroy();
    }
    if (values.json) context.stdout.write(jsonText(inspectJson(report)));
    else if (!values.quiet) context.stdout.write(human(report));
    return EXIT.ok;
  },
};
