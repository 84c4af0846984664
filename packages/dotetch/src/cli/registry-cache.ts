import { join, resolve } from 'node:path';
import { defaultCacheDir } from '@etch/baseimage';
import { ConvertedLayerCache } from '@etch/docker-store';
import type { Logger } from '@etch/format';
import type { CliContext } from './context.js';
import { REGISTRY_CACHE_SUBDIR } from './registry-options.js';

/** The registry blob cache of a run: `<cache dir>/oci`, or none with `--no-cache`. */
export function registryCacheFor(
  context: CliContext,
  values: { 'cache-dir'?: string; 'no-cache'?: boolean },
): string | undefined {
  if (values['no-cache']) return undefined;
  return join(
    values['cache-dir'] !== undefined ? resolve(context.cwd, values['cache-dir']) : defaultCacheDir(context.env),
    REGISTRY_CACHE_SUBDIR,
  );
}

/** Where converted layers are kept, inside the registry cache (so `etch cache clean` removes them with it). */
export const CONVERTED_LAYERS_SUBDIR = 'converted';

/** The cache of converted layers beside the registry blob cache `registryCache` (`<cache dir>/oci`). */
export function convertedLayerCacheFor(registryCache: string, logger?: Logger): ConvertedLayerCache {
  return new ConvertedLayerCache(join(registryCache, CONVERTED_LAYERS_SUBDIR), logger ? { logger } : {});
}
