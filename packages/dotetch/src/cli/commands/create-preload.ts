import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { formatAppsJson, imagesOfTargetState, parseTargetState, validateAppsJson } from '@etch/balena';
import type { InjectSource } from '@etch/core';
import { parseRepositories, readBaseRepositories, type RepositoriesJson } from '@etch/docker-store';
import { EtchError } from '@etch/format';
import { readPartitionFile } from '@etch/disk';
import { appsJsonText, preloadOrder, type PreloadOrder } from '@etch/serve/etch-options';
import type { CliContext } from '../context.js';

/** The preload flags of `etch create`, as parsed. */
export interface PreloadFlags {
  image?: string[];
  'target-state'?: string;
  'apps-json'?: string;
  supervisor?: string;
  'supervisor-version'?: string;
  'pin-device'?: boolean;
  repositories?: string;
  'ignore-base-repositories'?: boolean;
}

/** What the flags ask to preload, once files are read and checked. */
export interface PreloadPlan extends PreloadOrder {
  /** The apps.json to write into the data partition. */
  appsJson?: string;
}

async function readJsonFile(path: string, flag: string): Promise<unknown> {
  const text = await readFile(path, 'utf8').catch((cause: unknown) => {
    throw new EtchError('ETCH_IO', `Cannot read ${flag} ${path}: ${(cause as Error).message}`, {
      cause,
      details: { path },
    });
  });
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new EtchError('ETCH_USAGE', `${flag} ${path} is not valid JSON.`, { cause, details: { path } });
  }
}

/**
 * Plans the preload from the flags: images from the target state (no need to list them twice), extra
 * `--image`s and the supervisor, and the apps.json — generated from the target state for the supervisor's
 * format and merged with the one the base OS ships (read from a raw base image), or given as is.
 */
export async function planPreload(
  values: PreloadFlags,
  context: CliContext,
  rawBase: string | undefined,
  dataPartition: number,
  usageError: (message: string) => Error,
): Promise<PreloadPlan> {
  if (values['target-state'] !== undefined && values['apps-json'] !== undefined)
    throw usageError('--target-state and --apps-json both give the apps.json; choose one.');
  if (values['pin-device'] && values['target-state'] === undefined)
    throw usageError('--pin-device pins the release of --target-state; give one.');
  if (values['target-state'] !== undefined && values['supervisor-version'] === undefined) {
    throw usageError(
      "--target-state needs --supervisor-version: the apps.json format depends on the base OS's supervisor (v1 below 7.0.0, v2 below 13, v3 from 13).",
    );
  }
  if (values.supervisor !== undefined && values['supervisor-version'] === undefined)
    throw usageError('--supervisor needs --supervisor-version, the tag balenaOS starts it by.');
  const version = values['supervisor-version'];
  let releaseImages: readonly string[] = [];
  let appsJson: string | undefined;
  if (values['target-state'] !== undefined) {
    const path = resolve(context.cwd, values['target-state']);
    const state = parseTargetState(await readJsonFile(path, '--target-state'));
    releaseImages = imagesOfTargetState(state);
    const existing = rawBase !== undefined ? await readPartitionFile(rawBase, dataPartition, '/apps.json') : undefined;
    if (rawBase === undefined)
      context.logger.warn(
        'the base image cannot be read here (not a raw image file), so an apps.json it ships is not merged',
      );
    if (existing !== undefined)
      context.logger.info('merging with the apps.json of the base image', { partition: dataPartition });
    appsJson = appsJsonText(state, {
      supervisorVersion: version as string,
      pinDevice: Boolean(values['pin-device']),
      ...(existing !== undefined ? { existing } : {}),
    });
  } else if (values['apps-json'] !== undefined) {
    const path = resolve(context.cwd, values['apps-json']);
    const validated = validateAppsJson(await readJsonFile(path, '--apps-json'), version);
    releaseImages = validated.images;
    appsJson = formatAppsJson(validated.appsJson);
  }
  const plan: PreloadPlan = preloadOrder({
    releaseImages,
    images: values.image ?? [],
    ...(values.supervisor !== undefined ? { supervisor: values.supervisor, supervisorVersion: version } : {}),
  });
  if (appsJson !== undefined) plan.appsJson = appsJson;
  return plan;
}

/** The base OS's repositories.json to merge with: `--repositories`, none, or read from a raw base image. */
export async function baseRepositoriesFor(
  values: PreloadFlags,
  rawBase: string | undefined,
  partition: number,
  cwd: string,
  usageError: (message: string) => Error,
): Promise<RepositoriesJson | undefined> {
  if (values['ignore-base-repositories']) return undefined;
  if (values.repositories !== undefined) {
    const path = resolve(cwd, values.repositories);
    const text = await readFile(path).catch((cause: unknown) => {
      throw new EtchError('ETCH_IO', `Cannot read --repositories ${path}: ${(cause as Error).message}`, {
        cause,
        details: { path },
      });
    });
    return parseRepositories(text, path);
  }
  if (rawBase === undefined) {
    throw usageError(
      "The base image is not a raw image file here (a zip, a compressed image, a URL or an ECI artifact), so its data partition cannot be read to keep the OS's own images (the supervisor) in repositories.json. Pass --repositories FILE (the OS's /var/lib/docker/image/overlay2/repositories.json) or --ignore-base-repositories.",
    );
  }
  return readBaseRepositories(rawBase, { partition });
}

/** `--splash FILE`: the boot partition's `splash/balena-logo.png`, where balenaOS's plymouth theme reads it. */
export async function splashSource(path: string, bootPartition: number): Promise<InjectSource> {
  const info = await stat(path).catch((cause: unknown) => {
    throw new EtchError('ETCH_IO', `Cannot read --splash ${path}: ${(cause as Error).message}`, {
      cause,
      details: { path },
    });
  });
  if (!info.isFile()) throw new EtchError('ETCH_USAGE', `--splash ${path} is not a file.`);
  const head = Buffer.alloc(8);
  const handle = await open(path, 'r');
  await handle.read(head, 0, 8, 0).finally(() => handle.close());
  if (!head.equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])))
    throw new EtchError('ETCH_USAGE', `--splash ${path} is not a PNG image; balenaOS shows splash/balena-logo.png.`);
  return {
    kind: 'entries',
    partition: bootPartition,
    entries: [
      {
        header: { name: 'splash/balena-logo.png', type: 'file', size: info.size, mode: 0o644 },
        content: createReadStream(path),
      },
    ],
  };
}
