/**
 * Format 1.2's device nodes and FIFOs through the real `etch` binary: `inspect` lists them, `apply` creates
 * them on ext4 with owner, mode, device numbers and nanosecond times, and refuses them for a FAT partition,
 * never skipping one; a file that says 1.1 cannot carry them.
 */
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { craftTar, createTempDir, type CraftedEntry, type TempDir } from '@etch/test-utils';
import { makeBalenaLikeImage, run } from '@etch/test-utils/system';
import { runBinary } from '../binary.test.helper.js';

let dir: TempDir;
let offsets: Record<number, number>;

// UTC: FAT keeps local times, which mtools converts with the process's zone.
const etch = (args: string[]) => runBinary(args, { cwd: dir.path, env: { TZ: 'UTC' } });

/** 2023-11-14T22:13:20.123456789Z, carried by a PAX record as GNU tar writes it. */
const SECONDS = 1_700_000_000;
const NANOSECONDS = 123_456_789;

/** The node entries for partition `partition`: a character device, a block device, a FIFO. */
const nodes = (partition: number): CraftedEntry[] => [
  { name: `inject/${partition}/dev/`, type: 'directory', mode: 0o755 },
  { name: `inject/${partition}/dev/null`, type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  {
    name: `inject/${partition}/dev/loop0`,
    type: 'block-device',
    devmajor: 7,
    devminor: 0,
    mode: 0o660,
    uid: 1000,
    gid: 1000,
    pax: { mtime: `${SECONDS}.${NANOSECONDS}` },
  },
  { name: `inject/${partition}/dev/pipe`, type: 'fifo', mode: 0o620 },
];

/** A .etch that says `version` and carries `entries` after the base image. */
async function writeEtch(file: string, version: string, entries: CraftedEntry[]): Promise<void> {
  await writeFile(
    dir.join(file),
    await craftTar([
      { name: 'VERSION', content: version },
      { name: 'base.img', content: await readFile(dir.join('base.img')) },
      ...entries,
    ]),
  );
}

/** `debugfs stat` of `path` in the data partition of `image`, as text. */
async function debugfsStat(image: string, path: string): Promise<string> {
  return (await run('debugfs', ['-R', `stat ${path}`, `${dir.join(image)}?offset=${offsets[6]}`])).stdout;
}

beforeAll(async () => {
  dir = await createTempDir('etch-devices-');
  offsets = await makeBalenaLikeImage(dir.join('base.img'), { dataMiB: 8 });
  await writeEtch('nodes.etch', '1.2', [
    // FAT keeps its own resolution: the same fractional time lands there as whole (even) seconds.
    { name: 'inject/1/frac.txt', content: 'fraction\n', pax: { mtime: `${SECONDS}.${NANOSECONDS}` } },
    ...nodes(6),
  ]);
  await writeEtch('fat.etch', '1.2', nodes(1));
  await writeEtch('old.etch', '1.1', nodes(6));
});
afterAll(() => dir?.remove());

describe('a 1.2 .etch with device nodes and a FIFO', () => {
  it('is listed by etch inspect, by type', async () => {
    const human = await etch(['inspect', 'nodes.etch']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^ {2}format {7}1\.2$/m);
    expect(human.stdout).toMatch(/^ {2}partition 6 {2}4 entries, 0 B \(1 folder, 1 device, 1 block device, 1 FIFO\)$/m);
    const json = await etch(['inspect', 'nodes.etch', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout).partitions).toEqual([
      { number: 1, entries: 1, bytes: 9, types: { file: 1 } },
      {
        number: 6,
        entries: 4,
        bytes: 0,
        types: { directory: 1, 'character-device': 1, 'block-device': 1, fifo: 1 },
      },
    ]);
  });

  it('is written by etch apply: nodes onto ext4 with type, numbers, owner, mode and ns mtime; FAT keeps its own time', async () => {
    const applied = await etch(['apply', 'nodes.etch', '-o', 'disk.img', '--verify', '-q']);
    expect(applied.code, applied.stderr).toBe(0);
    const expected: [path: string, type: string, mode: string, owner: string, device?: string][] = [
      ['/dev/null', 'character special', '0666', '0:0', '01:03'],
      ['/dev/loop0', 'block special', '0660', '1000:1000', '07:00'],
      ['/dev/pipe', 'FIFO', '0620', '0:0'],
    ];
    for (const [path, type, mode, owner, device] of expected) {
      const text = await debugfsStat('disk.img', path);
      expect(/Type: (.+?) {2}/.exec(text)?.[1], `${path} type`).toBe(type);
      expect(/Mode: +(\d+)/.exec(text)?.[1], `${path} mode`).toBe(mode);
      const [, user, group] = /User: +(\d+) +Group: +(\d+)/.exec(text) ?? [];
      expect(`${user}:${group}`, `${path} owner`).toBe(owner);
      if (device !== undefined)
        expect(/Device major\/minor number: (\S+)/.exec(text)?.[1], `${path} device numbers`).toBe(device);
    }
    const boot = `${dir.join('disk.img')}@@${offsets[1]}`;
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', TZ: 'UTC' };
    expect((await run('mtype', ['-i', boot, '::/frac.txt'], { env })).stdout, 'frac.txt on FAT').toBe('fraction\n');
    expect((await run('mdir', ['-i', boot, '::/frac.txt'], { env })).stdout, 'frac.txt time on FAT').toMatch(
      /frac +txt +9 2023-11-14 +22:13/,
    );
    // debugfs prints `mtime: 0xSECONDS:EXTRA`, EXTRA holding the nanoseconds above two epoch bits.
    const [, seconds, extra] =
      /mtime: 0x([0-9a-f]+):([0-9a-f]+)/.exec(await debugfsStat('disk.img', '/dev/loop0')) ?? [];
    expect([Number.parseInt(seconds ?? '', 16), Number.parseInt(extra ?? '', 16) >>> 2], '/dev/loop0 mtime').toEqual([
      SECONDS,
      NANOSECONDS,
    ]);
  });

  it('is refused by etch apply for a FAT partition, naming the entry, and leaves no disk image', async () => {
    const result = await etch(['apply', 'fat.etch', '-o', 'fat.img']);
    expect(result.code, result.stderr).toBe(3);
    expect(result.stderr).toMatch(
      /^etch: ETCH_BAD_ENTRY: Partition 1 holds a FAT filesystem, which cannot store the character-device dev\/null/m,
    );
    expect((await readdir(dir.path)).filter((name) => name.includes('fat.img'))).toEqual([]);
  });
});

describe('a .etch that says 1.1', () => {
  it('cannot carry a device node: inspect refuses it, naming the version that can', async () => {
    const result = await etch(['inspect', 'old.etch']);
    expect(result.code, result.stderr).toBe(3);
    expect(result.stderr).toMatch(/^etch: ETCH_BAD_ENTRY: .*inject\/6\/dev\/null.*format 1\.2/m);
  });
});
