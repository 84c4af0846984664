/**
 * The progress display in a real terminal: `etch create` in tmux panes 120 and 60 columns wide, read back
 * with capture-pane (wrapped lines joined, so a line the terminal had to wrap shows as too long).
 */
import { truncate, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { buildRegistryFixtures, readLayoutImage, type RegistryFixtures } from '@etch/test-utils/system';
import { etchBin } from './binary.test.helper.js';
import { Terminal } from './terminal.test.helper.js';

const sample = fileURLToPath(new URL('../../../../examples/sample/', import.meta.url));
let dir: TempDir;
let fixtures: RegistryFixtures;
/** The images preloaded, and the short IDs of their layers as the display shows them. */
let images: { reference: string; layers: string[] }[];

beforeAll(async () => {
  dir = await createTempDir('etch-progress-terminal-');
  fixtures = await buildRegistryFixtures(dir.join('fixtures'));
  // The layers of each image's linux/amd64 variant, read from the layouts themselves.
  images = [];
  for (const [layout, tag] of [
    [`${sample}app`, 'v1'],
    [fixtures.layout, fixtures.images.layers3.tag],
  ] as const) {
    const image = await readLayoutImage(layout, tag);
    images.push({ reference: `oci:${layout}:${tag}`, layers: image.layers.map((l) => l.digest.slice(7, 19)) });
  }
  await writeFile(dir.join('huge.img'), '');
  await truncate(dir.join('huge.img'), 64 * 1024 ** 3);
}, 180_000);
afterAll(() => dir?.remove());

/** Runs `etch ARGS` in a pane of `width` columns and returns it (close it when done). */
function etchIn(width: number, args: string[]): Promise<Terminal> {
  return Terminal.start([process.execPath, etchBin, ...args], { width, height: 40, cwd: dir.path });
}

describe.each([120, 60])('etch create on a terminal %i columns wide', (width) => {
  it('ends with one line per layer (image, state, bytes, speed), the sync, and nothing wider than the pane', async () => {
    const terminal = await etchIn(width, [
      'create',
      '--base',
      `${sample}balena-sample.img`,
      ...images.flatMap((image) => ['--image', image.reference]),
      '--platform',
      'linux/amd64',
      '--inject',
      `6:${sample}data:/sample`,
      '--cache-dir',
      dir.join(`cache-${width}`),
      '-o',
      `out-${width}.etch`,
    ]);
    try {
      const { code, lines } = await terminal.exit();
      const screen = lines.join('\n');
      expect(code, screen).toBe(0);
      // The progress is what comes before the summary (results may wrap like any output).
      const progress = lines.slice(
        0,
        lines.findIndex((line) => line.startsWith('wrote ')),
      );
      for (const line of progress) expect(line.length, `cut to ${width - 1}: ${line}`).toBeLessThan(width);
      expect(progress[0], screen).toMatch(/^base image +(balena-sample\.img|…\S+) +written/);
      expect(progress.at(-1), screen).toMatch(/^sync +(…|synced)/);
      const layerLines: { line: string; bytes: number; speed?: string }[] = [];
      for (const image of images) {
        for (const layer of image.layers) {
          const own = progress.filter((line) => line.startsWith(layer));
          expect(own, `one line for layer ${layer}, no copies left by redraws:\n${screen}`).toHaveLength(1);
          if (width < 120) continue;
          const line = own[0] as string;
          const [, name, state, size, unit, speed] =
            /^[0-9a-f]{12} +(\S+) +(\S+) +(\d+(?:\.\d)?) (B|KiB|MiB)(?: +(\d+(?:\.\d)? (?:B|KiB|MiB|GiB)\/s))?$/.exec(
              line,
            ) ?? [];
          expect(name, `the columns of ${layer}: ${line}`).toBeDefined();
          expect(image.reference.endsWith((name as string).replace(/^…/, '')), `${name} names ${image.reference}`).toBe(
            true,
          );
          expect(state, line).toBe('written');
          layerLines.push({
            line,
            bytes: Number(size) * { B: 1, KiB: 1024, MiB: 1024 ** 2 }[unit as 'B'],
            ...(speed !== undefined ? { speed } : {}),
          });
        }
      }
      // Every line's state starts in the same column, whatever its label (base image, layer, partition, sync).
      const stateColumns = progress.map((line) => line.search(/ {2}(written|added|synced)( |$)/));
      expect(new Set(stateColumns).size, `one state column:\n${screen}`).toBe(1);
      if (width < 120) return;
      // The partition's line ends with what the summary says it received, the engine store included.
      const received = /^partition 6 +added +(\d+ entries, [\d.]+ \S+)$/m.exec(screen)?.[1];
      const summary = /^ {2}partition 6 +(\d+ entries) +([\d.]+ \S+)$/m.exec(screen);
      expect(received, screen).toBe(`${summary?.[1]}, ${summary?.[2]}`);
      // A layer big enough to be read in several chunks shows how fast it went (a tiny one moves in one).
      const biggest = layerLines.reduce((a, b) => (b.bytes > a.bytes ? b : a));
      expect(biggest.speed, biggest.line).toBeDefined();
      expect(progress.at(-1)).toMatch(/^sync +synced +\d+\.\d s$/);
    } finally {
      await terminal.close();
    }
  });

  it('shows speed and time left while the base image is written, and Ctrl-C stops it', async () => {
    const terminal = await etchIn(width, ['create', '--base', 'huge.img', '-o', `huge-${width}.etch`]);
    try {
      const lines = await terminal.waitFor(
        (screen) => screen.some((line) => /^base image .*writing/.test(line)),
        'the base image line',
      );
      const line = lines.find((l) => l.startsWith('base image')) as string;
      expect(line.length, line).toBeLessThan(width);
      expect(
        lines.filter((l) => l.startsWith('base image')),
        'one line, redrawn in place',
      ).toHaveLength(1);
      if (width >= 120) {
        const running = await terminal.waitFor(
          (screen) =>
            screen.some((l) =>
              /^base image +huge\.img +writing +[\d.]+ [KMG]iB\/64\.0 GiB +[\d.]+ [KMG]iB\/s +ETA \d/.test(l),
            ),
          'speed and ETA',
        );
        expect(running.filter((l) => l.startsWith('base image'))).toHaveLength(1);
      }
      await terminal.send('C-c');
      const { code } = await terminal.exit();
      expect(code).toBe(130);
    } finally {
      await terminal.close();
    }
  });
});

describe('etch create -o - on a terminal', () => {
  it('refuses to print the binary .etch there', async () => {
    const terminal = await etchIn(120, ['create', '--base', `${sample}balena-sample.img`, '-o', '-']);
    try {
      const { code, lines } = await terminal.exit();
      expect(code).toBe(2);
      expect(lines[0]).toMatch(/^etch: ETCH_USAGE: -o - writes the binary \.etch to stdout, which is a terminal/);
      expect(lines.join('\n')).not.toContain('VERSION');
    } finally {
      await terminal.close();
    }
  });
});
