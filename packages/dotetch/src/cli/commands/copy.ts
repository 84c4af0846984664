import { parseArgs } from 'node:util';
import { copyImage, type CopyResult } from '@etch/image';
import { openImageSource, openImageTarget, parsePlatform } from '@etch/registry';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';
import { uploadProgress } from '../upload-progress.js';
import { SCHEMA_VERSION, jsonText } from '../json.js';
import { registryClientFor, registryFlags, registryHelp } from '../registry-options.js';

function helpFor(name: 'copy' | 'push'): string {
  return helpPage({
    usage: [`etch ${name} SOURCE TARGET [--all-platforms | --platform os/arch[/variant]] [--json | -q]`],
    description: `Copy an image without docker. SOURCE: a registry reference, oci:DIR[:TAG] or docker-archive:PATH[:REF].
TARGET: a registry reference (tag latest when none), oci:DIR[:TAG] or docker-archive:PATH[:NAME:TAG] (one
platform: --platform, else the host's; docker load reads it). An index is copied whole, so the copy has the
same digest; blobs already there are skipped, blobs in another repository of the same registry are mounted,
others stream through without touching the disk. Credentials come from docker's
config.json. Prints the digest stored; progress goes to stderr as in etch create: on a terminal one line
per blob (uploading with bytes, speed and time left, then uploaded, mounted or already there), else a
line as each blob lands.`,
    sections: [
      [
        'Options',
        `  --all-platforms             copy every entry of an index (the default, but for a docker archive)
  --platform P                copy only this platform's image manifest (its digest is kept)
${registryHelp}`,
      ],
      ['Output', commonHelp('no progress; print only the digest stored')],
    ],
    examples: [
      [
        'Mirror a multi-platform image, index digest kept',
        `etch ${name} alpine:3.20 registry.local:5000/mirror/alpine:3.20`,
      ],
      [
        'Push an OCI layout tag, one platform only',
        `etch ${name} oci:./out:v1 ghcr.io/acme/app:v1 --platform linux/arm64`,
      ],
      ['Save a registry image as an OCI layout', `etch ${name} ghcr.io/acme/app:1.4 oci:./app:1.4 -q`],
      ['Write an archive for docker load', `etch ${name} ghcr.io/acme/app:1.4 docker-archive:app.tar:acme/app:1.4`],
    ],
  });
}

/** What `etch copy --json` prints. */
export interface CopyJson extends CopyResult {
  schemaVersion: typeof SCHEMA_VERSION;
  source: string;
  target: string;
}

function human(target: string, result: CopyResult): string {
  const images = `${result.manifests.length} image${result.manifests.length === 1 ? '' : 's'}`;
  const { uploaded, bytesUploaded, mounted, existed } = result.blobs;
  return `${target}: ${result.digest} (${images}; ${uploaded} blobs uploaded, ${formatBytes(bytesUploaded)}; ${mounted} mounted; ${existed} already there)\n`;
}

function commandFor(name: 'copy' | 'push'): Command {
  const help = helpFor(name);
  return {
    name,
    help,
    async run(args: string[], context: CliContext): Promise<number> {
      const { values, positionals } = parseFlags(() =>
        parseArgs({
          args,
          allowPositionals: true,
          options: {
            ...commonFlags,
            ...registryFlags,
            platform: { type: 'string' },
            'all-platforms': { type: 'boolean' },
          },
        }),
      );
      if (values.help) {
        context.stdout.write(help);
        return EXIT.ok;
      }
      const [source, target, extra] = positionals;
      if (source === undefined || target === undefined)
        throw usageError(`name the source and the target: etch ${name} SOURCE TARGET.`);
      if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}.`);
      if (values.platform !== undefined && values['all-platforms'])
        throw usageError('--platform and --all-platforms contradict each other; give one.');
      // Neither flag: every platform, except into a docker archive, which takes the host's.
      const platforms =
        values.platform !== undefined ? parsePlatform(values.platform) : values['all-platforms'] ? 'all' : undefined;
      const client = registryClientFor(context, values);
      const into = openImageTarget(target, client);
      const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
      try {
        const result = await copyImage(openImageSource(source, client), into, {
          ...(platforms !== undefined ? { platforms } : {}),
          signal: context.signal,
          ...uploadProgress(display),
        });
        display.finish();
        if (values.json) {
          const document: CopyJson = { schemaVersion: SCHEMA_VERSION, source, target, ...result };
          context.stdout.write(jsonText(document));
        } else if (values.quiet) context.stdout.write(`${result.digest}\n`);
        else context.stdout.write(human(target, result));
      } finally {
        display.finish();
        await into.close();
        await client.close();
      }
      return EXIT.ok;
    },
  };
}

export const copyCommand = commandFor('copy');
export const pushCommand = commandFor('push');
