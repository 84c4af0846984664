import { createHash } from 'node:crypto';

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Checks a `sha256:<hex>` digest and returns it. */
export function assertDigest(value: string, what: string): string {
  if (!DIGEST.test(value)) throw new TypeError(`${what} must be a sha256 digest, got ${JSON.stringify(value)}`);
  return value;
}

/** The hex part of `sha256:<hex>`. */
export function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

/**
 * Layer chain IDs from the config's `rootfs.diff_ids`: the first is the first diffID, each next one is
 * sha256 of `"<parent chain id> <diffID>"` (image-spec identity.ChainID).
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const chain: string[] = [];
  for (const diffId of diffIds) {
    const parent = chain.at(-1);
    chain.push(
      parent === undefined ? diffId : `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}`,
    );
  }
  return chain;
}

/**
 * The overlay2 directory name of a layer: 64 hex characters like the engine's random ids, but derived from
 * the chain ID so the same images always give the same `.etch`. The engine redraws ids whose first 12
 * characters are all digits (they could be mistaken for short numeric ids); so do we.
 */
export function cacheIdFor(chainId: string): string {
  for (let attempt = 0; ; attempt++) {
    const id = createHash('sha256').update(`etch/cache-id\0${chainId}\0${attempt}`).digest('hex');
    if (!/^[0-9]{12}/.test(id)) return id;
  }
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** The short `l/<id>` link name: 26 characters of upper-case base32, as overlay2's GenerateID makes them. */
export function linkIdFor(cacheId: string): string {
  const bytes = createHash('sha256').update(`etch/link-id\0${cacheId}`).digest().subarray(0, 17);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  return out.slice(0, 26);
}
