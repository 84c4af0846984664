import { RegistryClient } from '@etch/registry';
import type { CliContext } from './context.js';

/** Flags every command that pulls images shares. */
export const registryFlags = {
  'insecure-registry': { type: 'string', multiple: true },
} as const;

export const registryUsage = `  --insecure-registry HOST     reach HOST[:PORT] over plain HTTP (loopback registries always are). Repeatable.`;

/**
 * The registry client of a CLI run: credentials from docker's config.json (`DOCKER_CONFIG` honoured), the
 * insecure registries given, logs through the CLI's logger.
 */
export function registryClientFor(context: CliContext, insecure: readonly string[] | undefined): RegistryClient {
  const configDir = context.env['DOCKER_CONFIG'];
  return new RegistryClient({
    insecureRegistries: insecure ?? [],
    logger: context.logger,
    userAgent: 'etch-cli',
    ...(configDir ? { dockerConfig: { path: `${configDir}/config.json` } } : {}),
  });
}
