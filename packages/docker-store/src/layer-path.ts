import { EtchError } from '@etch/format';

function malicious(name: string, why: string): EtchError {
  return new EtchError('ETCH_UNSAFE_PATH', `Refusing a malicious layer: entry ${JSON.stringify(name)} ${why}.`, {
    details: { entryName: name },
  });
}

/**
 * Normalises a layer entry name to a path relative to the layer root, as the engine cleans it before
 * extracting: `./` prefixes, `//`, `.` and trailing `/` fold away; `''` is the root itself. An absolute name
 * is taken from the layer root (`/etc/x` is `etc/x`, and `..` cannot climb above that root: `/../x` is `x`).
 * A `..` inside the layer folds lexically (`a/../b` is `b`). Refused: NUL bytes and a relative name whose
 * `..` leaves the layer (`../x`, `a/../../x`), which is how a layer tries to write outside its directory.
 */
export function layerPath(name: string): string {
  if (name.includes('\0')) throw malicious(name, 'contains a NUL byte');
  const absolute = name.startsWith('/');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length > 0) parts.pop();
      else if (!absolute) throw malicious(name, 'climbs out of the layer with ".."');
      continue;
    }
    parts.push(part);
  }
  return parts.join('/');
}

/**
 * Normalises a hardlink target inside a layer. Unlike entry names, an absolute target is allowed and means
 * "from the layer root", as the engine reads it.
 */
export function hardlinkTargetPath(linkname: string, entryName: string): string {
  try {
    return layerPath(linkname);
  } catch (cause) {
    throw new EtchError(
      'ETCH_UNSAFE_PATH',
      `Refusing a malicious layer: hardlink ${JSON.stringify(entryName)} points outside the layer (${JSON.stringify(linkname)}).`,
      {
        cause,
        details: { entryName },
      },
    );
  }
}

/** Every proper ancestor of `path` (`a/b/c` → `a`, `a/b`). */
export function* ancestors(path: string): Generator<string> {
  for (let slash = path.indexOf('/'); slash !== -1; slash = path.indexOf('/', slash + 1)) yield path.slice(0, slash);
}

/** The parent of `path` (`''` for a top-level name). */
export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? '' : path.slice(0, slash);
}
