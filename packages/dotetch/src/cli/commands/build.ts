import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { copyImage, Image, type SavedImage } from '@etch/image';
import { openImageSource, openImageTarget, parsePlatform, parseReference } from '@etch/registry';
import { helpFlag, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { registryClientFor, registryFlags, registryUsage } from '../registry-options.js';

const usage = `Usage: etch build --from REF --add SRC:DEST [--add SRC:DEST]... -t TARGET [-t TARGET]... [options]

  Builds an image without docker: the base image REF (registry, oci:DIR[:TAG] or docker-archive:PATH[:REF])
  plus the local files as one reproducible layer, with the config changed as asked, saved to each TARGET
  (a registry reference or oci:DIR[:TAG]). A multi-platform base gives a new index with the files added to each
  platform's image. Base layers are mounted or streamed, never downloaded to disk. Prints the saved digest.
  --from REF                   the base image
  --add SRC:DEST               a local directory or file, and where it goes in the image (repeatable)
  --ignore-file NAME           read ignore globs from this file at the root of each SRC (default .dockerignore)
  --cmd JSON|STRING            the command: a JSON array, or a string run with /bin/sh -c
  --entrypoint JSON|STRING     the entrypoint, the same way
  --env K=V                    an environment variable (repeatable)
  --workdir DIR                the working directory
  --label K=V                  a label (repeatable)
  --user USER                  the user to run as
  --platform P|all             build only this platform of a multi-platform base (repeatable; default all)
  -t, --tag TARGET             where to save (repeatable; the first is built, the others are copies)
${registryUsage}
  --json                       print the result as JSON on stdout
  -q, --quiet                  no progress output`;

function command(value: string): string[] {
  if (value.trim().startsWith('[')) {
    const parsed = JSON.parse(value) as unknown;
    if (!Array.isArray(parsed) || parsed.some((v) => typeof v !== 'string'))
      throw usageError(`${value} is not a JSON array of strings.`, usage);
    return parsed as string[];
  }
  return ['/bin/sh', '-c', value];
}

function pairs(values: readonly string[] | undefined, flag: string): [string, string][] {
  return (values ?? []).map((entry) => {
    const at = entry.indexOf('=');
    if (at <= 0) throw usageError(`${flag} wants KEY=VALUE, not ${JSON.stringify(entry)}.`, usage);
    return [entry.slice(0, at), entry.slice(at + 1)];
  });
}

/** `SRC:DEST` where DEST is absolute in the image: the split is at the last `:` followed by `/`. */
function addition(value: string, cwd: string): [string, string] {
  const at = value.lastIndexOf(':/');
  if (at <= 0)
    throw usageError(`--add wants SRC:DEST with DEST absolute (./build:/app), not ${JSON.stringify(value)}.`, usage);
  return [value.slice(at + 1), resolve(cwd, value.slice(0, at))];
}

export const buildCommand: Command = {
  name: 'build',
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
            from: { type: 'string' },
            add: { type: 'string', multiple: true },
            'ignore-file': { type: 'string', multiple: true },
            cmd: { type: 'string' },
            entrypoint: { type: 'string' },
            env: { type: 'string', multiple: true },
            workdir: { type: 'string' },
            label: { type: 'string', multiple: true },
            user: { type: 'string' },
            platform: { type: 'string', multiple: true },
            tag: { type: 'string', short: 't', multiple: true },
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
    if (positionals.length > 0) throw usageError(`Unexpected argument ${JSON.stringify(positionals[0])}.`, usage);
    if (values.from === undefined) throw usageError('Name the base image with --from REF.', usage);
    const targets = values.tag ?? [];
    const [first, ...others] = targets;
    if (first === undefined) throw usageError('Name where to save with -t TARGET.', usage);
    const platforms =
      values.platform === undefined || values.platform.includes('all')
        ? ('all' as const)
        : values.platform.map((p) => parsePlatform(p));
    const files = Object.fromEntries((values.add ?? []).map((a) => addition(a, context.cwd)));
    const client = registryClientFor(context, values['insecure-registry']);
    const image = new Image(values.from, first, { client, platforms, signal: context.signal });
    try {
      if (Object.keys(files).length > 0)
        await image.addFiles(files, { ignoreFiles: values['ignore-file'] ?? ['.dockerignore'] });
      if (values.cmd !== undefined) image.Cmd = command(values.cmd);
      if (values.entrypoint !== undefined) image.Entrypoint = command(values.entrypoint);
      image.Env = pairs(values.env, '--env').map(([k, v]) => `${k}=${v}`);
      if (values.workdir !== undefined) image.WorkingDir = values.workdir;
      image.Labels = Object.fromEntries(pairs(values.label, '--label'));
      if (values.user !== undefined) image.User = values.user;
      const saved: SavedImage = await image.save();
      const copies: string[] = [];
      for (const target of others) {
        // Another tag of the same repository is just a manifest PUT; another repository mounts or streams.
        await copyImage(
          openImageSource(first.startsWith('oci:') ? first : String(parseReference(first)), client),
          openImageTarget(target, client),
          {
            signal: context.signal,
          },
        );
        copies.push(target);
      }
      if (values.json) context.stdout.write(`${JSON.stringify({ ...saved, copies }, null, 2)}\n`);
      else if (!values.quiet) {
        context.stderr.write(`${first}: ${saved.digest}\n`);
        for (const built of saved.images)
          context.stderr.write(
            `  ${built.platform ? `${built.platform.os}/${built.platform.architecture}${built.platform.variant ? `/${built.platform.variant}` : ''}` : 'image'}  ${built.digest}\n`,
          );
        for (const copy of copies) context.stderr.write(`${copy}: ${saved.digest}\n`);
      }
    } finally {
      await image.close();
      await client.close();
    }
    return EXIT.ok;
  },
};
