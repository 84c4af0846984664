import { EtchError } from '@etch/format';

function malicious(name: string, why: string): EtchError {
  return new EtchError('ETCH_UNSAFE_PATH', `Refusing a malicious layer: entry ${JSON.stringify(name)} ${why}.`, {
    details: { entryName: name },
  });
}

/**
 * Normalises a layer entry name to a path relative to the layer root: `./` prefixes, `//` and trailing `/`
 * fold away; `''` is the root itself. Absolute names, `..` segments and NUL bytes are refused: docker never
 * writes them, and a layer that has them is trying to leave its directory.
 */
export function layerPath(name: string): string {
  if (name.includes('\0')) throw malicious(name, 'contains a NUL byte');
  if (name.startsWith('/')) throw malicious(name, 'is absolute');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw malicious(name, 'contains ".."');
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
    return layerPath(linkname.replace(/^\/+/, ''));
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
