import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EtchError, ignoreRejection, silentLogger, throwIfAborted, untilAborted, type Logger } from '@etch/format';

/** Options for {@link StagePool}. */
export interface StagePoolOptions {
  /** The directory the shared converted layers go into: created on first use, removed by {@link StagePool.close}. */
  dir: string;
  /** Called each time a layer is really converted (not when a conversion in flight or done is shared). */
  onConversion?: () => void;
  logger?: Logger;
}

/** A use of a converted layer: its file stays until every holder has released it. */
export interface StageLease<T> {
  file: string;
  value: T;
  /** Gives the layer back; the file is removed when no one else holds it. Idempotent. */
  release(): Promise<void>;
}

interface PoolEntry {
  file: string;
  /** Holders: waiters for the conversion plus leases handed out. */
  refs: number;
  done: Promise<unknown>;
  controller: AbortController;
  settled: boolean;
}

/**
 * Single flight for layer conversions shared between concurrent stages (the requests of `etch serve`): the
 * first stage that needs a layer converts it into the pool, stages that need the same converted bytes
 * meanwhile wait for that conversion instead of starting their own, and all read the same file. Entries are
 * reference-counted: the file is removed when the last holder releases it, and a conversion nobody waits for
 * any more (every requester disconnected) is aborted and its file removed. The key must name everything that
 * changes the converted bytes (the blob digest and the path prefix of its entries).
 */
export class StagePool {
  private readonly entries = new Map<string, PoolEntry>();
  private readonly logger: Logger;
  private created: Promise<void> | undefined;
  private closed = false;
  /** Conversions started (each shared conversion counts once). */
  conversions = 0;

  constructor(private readonly options: StagePoolOptions) {
    this.logger = options.logger ?? silentLogger;
  }

  /** Converted files held now (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The converted layer `key`: converted now by `convert` (into `file`, under a signal of the pool's, which
   * aborts only when no requester waits any more), or shared with a conversion in flight or finished. A
   * requester whose `signal` fires stops waiting at once. A failed conversion fails every waiter with its
   * error and is forgotten, so the next request tries again.
   */
  async acquire<T>(
    key: string,
    convert: (file: string, signal: AbortSignal) => Promise<T>,
    signal: AbortSignal,
  ): Promise<StageLease<T>> {
    throwIfAborted(signal);
    if (this.closed) throw new EtchError('ETCH_ABORTED', 'The stage pool is closed.');
    let entry = this.entries.get(key);
    if (entry === undefined) {
      this.created ??= mkdir(this.options.dir, { recursive: true }).then(() => undefined);
      await this.created;
      throwIfAborted(signal);
      entry = this.entries.get(key);
    }
    if (entry === undefined) {
      this.conversions += 1;
      // A file of its own per conversion: one being torn down never removes the file of its successor.
      const name = `${createHash('sha256').update(key).digest('hex').slice(0, 32)}-${this.conversions}.tar`;
      const file = join(this.options.dir, name);
      const controller = new AbortController();
      this.options.onConversion?.();
      const created: PoolEntry = { file, refs: 0, controller, settled: false, done: Promise.resolve() };
      created.done = convert(file, controller.signal).then(
        (value) => {
          created.settled = true;
          return value;
        },
        async (error: unknown) => {
          created.settled = true;
          if (this.entries.get(key) === created) this.entries.delete(key);
          await rm(file, { force: true });
          throw error;
        },
      );
      ignoreRejection(created.done, 'every waiter awaits it and reports its failure');
      this.entries.set(key, created);
      entry = created;
    }
    const held = entry;
    held.refs += 1;
    let value: T;
    try {
      value = (await untilAborted(held.done, signal)) as T;
    } catch (error) {
      await this.drop(key, held);
      throw error;
    }
    let released = false;
    return {
      file: held.file,
      value,
      release: async () => {
        if (released) return;
        released = true;
        await this.drop(key, held);
      },
    };
  }

  /** Removes every file; conversions in flight are aborted. */
  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) entry.controller.abort();
    await Promise.allSettled([...this.entries.values()].map(async (e) => e.done));
    this.entries.clear();
    await rm(this.options.dir, { recursive: true, force: true });
  }

  private async drop(key: string, entry: PoolEntry): Promise<void> {
    entry.refs -= 1;
    if (entry.refs > 0) return;
    if (this.entries.get(key) === entry) this.entries.delete(key);
    if (!entry.settled) {
      entry.controller.abort();
      // The conversion's own failure path removes the file once it has stopped writing.
      await ignoreRejection(entry.done, 'nobody waits for this conversion any more');
    }
    await rm(entry.file, { force: true });
    this.logger.debug('shared layer released', { file: entry.file });
  }
}
