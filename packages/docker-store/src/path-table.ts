import { hash, randomBytes } from 'node:crypto';

/**
 * The paths a layer has created so far, each with its kind, in about 20 bytes a path whatever its length:
 * a 64-bit digest keyed with a per-process secret (so a layer cannot be crafted to collide) in typed arrays,
 * outside the JavaScript heap. A Map of the paths themselves kept about 100 bytes an entry of heap, which a
 * layer of a million empty files turned into the bulk of `etch create`'s memory (issue 19, point 9).
 */
export class PathTable<K extends string> {
  static readonly #secret = randomBytes(16).toString('hex');
  #keys = new Uint32Array(2 * 1024);
  /** 0: empty slot; n: `#names[n - 1]`. */
  #kinds = new Uint8Array(1024);
  readonly #names: K[] = [];
  #size = 0;

  /** How many paths the table holds. */
  get size(): number {
    return this.#size;
  }

  /** The kind recorded for `path`, or undefined. */
  get(path: string): K | undefined {
    const [hi, lo] = digest(path, PathTable.#secret);
    const slot = this.#find(hi, lo);
    const kind = this.#kinds[slot] as number;
    return kind === 0 ? undefined : this.#names[kind - 1];
  }

  has(path: string): boolean {
    return this.get(path) !== undefined;
  }

  /** Records `path` as `kind` (replacing what it was). */
  set(path: string, kind: K): void {
    this.#record(path, kind, true);
  }

  /**
   * Records `path` as `kind` unless the table holds it already: false then, and its kind is unchanged. One
   * digest where `has` then `set` took two.
   */
  add(path: string, kind: K): boolean {
    return this.#record(path, kind, false);
  }

  /** Records `path`; replaces its kind when it was present only if `replace`. True when it was absent. */
  #record(path: string, kind: K, replace: boolean): boolean {
    let index = this.#names.indexOf(kind);
    if (index < 0) {
      if (this.#names.length >= 255) throw new RangeError('PathTable holds at most 255 kinds');
      index = this.#names.push(kind) - 1;
    }
    if ((this.#size + 1) * 10 > this.#kinds.length * 7) this.#grow();
    const [hi, lo] = digest(path, PathTable.#secret);
    const slot = this.#find(hi, lo);
    const absent = this.#kinds[slot] === 0;
    if (absent) {
      this.#size += 1;
      this.#keys[2 * slot] = hi;
      this.#keys[2 * slot + 1] = lo;
    }
    if (absent || replace) this.#kinds[slot] = index + 1;
    return absent;
  }

  /** The slot holding (hi, lo), or the empty slot where it would go (linear probing). */
  #find(hi: number, lo: number): number {
    const mask = this.#kinds.length - 1;
    for (let slot = lo & mask; ; slot = (slot + 1) & mask) {
      if (this.#kinds[slot] === 0) return slot;
      if (this.#keys[2 * slot] === hi && this.#keys[2 * slot + 1] === lo) return slot;
    }
  }

  #grow(): void {
    const keys = this.#keys;
    const kinds = this.#kinds;
    this.#keys = new Uint32Array(keys.length * 2);
    this.#kinds = new Uint8Array(kinds.length * 2);
    for (let slot = 0; slot < kinds.length; slot++) {
      const kind = kinds[slot] as number;
      if (kind === 0) continue;
      const hi = keys[2 * slot] as number;
      const lo = keys[2 * slot + 1] as number;
      const to = this.#find(hi, lo);
      this.#keys[2 * to] = hi;
      this.#keys[2 * to + 1] = lo;
      this.#kinds[to] = kind;
    }
  }
}

function digest(path: string, secret: string): [number, number] {
  const hex = hash('sha256', `${secret}\0${path}`, 'hex');
  return [Number.parseInt(hex.slice(0, 8), 16), Number.parseInt(hex.slice(8, 16), 16)];
}
