import { parseArgs } from 'node:util';
import { parseEciDisk, pullEci, pushEci, type EciImage, type PullEciResult, type PushEciResult } from '@etch/baseimage';
import { EtchError } from '@etch/format';
import { commonFlags, commonHelp, helpPage, parseFlags, usageError } from '../args.js';
import type { CliContext, Command } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { formatBytes } from '../format-bytes.js';
import { SCHEMA_VERSION, jsonText } from '../json.js';
import { progressModeFor } from '../progress.js';
import { registryClientFor, registryFlags, registryHelp } from '../registry-options.js';

const pushHelp = helpPage({
  usage: [
    'etch eci push --root FILE:TYPE [--kernel FILE] [--initrd FILE] [--disk FILE:TYPE]… [--config FILE]',
    '              [--other FILE]… [--format artifacts|legacy] [--platform OS/ARCH] [--annotation K=V]… REF',
  ],
  description: `Push an ECI (lf-edge Edge Container Image) to a registry, as lf-edge's eci push writes it: each
file a layer with lf-edge's media types and org.lfedge.eci.* annotations, named kernel, initrd,
disk-root-<name>, disk-<i>-<name>, config.json. TYPE: raw, vhd, vmdk, iso, qcow, qcow2, ova, vhdx.
Files are checked before anything is uploaded; each is read once for its digest and uploaded only
when the repository lacks it, large ones in chunks that resume after a cut. Give --platform more than
once to push an index: the files after each --platform belong to that platform. Without --config a
config is generated whose labels say where each file is. Credentials come from docker's config.json.`,
  sections: [
    [
      'Options',
      `  --root FILE:TYPE            the root disk (required, once per platform)
  --kernel FILE               a kernel, named kernel
  --initrd FILE               an initrd, named initrd
  --disk FILE:TYPE            an additional disk, named disk-<i>-<name>. Repeatable.
  --config FILE               the manifest's config as it is (else a generated OCI config)
  --other FILE                any other file, named by its base name. Repeatable.
  --format F                  artifacts (default: lf-edge media types) or legacy (each file tar+gzipped
                              into a standard OCI layer, for registries that refuse unknown types)
  --platform OS/ARCH          the ECI's platform (default this host's); repeat for an index
  --annotation K=V            an annotation of the manifest (and index). Repeatable.
  --created TIME              RFC 3339 time for the config and legacy tar entries (default none: the
                              same files always push to the same digest)
${registryHelp}`,
    ],
    ['Output', commonHelp('no progress; print only the digest stored')],
  ],
  examples: [
    [
      'Push a balenaOS image as an ECI, then use it as a base',
      'etch eci push --root balena.img:raw registry.local:5000/eci/balenaos:2.58.4',
    ],
    [
      'An index for two platforms, legacy format',
      'etch eci push --format legacy --platform linux/amd64 --root x86.img:raw --platform linux/arm64 --root arm.img:raw reg.local/eci/os:1',
    ],
  ],
});

const pullHelp = helpPage({
  usage: ['etch eci pull REF [--dir DIR] [--platform OS/ARCH] [--json | -q]'],
  description: `Pull an ECI's files into DIR (default the current directory), each under its ECI file name. Reads
the artifact format, the legacy format (annotated tar layers) and images whose config labels
org.lfedge.eci.artifact.* name files inside their layers. Every digest is verified before a file
takes its final name; files already there with the same bytes are kept; names that would leave DIR
are refused. A plain OCI image is refused.`,
  sections: [
    [
      'Options',
      `  --dir DIR                   where to write the files (created when missing)
  --platform OS/ARCH          which ECI of an index (default the only one, else this host's)
${registryHelp}`,
    ],
    ['Output', commonHelp('no progress; print only the paths written')],
  ],
  examples: [
    [
      'Pull the arm64 ECI of an index into ./os',
      'etch eci pull registry.local:5000/eci/os:1 --platform linux/arm64 --dir os',
    ],
  ],
});

const help = helpPage({
  usage: ['etch eci push [options] REF', 'etch eci pull REF [options]'],
  description: `Push and pull ECIs (lf-edge Edge Container Images): disk images, a kernel, an initrd and other files
as an OCI artifact, interoperable with lf-edge's eci tool. What etch eci push writes is a base for
etch create --base eci:REF[@VERSION]. See etch eci push --help and etch eci pull --help.`,
  sections: [],
  examples: [
    [
      'Push, then build a .etch on it',
      'etch eci push --root balena.img:raw reg.local/eci/os:2.58.4 && \\\n      etch create --base eci:reg.local/eci/os@^2.58 -o out.etch',
    ],
  ],
});

/** What `etch eci push --json` prints. */
export interface EciPushJson extends PushEciResult {
  schemaVersion: typeof SCHEMA_VERSION;
}

/** What `etch eci pull --json` prints. */
export interface EciPullJson extends PullEciResult {
  schemaVersion: typeof SCHEMA_VERSION;
  dir: string;
}

/** A progress line per file on a terminal (redrawn, at most four times a second), nothing otherwise. */
function progressLine(context: CliContext, quiet: boolean) {
  if (progressModeFor(context.stderr, quiet) !== 'tty') return undefined;
  let last = 0;
  return (what: string, name: string, bytes: number, total: number) => {
    const now = Date.now();
    if (bytes < total && now - last < 250) return;
    last = now;
    const percent = total > 0 ? Math.floor((bytes / total) * 100) : 100;
    context.stderr.write(`\r\x1b[2K${what} ${name} ${formatBytes(bytes)} / ${formatBytes(total)} (${percent}%)`);
    if (bytes >= total) context.stderr.write('\r\x1b[2K');
  };
}

const pushFlags = {
  ...commonFlags,
  ...registryFlags,
  root: { type: 'string', multiple: true },
  kernel: { type: 'string', multiple: true },
  initrd: { type: 'string', multiple: true },
  disk: { type: 'string', multiple: true },
  config: { type: 'string', multiple: true },
  other: { type: 'string', multiple: true },
  format: { type: 'string' },
  platform: { type: 'string', multiple: true },
  annotation: { type: 'string', multiple: true },
  created: { type: 'string' },
} as const;

const COMPONENTS = new Set(['root', 'kernel', 'initrd', 'disk', 'config', 'other']);

interface Group {
  platform?: string;
  values: Map<string, string[]>;
}

/** Splits the component flags into one group per `--platform` (one group when there is at most one). */
function groupsOf(tokens: readonly { kind: string; name?: string; value?: string | undefined }[]): Group[] {
  const options = tokens.filter((t) => t.kind === 'option' && t.name !== undefined);
  const platforms = options.filter((t) => t.name === 'platform').length;
  const groups: Group[] = [{ values: new Map() }];
  for (const token of options) {
    const name = token.name as string;
    if (name === 'platform') {
      const current = groups.at(-1) as Group;
      if (current.platform === undefined && (platforms === 1 || current.values.size === 0))
        current.platform = token.value;
      else groups.push({ platform: token.value, values: new Map() });
      continue;
    }
    if (!COMPONENTS.has(name)) continue;
    if (platforms > 1 && groups.length === 1 && groups[0]?.platform === undefined)
      throw usageError(
        `--${name} comes before the first --platform; with several platforms, each file follows its --platform.`,
      );
    const current = groups.at(-1) as Group;
    current.values.set(name, [...(current.values.get(name) ?? []), token.value as string]);
  }
  return groups;
}

function imageOf(group: Group, context: CliContext): EciImage {
  const one = (name: string): string | undefined => {
    const list = group.values.get(name) ?? [];
    if (list.length > 1)
      throw usageError(`--${name} given twice${group.platform ? ` for ${group.platform}` : ''}; it takes one file.`);
    return list[0];
  };
  const where = group.platform ? ` for ${group.platform}` : '';
  const root = one('root');
  if (root === undefined) throw usageError(`--root FILE:TYPE is required${where}.`);
  const kernel = one('kernel');
  const initrd = one('initrd');
  const config = one('config');
  const resolvePath = (path: string) => (path.startsWith('/') ? path : `${context.cwd}/${path}`);
  const disk = (text: string) => {
    const parsed = parseEciDisk(text);
    return { ...parsed, path: resolvePath(parsed.path) };
  };
  return {
    root: disk(root),
    ...(kernel !== undefined ? { kernel: resolvePath(kernel) } : {}),
    ...(initrd !== undefined ? { initrd: resolvePath(initrd) } : {}),
    ...(config !== undefined ? { config: resolvePath(config) } : {}),
    disks: (group.values.get('disk') ?? []).map(disk),
    other: (group.values.get('other') ?? []).map(resolvePath),
    ...(group.platform !== undefined ? { platform: group.platform } : {}),
  };
}

function annotationsOf(list: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const text of list ?? []) {
    const eq = text.indexOf('=');
    if (eq <= 0) throw usageError(`--annotation ${JSON.stringify(text)} is not KEY=VALUE.`);
    out[text.slice(0, eq)] = text.slice(eq + 1);
  }
  return out;
}

async function runPush(args: string[], context: CliContext): Promise<number> {
  const { values, positionals, tokens } = parseFlags(() =>
    parseArgs({ args, allowPositionals: true, tokens: true, options: pushFlags }),
  );
  if (values.help) {
    context.stdout.write(pushHelp);
    return EXIT.ok;
  }
  const [reference, extra] = positionals;
  if (reference === undefined) throw usageError('name the reference to push to: etch eci push --root FILE:TYPE REF.');
  if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}.`);
  const format = values.format ?? 'artifacts';
  if (format !== 'artifacts' && format !== 'legacy')
    throw usageError(`--format ${JSON.stringify(format)}: choose artifacts or legacy.`);
  const images = groupsOf(tokens).map((group) => imageOf(group, context));
  const annotations = annotationsOf(values.annotation);
  const quiet = Boolean(values.quiet) || Boolean(values.json);
  const line = progressLine(context, quiet);
  const client = registryClientFor(context, values['insecure-registry']);
  let result: PushEciResult;
  try {
    result = await pushEci(client, reference, images.length === 1 ? (images[0] as EciImage) : images, {
      format: format,
      annotations,
      ...(values.created !== undefined ? { created: values.created } : {}),
      signal: context.signal,
      logger: context.logger,
      ...(line
        ? { onProgress: (p) => line(p.phase === 'hash' ? 'hashing' : 'uploading', p.name, p.bytes, p.total) }
        : {}),
      ...(quiet
        ? {}
        : {
            onBlob: (blob) =>
              context.stderr.write(`${blob.how.padEnd(8)} ${blob.name} ${formatBytes(blob.size)} ${blob.digest}\n`),
          }),
    });
  } finally {
    await client.close();
  }
  if (values.json) context.stdout.write(jsonText({ schemaVersion: SCHEMA_VERSION, ...result } satisfies EciPushJson));
  else if (values.quiet) context.stdout.write(`${result.digest}\n`);
  else {
    const uploaded = result.blobs.filter((b) => b.how === 'uploaded');
    context.stdout.write(
      `${result.reference}: ${result.digest} (${result.manifests.map((m) => m.platform).join(', ')}; ${uploaded.length} blobs uploaded, ${formatBytes(uploaded.reduce((n, b) => n + b.size, 0))}; ${result.blobs.length - uploaded.length} already there)\n`,
    );
  }
  return EXIT.ok;
}

async function runPull(args: string[], context: CliContext): Promise<number> {
  const { values, positionals } = parseFlags(() =>
    parseArgs({
      args,
      allowPositionals: true,
      options: { ...commonFlags, ...registryFlags, dir: { type: 'string' }, platform: { type: 'string' } },
    }),
  );
  if (values.help) {
    context.stdout.write(pullHelp);
    return EXIT.ok;
  }
  const [reference, extra] = positionals;
  if (reference === undefined) throw usageError('name the ECI to pull: etch eci pull REF [--dir DIR].');
  if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}.`);
  const dir =
    values.dir === undefined ? context.cwd : values.dir.startsWith('/') ? values.dir : `${context.cwd}/${values.dir}`;
  const quiet = Boolean(values.quiet) || Boolean(values.json);
  const line = progressLine(context, quiet);
  const client = registryClientFor(context, values['insecure-registry']);
  let result: PullEciResult;
  try {
    result = await pullEci(client, reference, {
      dir,
      ...(values.platform !== undefined ? { platform: values.platform } : {}),
      signal: context.signal,
      logger: context.logger,
      ...(line ? { onProgress: (p) => line('downloading', p.name, p.bytes, p.total) } : {}),
    });
  } finally {
    await client.close();
  }
  if (values.json)
    context.stdout.write(jsonText({ schemaVersion: SCHEMA_VERSION, dir, ...result } satisfies EciPullJson));
  else if (values.quiet) for (const file of result.files) context.stdout.write(`${file.path}\n`);
  else {
    context.stdout.write(
      `${result.reference}${result.platform ? ` (${result.platform})` : ''}: ${result.manifestDigest}, ${result.shape} format\n`,
    );
    for (const file of result.files)
      context.stdout.write(
        `${file.how === 'existed' ? 'kept    ' : 'wrote   '} ${file.path} ${formatBytes(file.size)}\n`,
      );
  }
  return EXIT.ok;
}

export const eciCommand: Command = {
  name: 'eci',
  help,
  async run(args: string[], context: CliContext): Promise<number> {
    const [sub, ...rest] = args;
    if (sub === 'push') return runPush(rest, context);
    if (sub === 'pull') return runPull(rest, context);
    if (sub === '--help' || sub === '-h' || sub === 'help') {
      context.stdout.write(help);
      return EXIT.ok;
    }
    if (sub === undefined) throw usageError('name a subcommand: etch eci push … REF or etch eci pull REF.');
    throw new EtchError('ETCH_USAGE', `unknown eci subcommand ${JSON.stringify(sub)}: use push or pull.`);
  },
};
