import { createHash, type Hash } from 'node:crypto';
import { EtchError } from '@etch/format';

/** Digest algorithms the OCI image spec registers, and the length of their hex encoding. */
const ALGORITHMS: Readonly<Record<string, number>> = { sha256: 64, sha512: 128 };

// The grammar of distribution/reference: algorithm components joined by [+._-], then at least 32 hex digits.
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** True for a digest this package can verify (`sha256:` or `sha512:` with the right number of lower-case hex digits). */
export function isVerifiableDigest(digest: string): boolean {
  const colon = digest.indexOf(':');
  const length = ALGORITHMS[digest.slice(0, colon)];
  return length !== undefined && new RegExp(`^[0-9a-f]{${length}}$`).test(digest.slice(colon + 1));
}

/**
 * Checks that `digest` is well formed and verifiable, throwing `ETCH_USAGE` otherwise.
 * @param what names the digest in the message ("the layer digest").
 */
export function assertDigest(digest: unknown, what = 'a digest'): asserts digest is string {
  if (typeof digest !== 'string' || !DIGEST.test(digest)) {
    throw new EtchError(
      'ETCH_USAGE',
      `${what} is not a digest (want algorithm:hex, e.g. sha256:…): ${JSON.stringify(digest)}.`,
    );
  }
  if (!isVerifiableDigest(digest)) {
    throw new EtchError(
      'ETCH_USAGE',
      `${what} ${digest} uses an algorithm this client cannot verify; only sha256 and sha512 are supported.`,
      {
        details: { digest },
      },
    );
  }
}

/** A running hash for a digest's algorithm. */
export function hasherFor(digest: string): Hash {
  return createHash(digest.slice(0, digest.indexOf(':')));
}

/** `algorithm:hex` of a finished hash. */
export function digestOf(hash: Hash, algorithm: string): string {
  return `${algorithm}:${hash.digest('hex')}`;
}

/** The digest of `bytes` with the same algorithm as `like` (sha256 by default). */
export function digestBytes(bytes: Uint8Array, like = 'sha256:'): string {
  const algorithm = like.slice(0, like.indexOf(':'));
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** The `sha256:<hex>` of `bytes`. */
export function sha256(bytes: Uint8Array): string {
  return digestBytes(bytes, 'sha256:');
}

/** The hex part of a digest (`sha256:abc` → `abc`). */
export function encodedPart(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

/** The algorithm part of a digest (`sha256:abc` → `sha256`). */
export function algorithmOf(digest: string): string {
  return digest.slice(0, digest.indexOf(':'));
}
