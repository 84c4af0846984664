/**
 * The progress display of `etch copy` and `etch build` in a real terminal, as `etch create`'s is tested: tmux
 * panes 120 and 60 columns wide, read back with capture-pane (a line the terminal wrapped shows as too long).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import {
  buildRegistryFixtures,
  readLayoutImage,
  startRegistryServer,
  type RegistryFixtures,
  type RegistryServer,
} from '@etch/test-utils/system';
import { etchBin } from '../binary.test.helper.js';
import { Terminal } from '../terminal.test.helper.js';

let dir: TempDir;
let fixtures: RegistryFixtures;
let registry: RegistryServer;
/** The short IDs of the copied image's config and layers, as the display shows them. */
let blobs: string[];

beforeAll(async () => {
  dir = await createTempDir('etch-upload-terminal-');
  [fixtures, registry] = await Promise.all([buildRegistryFixtures(dir.join('fixtures')), startRegistryServer()]);
  const image = await readLayoutImage(fixtures.layout, fixtures.images.layers3.tag);
  blobs = [image.configDigest, ...image.layers.map((l) => l.digest)].map((digest) => digest.slice(7, 19));
  await mkdir(dir.join('files'), { recursive: true });
  await writeFile(dir.join('files', 'hello.txt'), 'hello\n');
}, 180_000);
afterAll(async () => {
  await registry?.stop();
  await dir?.remove();
});

/** Runs `etch ARGS` in a pane of `width` columns, and returns its exit code and the progress lines (before stdout's summary). */
async function etchIn(width: number, args: string[], summary: string): Promise<{ progress: string[]; screen: string }> {
  const terminal = await Terminal.start([process.execPath, etchBin, ...args], { width, height: 40, cwd: dir.path });
  try {
    const { code, lines } = await terminal.exit();
    const screen = lines.join('\n');
    expect(code, screen).toBe(0);
    const end = lines.findIndex((line) => line.startsWith(summary));
    expect(end, `the summary after the progress:\n${screen}`).toBeGreaterThan(0);
    return { progress: lines.slice(0, end), screen };
  } finally {
    await terminal.close();
  }
}

describe.each([120, 60])('upload progress on a terminal %i columns wide', (width) => {
  it('etch copy ends with one line per blob, uploaded with its size, nothing wider than the pane', async () => {
    const target = `${registry.host}/copy-${width}/app:1`;
    const { progress, screen } = await etchIn(
      width,
      ['copy', `oci:${fixtures.layout}:${fixtures.images.layers3.tag}`, target],
      target,
    );
    for (const line of progress) expect(line.length, `cut to ${width - 1}: ${line}`).toBeLessThan(width);
    expect(progress, `one line per blob (config and three layers), no copies left by redraws:\n${screen}`).toHaveLength(
      blobs.length,
    );
    for (const id of blobs) {
      const own = progress.filter((line) => line.startsWith(id));
      expect(own, `the line of blob ${id}:\n${screen}`).toHaveLength(1);
      expect(own[0], `blob ${id}: state and size`).toMatch(/^[0-9a-f]{12} +uploaded +\d+(\.\d)? (B|KiB|MiB)\b/);
    }
  });

  it('etch build shows the base layers, the files layer and the config, each once', async () => {
    const target = `${registry.host}/build-${width}/app:1`;
    const { progress, screen } = await etchIn(
      width,
      ['build', '--from', `oci:${fixtures.layout}:${fixtures.images.layers3.tag}`, '--add', 'files:/app', '-t', target],
      target,
    );
    for (const line of progress) expect(line.length, `cut to ${width - 1}: ${line}`).toBeLessThan(width);
    const states = progress.map((line) => /^([0-9a-f]{12}|files) +(\S+)/.exec(line)?.slice(1, 3).join(' '));
    expect(states, `the lines drawn:\n${screen}`).toHaveLength(5);
    expect(
      states.filter((state) => state?.endsWith(' uploaded')),
      `every blob uploaded (three base layers, the files layer, the config):\n${screen}`,
    ).toHaveLength(5);
    for (const id of blobs.slice(1))
      expect(
        progress.filter((line) => line.startsWith(id)),
        `one line for base layer ${id}:\n${screen}`,
      ).toHaveLength(1);
  });
});
