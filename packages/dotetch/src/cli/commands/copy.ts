import { parseArgs } from 'node:util';
import { copyImage, type CopyResult } from '@etch/image';
import { openImageSource, openImageTarget, parsePlatform } from '@etch/registry';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { registryClientFor, registryFlags, registryUsage } from '../registry-options.js';

function usageFor(name: 'copy' | 'push'): string {
  return `Usage: etch ${name} SOURCE TARGET [--all-platforms | --platform os/arch[/variant]] [--json]

  Copies an image without docker. SOURCE: a registry reference, oci:DIR[:TAG] or docker-archive:PATH[:REF].
  TARGET: a registry reference (tag latest when none) or oci:DIR[:TAG]. An index is copied whole, so the copy
  has the same digest; blobs already there are skipped, blobs in another repository of the same registry are
  mounted, others stream through without touching the disk. Credentials come from docker's config.json.
  --all-platforms              copy every entry of an index (the default)
  --platform P                 copy only this platform's image manifest (its digest is kept)
${registryUsage}
  --json                       print the result as JSON on stdout
  -q, --quiet                  no progress output`;
}

/** What `etch copy --json` prints. */
export interface CopyReport extends CopyResult {
  source: string;
  target: string;
}

function commandFor(name: 'copy' | 'push'): Command {
  const usage = usageFor(name);
  return {
    name,
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
              'all-platforms': { type: 'boolean' },
              json: { type: 'boolean' },
              quiet: { type: 'boolean', short: 'q' },
              verbose: { type: 'boolean', short: 'v' },
            },
          }),
        usage,
      );
      if (values.help) {
        context.stderr.write(`${usage}\n`);
        return EXIT.ok;
      }
      const [source, target, extra] = positionals;
      if (source === undefined || target === undefined)
        throw usageError(`Name the source and the target: etch ${name} SOURCE TARGET.`, usage);
      if (extra !== undefined) throw usageError(`Unexpected argument ${JSON.stringify(extra)}.`, usage);
      if (values.platform !== undefined && values['all-platforms'])
        throw usageError('--platform and --all-platforms contradict each other; pass one.', usage);
      const platforms = values.platform !== undefined ? parsePlatform(values.platform) : 'all';
      const client = registryClientFor(context, values['insecure-registry']);
      try {
        const result = await copyImage(openImageSource(source, client), openImageTarget(target, client), {
          platforms,
          signal: context.signal,
          onBlob: (blob) => {
            if (!values.quiet && !values.json)
              context.stderr.write(`${blob.how.padEnd(8)} ${blob.digest} ${formatBytes(blob.size)}\n`);
          },
        });
        const report: CopyReport = { source, target, ...result };
        if (values.json) context.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else if (!values.quiet)
          context.stderr.write(
            `${target}: ${result.digest} (${result.manifests.length} image${result.manifests.length === 1 ? '' : 's'}; ${result.blobs.uploaded} blobs uploaded, ${formatBytes(result.blobs.bytesUploaded)}; ${result.blobs.mounted} mounted; ${result.blobs.existed} already there)\n`,
          );
      } finally {
        await client.close();
      }
      return EXIT.ok;
    },
  };
}

export const copyCommand = commandFor('copy');
export const pushCommand = commandFor('push');
