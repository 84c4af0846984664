import { EtchError, RAW_IMAGE_EXTENSIONS, baseImageContainer } from '@etch/format';

/** Compressions a raw image file may carry, by suffix. */
export type FileCompression = 'gzip' | 'xz' | 'zstd';

const COMPRESSION_SUFFIXES: ReadonlyArray<readonly [string, FileCompression]> = [
  ['.gz', 'gzip'],
  ['.xz', 'xz'],
  ['.zst', 'zstd'],
  ['.zstd', 'zstd'],
];

/** What a file name says about its content. */
export type NameKind =
  | { kind: 'raw'; name: string }
  | { kind: 'zip'; name: string }
  | { kind: 'compressed'; name: string; compression: FileCompression; inner: string };

/** The extensions accepted, for messages. */
export function acceptedExtensions(): string {
  return `${RAW_IMAGE_EXTENSIONS.map((e) => `.${e}`).join(' ')} .zip, or a raw image ending in .gz .xz .zst`;
}

/**
 * Classifies a file name: a raw image (`.img`, `.wic` …), a zip, or a raw image compressed with gzip, xz or zstd
 * (`balena.img.xz` holds `balena.img`). Undefined when it is none of these.
 */
export function classifyName(name: string): NameKind | undefined {
  const lower = name.toLowerCase();
  for (const [suffix, compression] of COMPRESSION_SUFFIXES) {
    if (lower.endsWith(suffix)) {
      const inner = name.slice(0, -suffix.length);
      return baseImageContainer(inner) === 'raw' ? { kind: 'compressed', name: inner, compression, inner } : undefined;
    }
  }
  const container = baseImageContainer(name);
  if (container === 'raw') return { kind: 'raw', name };
  if (container === 'zip') return { kind: 'zip', name };
  return undefined;
}

/** Like {@link classifyName}, failing with `ETCH_USAGE` and the list of accepted names. */
export function requireKind(name: string, what: string): NameKind {
  const kind = classifyName(name);
  if (kind === undefined || name.startsWith('.') || name === '') {
    throw new EtchError(
      'ETCH_USAGE',
      `${what}: ${JSON.stringify(name)} is not a base image name; expected ${acceptedExtensions()}.`,
      { details: { name } },
    );
  }
  return kind;
}

/** The last path component of a `/`-separated path (zip entry names, URL paths). */
export function lastComponent(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

/** A URL without `user:pass@`, for messages, logs and cache records. */
export function redactUrl(url: string | URL): string {
  try {
    const parsed = new URL(String(url));
    if (parsed.username || parsed.password) {
      parsed.username = '';
      parsed.password = '';
    }
    // Presigned URLs carry their credentials in the query (X-Amz-Signature, token, sig…): show names only.
    for (const key of [...new Set(parsed.searchParams.keys())]) parsed.searchParams.set(key, '…');
    return parsed.toString();
  } catch {
    return String(url).replace(/\/\/[^/@]*@/, '//');
  }
}
