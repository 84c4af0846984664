import { appsJsonFor, formatAppsJson, parseSupervisorVersion } from '@etch/balena';
import type { CreateEtchOptions, InjectSource, PreloadImages } from '@etch/core';
import type { PreloadImage } from '@etch/docker-store';
import { entryTime } from '@etch/format';
import type { Compression } from '@etch/tar';

/**
 * The planning `etch create` and `etch serve` share, so that the same choices give the same bytes from either:
 * which images to preload in what order, the supervisor's extra tag, the apps.json, and how the choices
 * become the options of `createEtch`.
 */

/** The images to preload, in order, and which of them is the supervisor. */
export interface PreloadOrder {
  /** The target state's (or apps.json's) images, then the other images not already listed, then the supervisor. */
  images: string[];
  /** Index in `images` of the supervisor image, tagged `balena_supervisor:<supervisorTag>` too. */
  supervisorIndex?: number;
  supervisorTag?: string;
}

/** The supervisor tag balenaOS uses: `v` and the version (`14.11.2` → `v14.11.2`); an invalid version throws. */
export function supervisorTagFor(version: string): string {
  parseSupervisorVersion(version);
  return version.startsWith('v') ? version : `v${version}`;
}

/**
 * Orders the images to preload: those of the release first (no need to list them twice), then `images` not
 * already there, then the supervisor (given `supervisorVersion`, which names its tag).
 */
export function preloadOrder(choices: {
  releaseImages?: readonly string[];
  images?: readonly string[];
  supervisor?: string;
  supervisorVersion?: string;
}): PreloadOrder {
  const images = [...(choices.releaseImages ?? [])];
  for (const image of choices.images ?? []) if (!images.includes(image)) images.push(image);
  const order: PreloadOrder = { images };
  if (choices.supervisor !== undefined) {
    order.supervisorTag = supervisorTagFor(choices.supervisorVersion as string);
    const at = images.indexOf(choices.supervisor);
    order.supervisorIndex = at === -1 ? images.push(choices.supervisor) - 1 : at;
  }
  return order;
}

/**
 * The apps.json text for a target state, in the format of the supervisor's version, merged with the
 * apps.json the base OS ships (its bytes, if read from the data partition).
 */
export function appsJsonText(
  state: unknown,
  options: { supervisorVersion: string; pinDevice?: boolean; existing?: Buffer },
): string {
  return formatAppsJson(
    appsJsonFor(state, {
      supervisorVersion: options.supervisorVersion,
      pinDevice: Boolean(options.pinDevice),
      ...(options.existing !== undefined ? { existing: JSON.parse(options.existing.toString('utf8')) as unknown } : {}),
    }),
  );
}

/** Tags the supervisor of resolved images `balena_supervisor:<tag>` besides its own names (in place). */
export function tagSupervisor(preloads: PreloadImage[], order: PreloadOrder): PreloadImage[] {
  if (order.supervisorIndex !== undefined && order.supervisorTag !== undefined) {
    const supervisor = preloads[order.supervisorIndex] as PreloadImage;
    supervisor.store = {
      ...supervisor.store,
      names: [...supervisor.store.names, { repository: 'balena_supervisor', tag: order.supervisorTag }],
    };
  }
  return preloads;
}

/** The engine store to write into the data partition, from resolved images. */
export function preloadImagesOption(
  preloads: readonly PreloadImage[],
  options: {
    dataPartition: number;
    baseRepositories?: PreloadImages['baseRepositories'];
    stage?: PreloadImages['stage'];
  },
): PreloadImages {
  return {
    partition: options.dataPartition,
    images: preloads.map((p) => p.store),
    ...(options.baseRepositories ? { baseRepositories: options.baseRepositories } : {}),
    ...(options.stage ? { stage: options.stage } : {}),
  };
}

/** What {@link etchOptionsFor} turns into `createEtch` options. */
export interface EtchChoices {
  base: CreateEtchOptions['base'];
  inject: readonly InjectSource[];
  /** The engine store (see {@link preloadImagesOption}), or a promise of it while images resolve. */
  images?: PreloadImages | Promise<PreloadImages>;
  /** The data partition the apps.json goes to. */
  dataPartition: number;
  appsJson?: string;
  compression: Compression;
  /** `SOURCE_DATE_EPOCH` as the environment gives it. */
  sourceDateEpoch: string | undefined;
  logger?: CreateEtchOptions['logger'];
}

/** The options of `createEtch` for a set of choices, the same from `etch create` and `etch serve`. */
export function etchOptionsFor(choices: EtchChoices): Omit<CreateEtchOptions, 'output' | 'signal'> {
  return {
    base: choices.base,
    inject: choices.inject,
    ...(choices.images ? { images: choices.images } : {}),
    ...(choices.appsJson !== undefined
      ? {
          afterImages: [
            {
              kind: 'entries',
              partition: choices.dataPartition,
              entries: [{ header: { name: 'apps.json', type: 'file', mode: 0o644 }, content: choices.appsJson }],
            },
          ],
        }
      : {}),
    compression: choices.compression,
    // Format 1.1: tell the flasher up front what each partition receives (layers are local by now).
    requirements: true,
    // Entries etch makes itself get this time, so the same inputs give the same bytes.
    entryTime: entryTime(choices.sourceDateEpoch),
    ...(choices.logger ? { logger: choices.logger } : {}),
  };
}
