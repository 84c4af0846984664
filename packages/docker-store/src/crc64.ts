/**
 * CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it with `crc64.MakeTable(crc64.ISO)`:
 * reflected polynomial 0xD800000000000000, initial value and final xor all ones. tar-split stores this
 * checksum of every file's content, and the engine checks it when it rebuilds a layer (`docker save`).
 *
 * The 64-bit state is kept as two unsigned 32-bit halves: BigInt would be far too slow for gigabytes.
 */
const TABLE_HI = new Uint32Array(256);
const TABLE_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let bit = 0; bit < 8; bit++) {
    const carry = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (carry) hi = (hi ^ 0xd8000000) >>> 0;
  }
  TABLE_HI[i] = hi;
  TABLE_LO[i] = lo;
}

/** Incremental CRC-64/ISO. */
export class Crc64 {
  #hi = 0xffffffff;
  #lo = 0xffffffff;

  update(data: Uint8Array): this {
    let hi = this.#hi;
    let lo = this.#lo;
    for (let i = 0; i < data.length; i++) {
      const index = (lo ^ (data[i] as number)) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ (TABLE_LO[index] as number);
      hi = (hi >>> 8) ^ (TABLE_HI[index] as number);
    }
    this.#hi = hi >>> 0;
    this.#lo = lo >>> 0;
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
