import { RegistryClient } from '@etch/registry';
import type { MinRate } from '@etch/registry/http';
import { usageError } from './args.js';
import type { CliContext } from './context.js';

// No @etch/baseimage here: copy, push and build load this module and should start without it (see registry-cache.ts).

/** Flags every command that pulls images shares. */
export const registryFlags = {
  'insecure-registry': { type: 'string', multiple: true },
  'stall-timeout': { type: 'string' },
} as const;

/** How the registry flags read in a help page (options column 30, like every page). */
export const registryHelp = `  --insecure-registry HOST    allow plain HTTP for HOST[:PORT] when HTTPS fails, as loopback registries
                              are allowed without it. Repeatable.
  --stall-timeout SECONDS     give up on a download that brings less than 1 KiB in this many seconds of
                              waiting, after a few resumes (default 30)`;

/** Where the registry's layers and manifests are kept inside etch's cache directory. */
export const REGISTRY_CACHE_SUBDIR = 'oci';

/** The registry flags as parsed. */
export interface RegistryValues {
  'insecure-registry'?: string[] | undefined;
  'stall-timeout'?: string | undefined;
}

/** `--stall-timeout SECONDS` as the HTTP layer's minimum rate (1 KiB in that window), or the default. */
export function minRateFor(values: RegistryValues): MinRate | undefined {
  const given = values['stall-timeout'];
  if (given === undefined) return undefined;
  const seconds = Number(given);
  // Below a tenth of a second every pause of a healthy server would count as a stall.
  if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > 24 * 3600)
    throw usageError(
      `--stall-timeout must be a number of seconds from 0.1 to a day (86400), not ${JSON.stringify(given)}.`,
    );
  return { bytes: 1024, windowMs: Math.round(seconds * 1000) };
}

/**
 * The registry client of a CLI run: credentials from docker's config.json (`DOCKER_CONFIG` honoured), the
 * insecure registries and stall timeout given, logs through the CLI's logger.
 */
export function registryClientFor(context: CliContext, values: RegistryValues, cache?: string): RegistryClient {
  const configDir = context.env['DOCKER_CONFIG'];
  const minRate = minRateFor(values);
  return new RegistryClient({
    ...(cache !== undefined ? { cache } : {}),
    insecureRegistries: values['insecure-registry'] ?? [],
    ...(minRate ? { minRate } : {}),
    logger: context.logger,
    userAgent: 'etch-cli',
    ...(configDir ? { dockerConfig: { path: `${configDir}/config.json` } } : {}),
  });
}
