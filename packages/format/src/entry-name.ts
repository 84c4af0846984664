import { baseImageContainer, type BaseImageContainer } from './base-image.js';
import { parseInjectName } from './paths.js';
import { isVersionEntryName } from './version.js';

/** What a name alone says about an entry, without order or type context. */
export type ParsedEntryName =
  | { kind: 'version' }
  | { kind: 'inject'; partition: number; path: string }
  | { kind: 'inject-root' }
  | { kind: 'base-image'; name: string; container: BaseImageContainer }
  | { kind: 'other'; name: string };

/**
 * Classifies an archive name: VERSION, `inject/<partition>/<path>` (validated and normalised), a base image
 * name, or something else. Order and type rules live in {@link EtchOrderValidator}.
 *
 * @example
 * ```ts
 * parseEntryName('inject/6/apps.json') // { kind: 'inject', partition: 6, path: 'apps.json' }
 * parseEntryName('balena.img.zip')     // { kind: 'base-image', name: 'balena.img.zip', container: 'zip' }
 * ```
 * @throws EtchError `ETCH_BAD_ENTRY` / `ETCH_UNSAFE_PATH` for a malformed inject name.
 */
export function parseEntryName(name: string): ParsedEntryName {
  if (isVersionEntryName(name)) return { kind: 'version' };
  if (name === 'inject' || name === 'inject/') return { kind: 'inject-root' };
  const inject = parseInjectName(name);
  if (inject !== undefined) return { kind: 'inject', ...inject };
  const container = name.includes('/') ? undefined : baseImageContainer(name);
  return container === undefined ? { kind: 'other', name } : { kind: 'base-image', name, container };
}
