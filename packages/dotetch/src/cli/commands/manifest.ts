import { parseArgs } from 'node:util';
import { formatPlatform, hostPlatform, parsePlatform, type ResolvedImage } from '@etch/registry';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { registryClientFor, registryFlags, registryUsage } from '../registry-options.js';
import { openImageSource } from '@etch/registry';

const usage = `Usage: etch manifest REF [--platform os/arch[/variant]] [--json]

  Resolves REF (a registry reference, oci:PATH[:TAG] or docker-archive:PATH[:REF]) for one platform and
  prints its manifest: digests, platform, config and layers. Everything fetched is verified.
  --platform P                 the device's platform (default: this machine's, ${formatPlatform(hostPlatform())})
${registryUsage}
  --json                       print the result as JSON on stdout`;

/** What `etch manifest --json` prints. */
export interface ManifestReport {
  reference: string;
  digest: string;
  indexDigest?: string;
  mediaType: string;
  platform: string;
  config: { digest: string; size: number; mediaType: string };
  layers: { digest: string; size: number; mediaType: string }[];
}

export function manifestReport(reference: string, image: ResolvedImage): ManifestReport {
  return {
    reference,
    digest: image.digest,
    ...(image.indexDigest !== undefined ? { indexDigest: image.indexDigest } : {}),
    mediaType: image.mediaType,
    platform: formatPlatform(image.platform),
    config: { digest: image.config.digest, size: image.config.size, mediaType: image.config.mediaType },
    layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
  };
}

function human(report: ManifestReport): string {
  const lines = [
    `${report.reference}`,
    `  digest      ${report.digest}`,
    ...(report.indexDigest ? [`  index       ${report.indexDigest}`] : []),
    `  media type  ${report.mediaType}`,
    `  platform    ${report.platform}`,
    `  config      ${report.config.digest} (${formatBytes(report.config.size)})`,
    `  layers      ${report.layers.length}, ${formatBytes(report.layers.reduce((n, l) => n + l.size, 0))} compressed`,
    ...report.layers.map(
      (l, i) => `    ${String(i + 1).padStart(2)}  ${l.digest}  ${formatBytes(l.size).padStart(10)}  ${l.mediaType}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

export const manifestCommand: Command = {
  name: 'manifest',
  usage,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(
      () =>
        parseArgs({
          args,
          allowPositionals: true,
          options: {
            ...helpFlag,
            ...registryFlags,
            platform: { type: 'string' },
            json: { type: 'boolean' },
            verbose: { type: 'boolean', short: 'v' },
          },
        }),
      usage,
    );
    if (values.help) {
      context.stderr.write(`${usage}\n`);
      return EXIT.ok;
    }
    const [reference, extra] = positionals;
    if (reference === undefined) throw usageError('Name the image: etch manifest REF.', usage);
    if (extra !== undefined) throw usageError(`Unexpected argument ${JSON.stringify(extra)}.`, usage);
    const platform = values.platform !== undefined ? parsePlatform(values.platform) : hostPlatform();
    const client = registryClientFor(context, values['insecure-registry']);
    try {
      const source = openImageSource(reference, client);
      const image = await source.resolve({ platform, signal: context.signal });
      const report = manifestReport(reference, image);
      if (values.json) context.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else context.stderr.write(human(report));
    } finally {
      await client.close();
    }
    return EXIT.ok;
  },
};
