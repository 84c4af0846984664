import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { entryTime } from '@etch/format';
import { copyImage, Image, type SavedImage } from '@etch/image';
import { formatPlatform, openImageSource, openImageTarget, parsePlatform, parseReference } from '@etch/registry';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { createProgressDisplay, progressModeFor } from '../progress.js';
import { uploadProgress } from '../upload-progress.js';
import { SCHEMA_VERSION, jsonText, type JsonImage } from '../json.js';
import { registryClientFor, registryFlags, registryHelp } from '../registry-options.js';

const help = helpPage({
  usage: ['etch build --from REF --add SRC:DEST [--add SRC:DEST]... -t TARGET [-t TARGET]... [options]'],
  description: `Build an image without docker: the base image REF (registry, oci:DIR[:TAG] or docker-archive:PATH[:REF])
plus the local files as one reproducible layer, with the config changed as asked, saved to each TARGET (a
registry reference, oci:DIR[:TAG] or docker-archive:PATH[:NAME:TAG]). A multi-platform base gives a new
index with the files added to each platform's image. Base layers are mounted or streamed, never downloaded
to disk. The layer and config take the time SOURCE_DATE_EPOCH (seconds), else the Unix epoch. Prints the
digest saved; progress goes to stderr as in etch create (one line per blob on a terminal).`,
  sections: [
    [
      'Options',
      `  --from REF                  the base image
  --add SRC:DEST              a local directory or file, and where it goes in the image (DEST absolute).
                              Repeatable.
  --ignore-file NAME          read ignore globs from this file at the root of each SRC (default
                              .dockerignore). Repeatable.
  --cmd JSON|STRING           the command: a JSON array, or a string run with /bin/sh -c
  --entrypoint JSON|STRING    the entrypoint, the same way
  --env K=V                   an environment variable. Repeatable.
  --workdir DIR               the working directory
  --label K=V                 a label. Repeatable.
  --user USER                 the user to run as
  --platform P|all            build only this platform of a multi-platform base (default all). Repeatable.
  -t, --tag TARGET            where to save: a registry reference, oci:DIR[:TAG] or
                              docker-archive:PATH[:NAME:TAG] (one platform: --platform, else the host's).
                              Built into the first that is not a docker archive, copied to the others.
                              Repeatable.
${registryHelp}`,
    ],
    ['Output', commonHelp('print only the digest saved')],
  ],
  examples: [
    [
      'A static site on a multi-platform base, pushed under two tags',
      'etch build --from nginx:1.27 --add ./site:/usr/share/nginx/html -t ghcr.io/acme/site:1 \\\n      -t ghcr.io/acme/site:latest',
    ],
    [
      'One platform, with a command and environment, saved as an OCI layout',
      'etch build --from alpine:3.20 --add ./bin:/app --cmd \'["/app/run"]\' --env MODE=prod \\\n      --platform linux/arm64 -t oci:./out:v1',
    ],
    [
      'The digest alone, to pin it',
      'etch build --from alpine:3.20 --add ./cfg:/etc/app -t registry.local:5000/app:1 -q',
    ],
  ],
});

/** What `etch build --json` prints. */
export interface BuildJson {
  schemaVersion: typeof SCHEMA_VERSION;
  /** The -t the image was built into: the first that is not a docker archive. */
  target: string;
  /** The top document saved: the new index of a multi-platform base, else the image manifest. */
  digest: string;
  mediaType: string;
  tags: string[];
  /** Each image built: its manifest digest, platform and image ID (the config digest). */
  images: JsonImage[];
  /** The other -t targets, copies of the one built, each with the digest it holds (a docker archive: one platform's). */
  copies: BuildCopy[];
}

/** A -t target the built image was copied to. */
export interface BuildCopy {
  target: string;
  digest: string;
}

function command(value: string, flag: string): string[] {
  if (!value.trim().startsWith('[')) return ['/bin/sh', '-c', value];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || parsed.some((v) => typeof v !== 'string'))
    throw usageError(`${flag} ${value} is not a JSON array of strings.`);
  return parsed as string[];
}

function pairs(values: readonly string[] | undefined, flag: string): [string, string][] {
  return (values ?? []).map((entry) => {
    const at = entry.indexOf('=');
    if (at <= 0) throw usageError(`${flag} wants KEY=VALUE, not ${JSON.stringify(entry)}.`);
    return [entry.slice(0, at), entry.slice(at + 1)];
  });
}

/** `SRC:DEST` where DEST is absolute in the image: the split is at the last `:` followed by `/`. */
function addition(value: string, cwd: string): [string, string] {
  const at = value.lastIndexOf(':/');
  if (at <= 0)
    throw usageError(`--add wants SRC:DEST with DEST absolute (./build:/app), not ${JSON.stringify(value)}.`);
  return [value.slice(at + 1), resolve(cwd, value.slice(0, at))];
}

function human(target: string, saved: SavedImage, copies: readonly BuildCopy[]): string {
  const lines = [`${target}: ${saved.digest}`];
  for (const built of saved.images)
    lines.push(`  ${built.platform ? formatPlatform(built.platform) : 'image'}  ${built.digest}`);
  for (const copy of copies) lines.push(`${copy.target}: ${copy.digest}`);
  return `${lines.join('\n')}\n`;
}

export const buildCommand: Command = {
  name: 'build',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const { values, positionals } = parseFlags(() =>
      parseArgs({
        args,
        allowPositionals: true,
        options: {
          ...commonFlags,
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
        },
      }),
    );
    if (values.help) {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (positionals.length > 0) throw usageError(`unexpected argument ${JSON.stringify(positionals[0])}.`);
    if (values.from === undefined) throw usageError('name the base image with --from REF.');
    const targets = values.tag ?? [];
    const [head] = targets;
    if (head === undefined) throw usageError('name where to save with -t TARGET.');
    // Built where the digests mean something (a registry or an OCI layout), then copied to the others: a docker
    // archive keeps no manifest, so a copy out of one would not have the built digests.
    const first = targets.find((t) => !t.startsWith('docker-archive:')) ?? head;
    const others = targets.filter((t) => t !== first);
    // Every flag is checked before anything is fetched.
    const platforms =
      values.platform === undefined || values.platform.includes('all')
        ? ('all' as const)
        : values.platform.map((p) => parsePlatform(p));
    const files = Object.fromEntries((values.add ?? []).map((a) => addition(a, context.cwd)));
    const cmd = values.cmd !== undefined ? command(values.cmd, '--cmd') : undefined;
    const entrypoint = values.entrypoint !== undefined ? command(values.entrypoint, '--entrypoint') : undefined;
    const env = pairs(values.env, '--env').map(([k, v]) => `${k}=${v}`);
    const labels = Object.fromEntries(pairs(values.label, '--label'));
    const epoch = context.env['SOURCE_DATE_EPOCH'];
    const created = epoch !== undefined && epoch.trim() !== '' ? entryTime(epoch) : undefined;

    const client = registryClientFor(context, values);
    // One line per blob as etch create draws layers: uploading (bytes, speed, time left), then where it went.
    const display = createProgressDisplay(context.stderr, progressModeFor(context.stderr, Boolean(values.quiet)));
    const progress = uploadProgress(display);
    const image = new Image(values.from, first, {
      client,
      platforms,
      signal: context.signal,
      ...progress,
      ...(created ? { created } : {}),
    });
    try {
      if (Object.keys(files).length > 0)
        await image.addFiles(files, { ignoreFiles: values['ignore-file'] ?? ['.dockerignore'] });
      if (cmd !== undefined) image.Cmd = cmd;
      if (entrypoint !== undefined) image.Entrypoint = entrypoint;
      image.Env = env;
      if (values.workdir !== undefined) image.WorkingDir = values.workdir;
      image.Labels = labels;
      if (values.user !== undefined) image.User = values.user;
      const saved = await image.save();
      // Each further target gets its own lines: the same blobs land there again.
      display.finish();
      const copies: BuildCopy[] = [];
      for (const target of others) {
        // Another tag of the same repository is just a manifest PUT; another repository mounts or streams. A docker
        // archive takes one platform: the one asked for, else the host's.
        const from = openImageSource(first.startsWith('oci:') ? first : String(parseReference(first)), client);
        const into = openImageTarget(target, client);
        try {
          const copied = await copyImage(from, into, {
            signal: context.signal,
            ...progress,
            ...(into.singleImage && platforms !== 'all' && platforms[0] ? { platforms: platforms[0] } : {}),
          });
          copies.push({ target, digest: copied.digest });
        } finally {
          display.finish();
          await into.close();
        }
      }
      if (values.json) {
        const document: BuildJson = {
          schemaVersion: SCHEMA_VERSION,
          target: saved.target,
          digest: saved.digest,
          mediaType: saved.mediaType,
          tags: saved.tags,
          images: saved.images.map((built) => ({
            imageId: built.config,
            digest: built.digest,
            ...(built.platform ? { platform: formatPlatform(built.platform) } : {}),
          })),
          copies,
        };
        context.stdout.write(jsonText(document));
      } else if (values.quiet) context.stdout.write(`${saved.digest}\n`);
      else context.stdout.write(human(first, saved, copies));
    } finally {
      display.finish();
      await image.close();
      await client.close();
    }
    return EXIT.ok;
  },
};
