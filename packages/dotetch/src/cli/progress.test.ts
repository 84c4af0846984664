import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgressDisplay, type ProgressMode } from './progress.js';
import { createCliLogger } from './logger.js';
import { uploadProgress } from './upload-progress.js';

const MIB = 1024 * 1024;
const a = `sha256:${'a'.repeat(64)}`;
const b = `sha256:${'b'.repeat(64)}`;

/** A display on a fake terminal with a clock the test moves. */
function display(mode: ProgressMode, size: { columns?: number; rows?: number } = {}) {
  const stream = Object.assign(new PassThrough(), size);
  let now = 0;
  const shown = createProgressDisplay(stream, mode, () => now);
  return {
    ...shown,
    logger: createCliLogger(stream, 'debug'),
    at(ms: number) {
      now = ms;
    },
    text: () => (stream.read() as Buffer | null)?.toString() ?? '',
  };
}

/** What a terminal shows after the display's output: carriage returns, cursor-up and line clears applied. */
function screen(output: string): string[] {
  const lines: string[] = [''];
  let row = 0;
  // eslint-disable-next-line no-control-regex -- the escape sequences of a terminal are what this reads
  for (const part of output.split(/(\r|\n|\x1b\[\d*A|\x1b\[2K|\x1b\[J)/)) {
    if (part === '\r') continue;
    if (part === '\x1b[J') {
      lines.length = row;
      lines[row] = '';
      continue;
    }
    if (part === '\n') {
      row += 1;
      lines[row] ??= '';
    } else if (part.startsWith('\x1b[') && part.endsWith('A')) {
      row -= Number(part.slice(2, -1) || 1);
    } else if (part === '\x1b[2K') {
      lines[row] = '';
    } else {
      lines[row] = `${lines[row] ?? ''}${part}`;
    }
  }
  return lines.filter((line) => line !== '');
}

describe('the progress display on a terminal', () => {
  it('throttles redraws to one per 100 ms', () => {
    const d = display('tty');
    for (let i = 0; i <= 1000; i++) {
      d.at(i); // 1 ms apart: only one redraw per 100 ms should happen
      d.onProgress({ phase: 'base-image', name: 'a.img', bytes: i, total: 1000 });
    }
    d.finish();
    expect(d.text().split('\r').length - 1).toBeLessThanOrEqual(13);
  });

  it('shows one line per layer, with its image, state, bytes, speed and time left, redrawn in place', () => {
    const d = display('tty', { columns: 200 });
    d.onProgress({ phase: 'base-image', name: 'os.img', bytes: 0, total: 100 * MIB });
    d.onProgress({ phase: 'download', digest: a, bytes: 0, total: 10 * MIB });
    d.onProgress({ phase: 'download', digest: b, bytes: 0, total: 4 * MIB });
    d.nameImages([
      { name: 'alpine:3.20', layers: [a] },
      { name: 'ghcr.io/acme/app:1.4', layers: [b] },
    ]);
    d.at(2000);
    d.onProgress({ phase: 'base-image', name: 'os.img', bytes: 50 * MIB, total: 100 * MIB });
    d.onProgress({ phase: 'download', digest: a, bytes: 10 * MIB, total: 10 * MIB });
    d.onProgress({ phase: 'download', digest: b, bytes: 1 * MIB, total: 4 * MIB });
    d.at(2500);
    d.onProgress({ phase: 'layer', image: 0, layer: 0, digest: a, bytes: 0, total: 10 * MIB, state: 'converting' });
    d.at(3000);
    d.onProgress({
      phase: 'layer',
      image: 0,
      layer: 0,
      digest: a,
      bytes: 5 * MIB,
      total: 10 * MIB,
      state: 'converting',
    });
    const lines = screen(d.text());
    expect(lines, 'one line per item, no copies left by redraws').toHaveLength(3);
    // Drawn at 3 s: the speed of each line is measured over its current state, until now.
    expect(lines[0]).toMatch(/^base image +os\.img +writing +50\.0 MiB\/100\.0 MiB +16\.7 MiB\/s +ETA 3s$/);
    expect(lines[1]).toMatch(/^aaaaaaaaaaaa +alpine:3\.20 +unpacking +5\.0 MiB\/10\.0 MiB +10\.0 MiB\/s +ETA 1s$/);
    expect(lines[2]).toMatch(
      /^bbbbbbbbbbbb +ghcr\.io\/acme\/app:1\.4 +downloading +1\.0 MiB\/4\.0 MiB +341\.3 KiB\/s +ETA 9s$/,
    );
  });

  it('ends with every layer written, the partitions filled and the sync, with the time it took', () => {
    const d = display('tty', { columns: 200 });
    d.nameImages([{ name: 'alpine:3.20', layers: [a] }]);
    d.onProgress({ phase: 'base-image', name: 'os.img', bytes: 4 * MIB, total: 4 * MIB });
    d.onProgress({ phase: 'inject', partition: 1, path: 'config.json', entries: 1, bytes: 20 });
    d.onProgress({ phase: 'layer', image: 0, layer: 0, digest: a, bytes: 0, total: 2 * MIB, state: 'writing' });
    d.at(1000);
    d.onProgress({ phase: 'layer', image: 0, layer: 0, digest: a, bytes: 2 * MIB, total: 2 * MIB, state: 'done' });
    d.onProgress({ phase: 'layer', image: 1, layer: 0, digest: a, bytes: 2 * MIB, total: 2 * MIB, state: 'shared' });
    d.onProgress({ phase: 'sync' });
    // While the disk flushes, the sync shows as such (not a line sitting at 100 %).
    const during = d.text();
    expect(screen(during).at(-1)).toMatch(/^sync +flushing to disk +0\.0 s$/);
    d.at(1400);
    // Partition 1 also received what had no line of its own (an engine store): its line ends with the totals.
    d.partitionTotals({ 1: { entries: 12, bytes: 3 * MIB } });
    d.finish();
    const lines = screen(during + d.text());
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^base image +os\.img +written +4\.0 MiB/);
    expect(lines[1]).toMatch(/^partition 1 +added +12 entries, 3\.0 MiB$/);
    expect(lines[2]).toMatch(/^aaaaaaaaaaaa +alpine:3\.20 +written +2\.0 MiB +2\.0 MiB\/s$/);
    expect(lines[3]).toMatch(/^sync +synced +0\.4 s$/);
  });

  it('cuts every line to the width of the terminal, narrowing the image name first', () => {
    const d = display('tty', { columns: 60 });
    d.nameImages([{ name: 'registry.example.com/a/very/long/repository/name:with-a-tag', layers: [a] }]);
    d.onProgress({ phase: 'base-image', name: 'balena-raspberrypi4-64-2.108.0.img', bytes: MIB, total: 3000 * MIB });
    d.at(1000);
    d.onProgress({ phase: 'layer', image: 0, layer: 0, digest: a, bytes: MIB, total: 80 * MIB, state: 'writing' });
    d.finish();
    const lines = screen(d.text());
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(59);
    expect(lines[1]).toMatch(/^aaaaaaaaaaaa +…[^ ]*with-a-tag +writing/);
  });

  it('prints log lines above the progress lines, which stay whole below them', () => {
    const d = display('tty', { columns: 100 });
    d.onProgress({ phase: 'base-image', name: 'os.img', bytes: 0, total: 4 * MIB });
    d.onProgress({ phase: 'download', digest: a, bytes: 0, total: MIB });
    d.logger.warn('something to know', { layer: a.slice(0, 19) });
    d.at(500);
    d.onProgress({ phase: 'download', digest: a, bytes: MIB, total: MIB });
    d.logger.debug('a detail');
    d.finish();
    const lines = screen(d.text());
    expect(lines.slice(0, 2)).toEqual([`etch: warning: something to know layer=${a.slice(0, 19)}`, 'etch: a detail']);
    expect(lines.slice(2).map((line) => line.slice(0, 12))).toEqual(['base image  ', 'aaaaaaaaaaaa']);
  });

  it("after a finish (build shows one run per target), log lines still go above the next run's lines", () => {
    const d = display('tty', { columns: 100 });
    d.onProgress({ phase: 'download', digest: a, bytes: MIB, total: MIB });
    d.finish();
    d.onProgress({ phase: 'download', digest: b, bytes: 0, total: MIB });
    d.logger.warn('retrying');
    d.finish();
    const lines = screen(d.text());
    const warning = lines.indexOf('etch: warning: retrying');
    expect(warning, `the warning's line in ${JSON.stringify(lines)}`).toBeGreaterThan(0);
    expect(lines[warning + 1]?.slice(0, 12), "the second run's line, whole below the warning").toBe('bbbbbbbbbbbb');
    expect(
      lines.filter((line) => line.startsWith('bbbbbbbbbbbb')),
      'copies of the live line',
    ).toHaveLength(1);
  });

  it('keeps redrawing only as many lines as the terminal has rows, leaving the older ones above', () => {
    const d = display('tty', { columns: 100, rows: 6 });
    const digests = Array.from({ length: 8 }, (_, i) => `sha256:${String(i).repeat(64)}`);
    for (const digest of digests) d.onProgress({ phase: 'download', digest, bytes: 1, total: 1 });
    d.finish();
    const lines = screen(d.text());
    expect(lines.map((line) => line.slice(0, 12))).toEqual(digests.map((digest) => digest.slice(7, 19)));
  });
});

describe('the progress display elsewhere', () => {
  it('prints one line per step, naming the layer and its image', () => {
    const d = display('plain');
    d.nameImages([{ name: 'alpine:3.20', layers: [a] }]);
    d.onProgress({ phase: 'download', digest: a, bytes: 5, total: 10 });
    d.onProgress({ phase: 'download', digest: a, bytes: 10, total: 10 });
    d.onProgress({ phase: 'download', digest: a, bytes: 10, total: 10 });
    d.onProgress({ phase: 'base-image', name: 'a.img', bytes: 0, total: 100 });
    d.onProgress({ phase: 'base-image', name: 'a.img', bytes: 100, total: 100 });
    const layer = { phase: 'layer', image: 0, layer: 0, digest: a, total: 10 } as const;
    d.onProgress({ ...layer, bytes: 5, state: 'converting' });
    d.onProgress({ ...layer, bytes: 10, state: 'converting' });
    d.onProgress({ ...layer, bytes: 0, state: 'writing' });
    d.onProgress({ ...layer, bytes: 10, state: 'done' });
    d.onProgress({ phase: 'sync' });
    expect(d.text().split('\n').filter(Boolean)).toEqual([
      `etch: downloaded layer ${a.slice(0, 19)} of alpine:3.20 (10 B)`,
      'etch: writing base image a.img (100 B)',
      `etch: unpacking layer ${a.slice(0, 19)} of alpine:3.20 (10 B) while the base image is written`,
      `etch: writing layer ${a.slice(0, 19)} of alpine:3.20 (10 B)`,
      'etch: syncing to disk',
    ]);
  });
});

describe('the progress display of copy, push and build', () => {
  const c = `sha256:${'c'.repeat(64)}`;

  it('on a terminal: a line per blob, uploading with bytes, speed and time left, then where it went', () => {
    const d = display('tty', { columns: 200 });
    const upload = uploadProgress(d);
    upload.onTransfer({ bytes: 0 });
    d.at(1000);
    upload.onTransfer({ bytes: 2 * MIB });
    upload.onBlob({ digest: c, size: 3 * MIB, how: 'uploaded' });
    upload.onTransfer({ digest: a, bytes: 0, total: 40 * MIB });
    upload.onBlob({ digest: b, size: 5 * MIB, how: 'mounted' });
    d.at(3000);
    upload.onTransfer({ digest: a, bytes: 10 * MIB, total: 40 * MIB });
    const lines = screen(d.text());
    expect(lines, 'one line per blob, no copies left by redraws').toHaveLength(3);
    expect(lines[0], 'the files layer, named by its digest once it landed').toMatch(
      /^cccccccccccc +uploaded +3\.0 MiB +3\.0 MiB\/s$/,
    );
    expect(lines[1], 'a layer on its way').toMatch(
      /^aaaaaaaaaaaa +uploading +10\.0 MiB\/40\.0 MiB +5\.0 MiB\/s +ETA 6s$/,
    );
    expect(lines[2], 'a mounted layer: its size, no speed').toMatch(/^bbbbbbbbbbbb +mounted +5\.0 MiB$/);
  });

  it('a files layer still being made shows the bytes sent so far and their speed', () => {
    const d = display('tty', { columns: 200 });
    const upload = uploadProgress(d);
    upload.onTransfer({ bytes: 0 });
    d.at(2000);
    upload.onTransfer({ bytes: 4 * MIB });
    expect(screen(d.text())).toEqual(['files         uploading  4.0 MiB  2.0 MiB/s']);
  });

  it('elsewhere: a line as each blob lands, with its digest and size', () => {
    const d = display('plain');
    const upload = uploadProgress(d);
    upload.onTransfer({ digest: a, bytes: 5, total: 10 });
    upload.onTransfer({ digest: a, bytes: 10, total: 10 });
    upload.onBlob({ digest: a, size: 10, how: 'uploaded' });
    upload.onBlob({ digest: b, size: 20, how: 'existed' });
    upload.onBlob({ digest: c, size: 30, how: 'mounted' });
    expect(d.text().split('\n').filter(Boolean)).toEqual([
      `etch: uploaded ${a} (10 B)`,
      `etch: already there ${b} (20 B)`,
      `etch: mounted ${c} (30 B)`,
    ]);
  });
});
