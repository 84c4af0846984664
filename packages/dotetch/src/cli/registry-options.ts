import { RegistryClient } from '@etch/registry';
import type { CliContext } from './context.js';

// No @etch/baseimage here: copy, push and build load this module and should start without it (see registry-cache.ts).

/** Flags every command that pulls images shares. */
export const registryFlags = {
  'insecure-registry': { type: 'string', multiple: true },
} as const;

/** How the registry flags read in a help page (options column 30, like every page). */
export const registryHelp = `  --insecure-registry HOST    allow plain HTTP for HOST[:PORT] when HTTPS fails, as loopback registries
                              are allowed without it. Repeatable.`;

/** Where the registry's layers and manifests are kept inside etch's cache directory. */
export const REGISTRY_CACHE_SUBDIR = 'oci';

/**
 * The registry client of a CLI run: credentials from docker's config.json (`DOCKER_CONFIG` honoured), the
 * insecure registries given, logs through the CLI's logger.
 */
export function registryClientFor(
  context: CliContext,
  insecure: readonly string[] | undefined,
  cache?: string,
): RegistryClient {
  const configDir = context.env['DOCKER_CONFIG'];
  return new RegistryClient({
    ...(cache !== undefined ? { cache } : {}),
    insecureRegistries: insecure ?? [],
    logger: context.logger,
    userAgent: 'etch-cli',
    ...(configDir ? { dockerConfig: { path: `${configDir}/config.json` } } : {}),
  });
}
