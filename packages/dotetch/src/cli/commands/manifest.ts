import { parseArgs } from 'node:util';
import { formatPlatform, hostPlatform, openImageSource, parsePlatform } from '@etch/registry';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { SCHEMA_VERSION, jsonText, resolvedImageJson, type JsonImage } from '../json.js';
import { registryClientFor, registryFlags, registryHelp } from '../registry-options.js';

const help = helpPage({
  usage: ['etch manifest REF [--platform os/arch[/variant]] [--raw | --json | -q]'],
  description: `Resolve REF (a registry reference, oci:PATH[:TAG] or docker-archive:PATH[:REF]) for one platform
and print its image manifest: digests, platform, config and layers. Everything fetched is verified
against its digest. Registries are reached over HTTPS; loopback ones (and --insecure-registry ones)
over plain HTTP when HTTPS fails. Credentials come from docker's config.json.`,
  sections: [
    [
      'Options',
      `  --platform P                the device's platform (default: this machine's, ${formatPlatform(hostPlatform())})
  --raw                       print the platform's image manifest exactly as the registry served it (its
                              sha256 is the digest); for jq, or to keep it
${registryHelp}`,
    ],
    ['Output', commonHelp('print only the manifest digest')],
  ],
  examples: [
    ['What an arm64 device would get', 'etch manifest alpine:3.20 --platform linux/arm64'],
    ['The manifest itself, byte for byte', 'etch manifest ghcr.io/acme/app:1.4 --platform linux/arm/v7 --raw | jq .'],
    ['Pin a reference by digest', 'echo "alpine@$(etch manifest alpine:3.20 --platform linux/arm64 -q)"'],
  ],
});

function human(image: JsonImage): string {
  const layers = image.layers ?? [];
  const lines = [
    `${image.reference}`,
    `  digest      ${image.digest}`,
    ...(image.indexDigest ? [`  index       ${image.indexDigest}`] : []),
    `  media type  ${image.mediaType}`,
    `  platform    ${image.platform}`,
    `  config      ${image.config?.digest} (${formatBytes(image.config?.size ?? 0)})`,
    `  layers      ${layers.length}, ${formatBytes(layers.reduce((n, l) => n + (l.size ?? 0), 0))} compressed`,
    ...layers.map(
      (l, i) =>
        `    ${String(i + 1).padStart(2)}  ${l.digest}  ${formatBytes(l.size ?? 0).padStart(10)}  ${l.mediaType}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

export const manifestCommand: Command = {
  name: 'manifest',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() =>
      parseArgs({
        args,
        allowPositionals: true,
        options: { ...commonFlags, ...registryFlags, platform: { type: 'string' }, raw: { type: 'boolean' } },
      }),
    );
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    const [reference, extra] = positionals;
    if (reference === undefined) throw usageError('name the image: etch manifest REF.');
    if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}.`);
    if ([values.raw, values.json, values.quiet].filter(Boolean).length > 1)
      throw usageError('--raw, --json and -q each choose what is printed; give one.');
    const platform = values.platform !== undefined ? parsePlatform(values.platform) : hostPlatform();
    const client = registryClientFor(context, values);
    try {
      const source = openImageSource(reference, client);
      const resolved = await source.resolve({ platform, signal: context.signal });
      const image = resolvedImageJson(reference, resolved);
      if (values.raw) context.stdout.write(resolved.manifestBytes);
      else if (values.json) context.stdout.write(jsonText({ schemaVersion: SCHEMA_VERSION, image }));
      else if (values.quiet) context.stdout.write(`${resolved.digest}\n`);
      else context.stdout.write(human(image));
    } finally {
      await client.close();
    }
    return EXIT.ok;
  },
};
