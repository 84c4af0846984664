import { join, resolve } from 'node:path';
import { defaultCacheDir } from '@etch/baseimage';
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
