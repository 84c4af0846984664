/**
 * CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it with `crc64.MakeTable(crc64.ISO)`:
 * reflected polynomial 0xD800000000000000, initial value and final xor all ones. tar-split stores this
 * checksum of every file's content, and the engine checks it when it rebuilds a layer (`docker save`).
 *
 * The 64-bit state is kept as two unsigned 32-bit halves: BigInt would be far too slow for gigabytes.
 */
// Eight tables (slicing-by-8): table k gives the CRC of a byte followed by k zero bytes, so eight input bytes
// are folded per step instead of one. Each 64-bit entry is stored as two 32-bit halves.
const HI: Uint32Array[] = Array.from({ length: 8 }, () => new Uint32Array(256));
const LO: Uint32Array[] = Array.from({ length: 8 }, () => new Uint32Array(256));
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let bit = 0; bit < 8; bit++) {
    const carry = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (carry) hi = (hi ^ 0xd8000000) >>> 0;
  }
  (HI[0] as Uint32Array)[i] = hi;
  (LO[0] as Uint32Array)[i] = lo;
}
for (let k = 1; k < 8; k++) {
  const prevHi = HI[k - 1] as Uint32Array;
  const prevLo = LO[k - 1] as Uint32Array;
  for (let i = 0; i < 256; i++) {
    const hi = prevHi[i] as number;
    const lo = prevLo[i] as number;
    const index = lo & 0xff;
    (LO[k] as Uint32Array)[i] = (((lo >>> 8) | (hi << 24)) ^ ((LO[0] as Uint32Array)[index] as number)) >>> 0;
    (HI[k] as Uint32Array)[i] = ((hi >>> 8) ^ ((HI[0] as Uint32Array)[index] as number)) >>> 0;
  }
}
const [H0, H1, H2, H3, H4, H5, H6, H7] = HI as [
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
];
const [L0, L1, L2, L3, L4, L5, L6, L7] = LO as [
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
];

/** Incremental CRC-64/ISO. */
export class Crc64 {
  #hi = 0xffffffff;
  #lo = 0xffffffff;

  update(data: Uint8Array): this {
    let hi = this.#hi;
    let lo = this.#lo;
    let i = 0;
    const end8 = data.length - (data.length % 8);
    for (; i < end8; i += 8) {
      const a =
        (lo ^
          ((data[i] as number) |
            ((data[i + 1] as number) << 8) |
            ((data[i + 2] as number) << 16) |
            ((data[i + 3] as number) << 24))) >>>
        0;
      const b =
        (hi ^
          ((data[i + 4] as number) |
            ((data[i + 5] as number) << 8) |
            ((data[i + 6] as number) << 16) |
            ((data[i + 7] as number) << 24))) >>>
        0;
      lo =
        ((L7[a & 0xff] as number) ^
          (L6[(a >>> 8) & 0xff] as number) ^
          (L5[(a >>> 16) & 0xff] as number) ^
          (L4[a >>> 24] as number) ^
          (L3[b & 0xff] as number) ^
          (L2[(b >>> 8) & 0xff] as number) ^
          (L1[(b >>> 16) & 0xff] as number) ^
          (L0[b >>> 24] as number)) >>>
        0;
      hi =
        ((H7[a & 0xff] as number) ^
          (H6[(a >>> 8) & 0xff] as number) ^
          (H5[(a >>> 16) & 0xff] as number) ^
          (H4[a >>> 24] as number) ^
          (H3[b & 0xff] as number) ^
          (H2[(b >>> 8) & 0xff] as number) ^
          (H1[(b >>> 16) & 0xff] as number) ^
          (H0[b >>> 24] as number)) >>>
        0;
    }
    for (; i < data.length; i++) {
      const index = (lo ^ (data[i] as number)) & 0xff;
      lo = (((lo >>> 8) | (hi << 24)) ^ (L0[index] as number)) >>> 0;
      hi = ((hi >>> 8) ^ (H0[index] as number)) >>> 0;
    }
    this.#hi = hi;
    this.#lo = lo;
    return this;
  }

  /** The checksum as 8 big-endian bytes (what tar-split base64-encodes). */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE(~this.#hi >>> 0, 0);
    out.writeUInt32BE(~this.#lo >>> 0, 4);
    return out;
  }
}
