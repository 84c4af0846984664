import { rm, truncate } from 'node:fs/promises';
import { run } from './run.js';

const SECTOR = 512;
const MIB = 1024 * 1024;

/** Options for {@link makeBalenaLikeImage}. */
export interface BalenaLikeImageOptions {
  /** Size of the data partition (the last one) in MiB. */
  dataMiB?: number;
  /** `mbr` (balenaOS's layout: boot, rootA, rootB, extended, state 5, data 6) or `gpt` (boot 1 … data 6). */
  scheme?: 'mbr' | 'gpt';
  /** A folder copied into the data partition's filesystem (mkfs.ext4 -d), as the OS ships it. */
  dataContent?: string;
  /** A folder copied into the boot partition. */
  bootContent?: string;
}

/**
 * Builds a disk image laid out like balenaOS with Debian's sfdisk, mkfs.vfat and mkfs.ext4 (no root, no loop
 * devices): a FAT boot partition, two small ext4 root partitions, an ext4 state and an ext4 data partition,
 * with the data partition last and numbered 6 in both schemes. Returns the byte offset of each partition.
 */
export async function makeBalenaLikeImage(
  path: string,
  options: BalenaLikeImageOptions = {},
): Promise<Record<number, number>> {
  const dataMiB = options.dataMiB ?? 16;
  const mbr = (options.scheme ?? 'mbr') === 'mbr';
  // Sizes in MiB, starts aligned to 1 MiB like the real images.
  const layout: { number: number; start: number; size: number; fs: 'fat' | 'ext4' }[] = mbr
    ? [
        { number: 1, start: 1, size: 8, fs: 'fat' },
        { number: 2, start: 9, size: 4, fs: 'ext4' },
        { number: 3, start: 13, size: 4, fs: 'ext4' },
        { number: 5, start: 18, size: 2, fs: 'ext4' },
        { number: 6, start: 21, size: dataMiB, fs: 'ext4' },
      ]
    : [
        { number: 1, start: 1, size: 8, fs: 'fat' },
        { number: 2, start: 9, size: 4, fs: 'ext4' },
        { number: 3, start: 13, size: 4, fs: 'ext4' },
        { number: 5, start: 17, size: 2, fs: 'ext4' },
        { number: 6, start: 19, size: dataMiB, fs: 'ext4' },
      ];
  const last = layout.at(-1) as (typeof layout)[number];
  const total = (last.start + last.size + 1) * MIB;
  await rm(path, { force: true });
  await run('truncate', ['-s', String(total), path]);
  const s = (mib: number) => (mib * MIB) / SECTOR;
  const script = mbr
    ? [
        'label: dos',
        `start=${s(1)}, size=${s(8)}, type=c, bootable`,
        `start=${s(9)}, size=${s(4)}, type=83`,
        `start=${s(13)}, size=${s(4)}, type=83`,
        `start=${s(17)}, size=${s(4 + dataMiB + 1) - s(0)}, type=5`,
        `start=${s(18)}, size=${s(2)}, type=83`,
        `start=${s(21)}, size=${s(dataMiB)}, type=83`,
      ]
    : [
        'label: gpt',
        `/dev/x1 : start=${s(1)}, size=${s(8)}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="resin-boot"`,
        `/dev/x2 : start=${s(9)}, size=${s(4)}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="resin-rootA"`,
        `/dev/x3 : start=${s(13)}, size=${s(4)}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="resin-rootB"`,
        `/dev/x5 : start=${s(17)}, size=${s(2)}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="resin-state"`,
        `/dev/x6 : start=${s(19)}, size=${s(dataMiB)}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="resin-data"`,
      ];
  await run('sfdisk', ['--quiet', path], { input: `${script.join('\n')}\n` });
  const offsets: Record<number, number> = {};
  for (const part of layout) {
    const piece = `${path}.p${part.number}`;
    await run('truncate', ['-s', String(part.size * MIB), piece]);
    if (part.fs === 'fat') {
      await run('mkfs.vfat', ['-n', 'RESIN-BOOT', piece]);
      if (options.bootContent)
        await run('mcopy', ['-s', '-i', piece, `${options.bootContent}/.`, '::/'], {
          env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
        });
    } else {
      const content = part.number === 6 && options.dataContent ? ['-d', options.dataContent] : [];
      await run('mkfs.ext4', [
        '-q',
        '-F',
        '-b',
        '4096',
        '-L',
        part.number === 6 ? 'resin-data' : `p${part.number}`,
        ...content,
        piece,
      ]);
    }
    await run('dd', [`if=${piece}`, `of=${path}`, 'bs=1M', `seek=${part.start}`, 'conv=notrunc,sparse', 'status=none']);
    await rm(piece);
    offsets[part.number] = part.start * MIB;
  }
  await truncate(path, total);
  return offsets;
}
