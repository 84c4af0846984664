import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EtchError, type InjectEntryType } from '@etch/format';
import { readEtch, type Compression } from '@etch/tar';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';

const usage = `Usage: etch inspect FILE.etch [--json]

  Reads the whole .etch, checks every rule of the format, and prints what it holds.
  --json    print the report as JSON on stdout`;

/** A preloaded image named in a `repositories.json` inside the archive. */
export interface InspectImage {
  partition: number;
  reference: string;
  imageId: string;
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
}

const REPOSITORIES_SUFFIX = 'docker/image/overlay2/repositories.json';
const MAX_REPOSITORIES_SIZE = 32 * 1024 * 1024;

function imagesFrom(partition: number, text: Buffer, path: string): InspectImage[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.toString('utf8'));
  } catch (cause) {
    throw new EtchError('ETCH_BAD_ENTRY', `inject/${partition}/${path} is not valid JSON; an engine would refuse to start with it.`, { cause });
  }
  const repositories = (parsed as { Repositories?: Record<string, Record<string, string>> })?.Repositories ?? {};
  const images: InspectImage[] = [];
  for (const refs of Object.values(repositories)) {
    for (const [reference, imageId] of Object.entries(refs ?? {})) images.push({ partition, reference, imageId });
  }
  return images;
}

/** Reads and validates a whole `.etch`, returning what it contains. */
export async function inspectEtch(path: string, signal?: AbortSignal): Promise<InspectReport> {
  const partitions = new Map<number, InspectReport['partitions'][number]>();
  const report: Partial<InspectReport> & { images: InspectImage[]; skipped: string[] } = { file: path, images: [], skipped: [] };
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
        if (entry.type === 'file' && entry.stream && entry.path.endsWith(REPOSITORIES_SUFFIX) && entry.size <= MAX_REPOSITORIES_SIZE) {
          const chunks: Buffer[] = [];
          for await (const chunk of entry.stream) chunks.push(chunk as Buffer);
          report.images.push(...imagesFrom(entry.partition, Buffer.concat(chunks), entry.path));
        }
        break;
      }
      case 'unknown':
        report.skipped.push(entry.name);
        break;
    }
  }
  report.partitions = [...partitions.values()].sort((a, b) => a.partition - b.partition);
  return report as InspectReport;
}

function human(report: InspectReport): string {
  const lines = [
    `${report.file}`,
    `  format       ${report.version}${report.compression === 'none' ? '' : ` (${report.compression}-compressed)`}`,
    `  base image   ${report.baseImage.name} (${report.baseImage.container}, ${formatBytes(report.baseImage.size)})`,
  ];
  for (const p of report.partitions) {
    const types = Object.entries(p.types).map(([type, count]) => `${count} ${type}`).join(', ');
    lines.push(`  partition ${p.partition}  ${p.entries} entries, ${formatBytes(p.bytes)} (${types})`);
  }
  if (report.images.length > 0) {
    lines.push('  images');
    for (const image of report.images) lines.push(`    ${image.reference}  ${image.imageId.slice(0, 19)}  (partition ${image.partition})`);
  }
  if (report.skipped.length > 0) lines.push(`  skipped ${report.skipped.length} entries of a newer format minor`);
  return `${lines.join('\n')}\n`;
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'validate a .etch and show what it holds',
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
