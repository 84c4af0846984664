import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collect, craftTar, createTempDir, type CraftedEntry, type TempDir } from '@etch/test-utils';
import { isEtchError } from '@etch/format';
import { extractTar } from './extract.js';
import { readEtch, type EtchEntry } from './read-etch.js';
import { TarFile } from './tar-file.js';

const MIB = 1024 * 1024;
/** A base image of distinct bytes, so a read at the wrong offset shows. */
const image = Buffer.from(Array.from({ length: 3 * MIB + 123 }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
const etch: CraftedEntry[] = [
  { name: 'VERSION', content: '1.0' },
  { name: 'balena.img', content: image },
  { name: 'inject/6/docker', type: 'directory' },
  { name: 'inject/6/docker/a', content: 'A', uid: 5, mode: 0o600 },
  { name: 'inject/6/docker/s', type: 'symlink', linkname: '../x' },
];

/** Each entry's kind, path or name and content, reading every stream. */
async function summary(entries: AsyncIterable<EtchEntry>): Promise<unknown[]> {
  const out = [];
  for await (const entry of entries) {
    const stream = 'stream' in entry ? entry.stream : undefined;
    const content = stream ? await collect(stream) : undefined;
    out.push({
      kind: entry.kind,
      ...('path' in entry ? { path: entry.path, type: entry.type, mode: entry.mode, uid: entry.uid } : {}),
      ...('name' in entry ? { name: entry.name } : {}),
      ...(content ? { sha256: createHash('sha256').update(content).digest('hex'), length: content.length } : {}),
    });
  }
  return out;
}

let work: TempDir;
beforeEach(async () => {
  work = await createTempDir('etch-tar-file-');
});
afterEach(async () => {
  await work.remove();
});

async function fileOf(bytes: Buffer): Promise<string> {
  const path = work.join('test.etch');
  await writeFile(path, bytes);
  return path;
}

describe('TarFile', () => {
  it('yields the same entries and contents to readEtch as a read stream of the file', async () => {
    const bytes = await craftTar(etch);
    const file = await TarFile.open(await fileOf(bytes));
    try {
      expect(await summary(readEtch(file))).toEqual(await summary(readEtch(Readable.from([bytes]))));
    } finally {
      await file.close();
    }
  });

  it('skips a body nobody reads without reading it, and goes on at the next entry', async () => {
    const bytes = await craftTar([
      { name: 'big', content: Buffer.alloc(16 * MIB, 1) },
      { name: 'small', content: 'after the big one' },
    ]);
    const file = await TarFile.open(await fileOf(bytes));
    try {
      const seen: { name: string; content: string }[] = [];
      for await (const { header, body } of extractTar(file)) {
        seen.push({ name: header.name, content: header.name === 'big' ? '' : (await collect(body)).toString() });
      }
      expect(seen).toEqual([
        { name: 'big', content: '' },
        { name: 'small', content: 'after the big one' },
      ]);
      expect(file.bytesRead, 'bytes read of a 16 MiB archive').toBeLessThan(MIB);
    } finally {
      await file.close();
    }
  });

  it("hands readEtch's base image out in place: exact bytes at any offset, the stream then skipped", async () => {
    const file = await TarFile.open(await fileOf(await craftTar(etch)));
    try {
      const names: string[] = [];
      for await (const entry of readEtch(file)) {
        names.push(entry.kind === 'inject' ? entry.path : entry.kind);
        if (entry.kind !== 'base-image') continue;
        expect(entry.readAt, 'readAt of an uncompressed file').toBeDefined();
        const readAt = entry.readAt as NonNullable<typeof entry.readAt>;
        for (const [position, length] of [
          [0, 512],
          [MIB - 3, 10],
          [image.length - 100, 100],
          [image.length, 0],
        ] as const) {
          const buffer = Buffer.alloc(length);
          await readAt(buffer, position, length);
          expect(buffer.equals(image.subarray(position, position + length)), `bytes at ${position}`).toBe(true);
        }
        for (const [position, length] of [
          [image.length - 1, 2],
          [-1, 1],
          [0, 1.5],
        ] as const) {
          await expect(readAt(Buffer.alloc(4), position, length), `readAt(${position}, ${length})`).rejects.toThrow(
            RangeError,
          );
        }
      }
      expect(names).toEqual(['version', 'base-image', 'docker', 'docker/a', 'docker/s']);
      expect(file.bytesRead, 'bytes read beyond the few asked for').toBeLessThan(MIB);
    } finally {
      await file.close();
    }
  });

  it('refuses a file cut inside the base image, whether it is read in place or skipped', async () => {
    const bytes = await craftTar(etch);
    const path = await fileOf(bytes.subarray(0, 2 * MIB));
    for (const inPlace of [true, false]) {
      const file = await TarFile.open(path);
      try {
        const error = await (async () => {
          for await (const entry of readEtch(file)) {
            if (entry.kind === 'base-image' && inPlace) {
              const buffer = Buffer.alloc(entry.size);
              await entry.readAt?.(buffer, 0, entry.size);
            }
          }
        })().catch((e: unknown) => e);
        expect(isEtchError(error, 'ETCH_BAD_ARCHIVE'), `${inPlace ? 'in place' : 'skipped'}: ${String(error)}`).toBe(
          true,
        );
        expect((error as Error).message).toMatch(/truncated/);
      } finally {
        await file.close();
      }
    }
  });

  it('streams a compressed file as before: no readAt, the same entries', async () => {
    const bytes = await craftTar(etch);
    const file = await TarFile.open(await fileOf(gzipSync(bytes)));
    try {
      let readAt: unknown = 'not seen';
      const entries = (async function* () {
        for await (const entry of readEtch(file)) {
          if (entry.kind === 'base-image') readAt = entry.readAt;
          yield entry;
        }
      })();
      expect(await summary(entries)).toEqual(await summary(readEtch(Readable.from([bytes]))));
      expect(readAt, 'readAt of a gzip file').toBeUndefined();
    } finally {
      await file.close();
    }
  });

  it('rejects with ETCH_ABORTED on abort and closes the file', async () => {
    const file = await TarFile.open(await fileOf(await craftTar(etch)));
    const controller = new AbortController();
    const error = await (async () => {
      for await (const entry of readEtch(file, { signal: controller.signal })) {
        if (entry.kind === 'base-image') controller.abort();
      }
    })().catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_ABORTED'), String(error)).toBe(true);
    await expect(file.readAt(Buffer.alloc(1), 0, 1), 'a read after the abort').rejects.toThrow(/closed|EBADF/);
  });

  it('reports a file it cannot open as ETCH_IO naming it', async () => {
    const error = await TarFile.open(work.join('missing.etch')).catch((e: unknown) => e);
    expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
    expect((error as Error).message).toContain('missing.etch');
  });
});
