import { open, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { gptWithEntries, overlappingMbr, run } from '@etch/test-utils/system';
import { isEtchError } from '@etch/format';
import { findPartition, readPartitionTable, type ReadAt } from './partition-table.js';

let work: TempDir;

async function fileReader(path: string): Promise<{ read: ReadAt; close: () => Promise<void> }> {
  const handle = await open(path, 'r');
  const read: ReadAt = async (offset, length) => {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  };
  return { read, close: () => handle.close() };
}

/** Partitions as util-linux's sfdisk reads them: number, start and size in bytes, type. */
async function sfdiskView(path: string): Promise<{ number: number; offset: number; size: number; type: string }[]> {
  const { stdout } = await run('sfdisk', ['--json', path]);
  const table = JSON.parse(stdout) as {
    partitiontable: { partitions: { node: string; start: number; size: number; type: string }[] };
  };
  return table.partitiontable.partitions.map((p) => ({
    number: Number(/(\d+)$/.exec(p.node)?.[1]),
    offset: p.start * 512,
    size: p.size * 512,
    type: p.type.toLowerCase(),
  }));
}

async function makeDisk(name: string, script: string): Promise<string> {
  const path = work.join(name);
  await run('truncate', ['-s', '64M', path]);
  await run('sfdisk', ['--quiet', path], { input: script });
  return path;
}

beforeAll(async () => {
  work = await createTempDir('etch-partitions-');
});
afterAll(() => work.remove());

describe('readPartitionTable', () => {
  it('numbers a balenaOS-like MBR as sfdisk does: primaries 1–4, logical partitions from 5', async () => {
    const path = await makeDisk(
      'mbr.img',
      'label: dos\nstart=2048, size=8192, type=c, bootable\nstart=10240, size=20480, type=83\nstart=30720, size=20480, type=83\nstart=51200, type=5\nstart=53248, size=8192, type=83\nstart=63488, size=2048, type=83\nstart=67584, type=83\n',
    );
    const { read, close } = await fileReader(path);
    const table = await readPartitionTable(read);
    await close();
    expect(table.scheme).toBe('mbr');
    const ours = table.partitions.map((p) => ({
      number: p.number,
      offset: p.offset,
      size: p.size,
      type: p.type.replace(/^0x0?/, ''),
    }));
    expect(ours).toEqual(await sfdiskView(path));
    expect(table.partitions.map((p) => p.kind)).toEqual([
      'primary',
      'primary',
      'primary',
      'extended',
      'logical',
      'logical',
      'logical',
    ]);
    expect(findPartition(table, 6).offset).toBe(63488 * 512);
  });

  it('numbers GPT partitions by their slot, gaps included', async () => {
    const path = await makeDisk(
      'gpt.img',
      'label: gpt\nfirst-lba: 2048\n' +
        'start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="boot"\n' +
        'start=10240, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' +
        '/dev/x4 : start=30720, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"\n',
    );
    const { read, close } = await fileReader(path);
    const table = await readPartitionTable(read);
    await close();
    expect(table.scheme).toBe('gpt');
    expect(table.partitions.map(({ number, offset, size, type }) => ({ number, offset, size, type }))).toEqual(
      await sfdiskView(path),
    );
    expect(table.partitions.map((p) => p.number)).toEqual([1, 2, 4]);
    expect(findPartition(table, 1).name).toBe('boot');
    expect(findPartition(table, 4).name).toBe('data');
  });

  it('refuses what is not a partitioned disk, and says which partitions exist', async () => {
    const blank = work.join('blank.img');
    await writeFile(blank, Buffer.alloc(4096));
    const { read, close } = await fileReader(blank);
    const error = await readPartitionTable(read).catch((e: unknown) => e);
    await close();
    expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE')).toBe(true);

    const path = await makeDisk(
      'two.img',
      'label: dos\nstart=2048, size=8192, type=83\nstart=10240, type=5\nstart=12288, size=2048, type=83\n',
    );
    const disk = await fileReader(path);
    const table = await readPartitionTable(disk.read);
    await disk.close();
    expect(() => findPartition(table, 6)).toThrow(/no partition 6 \(it has: 1, 5\)/);
    expect(() => findPartition(table, 2)).toThrow(/extended partition/);
  });

  it('refuses a looping chain of logical partitions instead of hanging', async () => {
    const path = await makeDisk('loop.img', 'label: dos\nstart=2048, type=5\nstart=4096, size=2048, type=83\n');
    // Point the first EBR's "next" link back at itself.
    const handle = await open(path, 'r+');
    const link = Buffer.alloc(16);
    link[4] = 0x05;
    link.writeUInt32LE(0, 8);
    link.writeUInt32LE(2048, 12);
    await handle.write(link, 0, 16, 2048 * 512 + 446 + 16);
    await handle.close();
    const { read, close } = await fileReader(path);
    const error = await readPartitionTable(read).catch((e: unknown) => e);
    await close();
    expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE')).toBe(true);
    expect(String(error)).toMatch(/loops/);
  });

  it('refuses a GPT header with an absurd entry size before reading anything sized from it', async () => {
    const reads: number[] = [];
    for (const [entrySize, count] of [
      [0x8000_0000, 2],
      [0xffff_ff80, 128],
      [8192, 128],
      [200, 128],
    ] as const) {
      const disk = gptWithEntries(entrySize, count);
      const read: ReadAt = async (offset, length) => {
        reads.push(length);
        return disk.subarray(offset, offset + length);
      };
      const error = await readPartitionTable(read).catch((e: unknown) => e);
      expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE'), `entry size ${entrySize}: ${String(error)}`).toBe(true);
    }
    expect(Math.max(...reads), 'largest read sized from the header').toBeLessThanOrEqual(512);
  });

  it('refuses partitions that overlap', async () => {
    const disk = overlappingMbr();
    const error = await readPartitionTable(async (offset, length) => disk.subarray(offset, offset + length)).catch(
      (e: unknown) => e,
    );
    expect(isEtchError(error, 'ETCH_BAD_DISK_IMAGE'), String(error)).toBe(true);
    expect(String(error)).toMatch(/Partitions 1 and 2 overlap/);
  });
});
