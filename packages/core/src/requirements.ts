import { EtchError, type EtchRequirements } from '@etch/format';
import { measureStore, type LayerStage } from '@etch/docker-store';
import type { CreateEtchOptions, InjectSource, PreloadImages } from './create.js';
import { walkDirectory } from './directory-source.js';

async function measureSource(source: InjectSource, signal?: AbortSignal): Promise<{ bytes: number; entries: number }> {
  if (source.kind === 'entries' && !Array.isArray(source.entries)) {
    throw new EtchError(
      'ETCH_USAGE',
      `requirements.json needs every inject source counted up front; the entries for partition ${source.partition} are a one-shot stream. Pass them as an array, or turn requirements off.`,
    );
  }
  const files =
    source.kind === 'directory'
      ? walkDirectory(source.path, source.dest ?? '', signal ? { signal } : {})
      : (source.entries as Iterable<{ header: { type?: string; size?: number }; content?: unknown }>);
  const total = { bytes: 0, entries: 0 };
  for await (const { header, content } of files) {
    total.entries += 1;
    if ((header.type ?? 'file') === 'file')
      total.bytes +=
        header.size ??
        (typeof content === 'string' ? Buffer.byteLength(content) : Buffer.isBuffer(content) ? content.length : 0);
  }
  return total;
}

/**
 * What each partition will receive, counted before anything is written: directories are walked, image
 * layers counted from their staging, or else read once (from the local cache the pipeline downloads them into). The result goes into the
 * 1.1 `requirements.json` entry, right after the base image, so a streaming flasher can grow a partition
 * once, before it injects.
 */
export async function measureRequirements(
  options: Pick<CreateEtchOptions, 'inject' | 'afterImages' | 'signal'> & { images?: PreloadImages | undefined },
  stage?: LayerStage,
): Promise<EtchRequirements> {
  const partitions: EtchRequirements['partitions'] = {};
  const add = (partition: number, measure: { bytes: number; entries: number }) => {
    const entry = (partitions[String(partition)] ??= { bytes: 0, entries: 0 });
    entry.bytes += measure.bytes;
    entry.entries += measure.entries;
  };
  for (const source of [...(options.inject ?? []), ...(options.afterImages ?? [])])
    add(source.partition, await measureSource(source, options.signal));
  if (options.images)
    add(
      options.images.partition,
      await measureStore(options.images.images, {
        ...(options.signal ? { signal: options.signal } : {}),
        ...(stage ? { stage } : {}),
      }),
    );
  return { partitions };
}
