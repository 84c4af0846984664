import { EtchError } from '@etch/format';

/** The engine's `image/overlay2/repositories.json`: familiar repository → familiar reference → image ID. */
export interface RepositoriesJson {
  Repositories: Record<string, Record<string, string>>;
}

/** One name an image is known by, in familiar form (`alpine`, `ghcr.io/o/r`, `127.0.0.1:5000/x/y`). */
export interface ImageName {
  repository: string;
  /** The tag it was pulled by. */
  tag?: string;
  /** The digest the tag resolved to (for a multi-arch image: the index digest), or the pinned digest. */
  digest?: string;
}

/** The reference strings the engine records for a pull: `repo:tag` and `repo@digest` (either may be absent). */
export function referencesOf(name: ImageName): string[] {
  const refs: string[] = [];
  if (name.tag !== undefined) refs.push(`${name.repository}:${name.tag}`);
  if (name.digest !== undefined) refs.push(`${name.repository}@${name.digest}`);
  if (refs.length === 0) refs.push(`${name.repository}:latest`);
  return refs;
}

/**
 * Parses an existing repositories.json (from the base OS). Invalid JSON is an error, not an empty store:
 * the engine refuses to start with it, and silently replacing it would drop the OS's own images.
 */
export function parseRepositories(text: string | Buffer, source: string): RepositoriesJson {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.toString());
  } catch (cause) {
    throw new EtchError('ETCH_BAD_ENTRY', `${source} is not valid JSON; fix or remove it before preloading.`, {
      cause,
      details: { path: source },
    });
  }
  const repositories = (parsed as Partial<RepositoriesJson> | null)?.Repositories;
  if (typeof repositories !== 'object' || repositories === null) {
    throw new EtchError(
      'ETCH_BAD_ENTRY',
      `${source} has no "Repositories" object; it is not an engine reference store.`,
      { details: { path: source } },
    );
  }
  return { Repositories: repositories };
}

/**
 * Adds references to a store without dropping any existing entry; a reference that already exists now
 * points to the new image (as a pull would do).
 */
export function mergeRepositories(
  base: RepositoriesJson | undefined,
  additions: readonly { name: ImageName; imageId: string }[],
): RepositoriesJson {
  const merged: Record<string, Record<string, string>> = {};
  for (const [repository, refs] of Object.entries(base?.Repositories ?? {})) merged[repository] = { ...refs };
  for (const { name, imageId } of additions) {
    const refs = (merged[name.repository] ??= {});
    for (const ref of referencesOf(name)) refs[ref] = imageId;
  }
  return { Repositories: merged };
}

/** Serialises like Go's json.Marshal of maps: compact, keys sorted at every level. */
export function serializeRepositories(store: RepositoriesJson): string {
  const sorted: Record<string, Record<string, string>> = {};
  for (const repository of Object.keys(store.Repositories).sort()) {
    const refs = store.Repositories[repository] ?? {};
    sorted[repository] = Object.fromEntries(
      Object.keys(refs)
        .sort()
        .map((ref) => [ref, refs[ref] as string]),
    );
  }
  return JSON.stringify({ Repositories: sorted });
}
