import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImageCache } from '@etch/baseimage';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { runBinary } from '../binary.test.helper.js';
import { runCli } from '../in-process.test.helper.js';

let dir: TempDir;
beforeEach(async () => {
  dir = await createTempDir();
});
afterEach(() => dir.remove());

const etch = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, { cwd: dir.path, env });

async function fill(cacheDir: string): Promise<void> {
  const cache = new ImageCache(cacheDir);
  async function* bytes() {
    yield Buffer.alloc(4096, 1);
  }
  for await (const _chunk of cache.store(bytes(), {
    keyFields: { source: 'url', url: 'https://example.com/os.img', mode: 'extract' },
    spec: 'https://example.com/os.img',
    kind: 'url',
    mode: 'extract',
    name: 'os.img',
    size: 4096,
  })) {
    // drained
  }
}

describe('etch cache', () => {
  it('lists entries of --cache-dir as JSON and for people, then cleans only its own files', async () => {
    await fill(dir.join('shared'));
    await writeFile(dir.join('shared', 'mine.txt'), 'keep');
    const listed = await etch(['cache', 'ls', '--cache-dir', 'shared', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toMatchObject({
      schemaVersion: 1,
      dir: dir.join('shared'),
      baseImages: [
        { name: 'os.img', size: 4096, source: { kind: 'url', spec: 'https://example.com/os.img', mode: 'extract' } },
      ],
      layers: { count: 0, bytes: 0 },
    });
    const human = await etch(['cache', 'ls', '--cache-dir', 'shared']);
    expect(human.stdout).toMatch(/^ {2}base images +1, 4\.0 KiB$/m);
    expect(human.stdout).toContain('os.img');
    const cleaned = await etch(['cache', 'clean', '--cache-dir', 'shared']);
    expect(cleaned.code).toBe(0);
    expect(cleaned.stdout).toContain('removed 1 cached base image');
    expect(await readdir(dir.join('shared'))).toEqual(['mine.txt']);
  });

  it('defaults to $XDG_CACHE_HOME/etch and removes that directory when clean empties it', async () => {
    await fill(dir.join('xdg', 'etch'));
    const listed = await etch(['cache', 'ls', '--json'], { XDG_CACHE_HOME: dir.join('xdg') });
    expect(JSON.parse(listed.stdout).baseImages).toHaveLength(1);
    expect((await etch(['cache', 'clean'], { XDG_CACHE_HOME: dir.join('xdg') })).code).toBe(0);
    expect(existsSync(dir.join('xdg', 'etch'))).toBe(false);
    expect(existsSync(dir.join('xdg'))).toBe(true);
  });

  it('does not say "empty" beside cached layers: no base images, but layers', async () => {
    await mkdir(dir.join('layers', 'oci', 'blobs', 'sha256'), { recursive: true });
    await writeFile(dir.join('layers', 'oci', 'blobs', 'sha256', 'a'.repeat(64)), Buffer.alloc(2048));
    const human = await runBinary(['cache', 'ls', '--cache-dir', 'layers'], { cwd: dir.path });
    expect(human).toMatchObject({ code: 0, stderr: '' });
    expect(human.stdout.split('\n').slice(1)).toEqual([
      '  base images           none',
      '  layers and manifests  1, 2.0 KiB',
      '  unpacked layers       none',
      '',
    ]);
    expect(human.stdout).not.toContain('empty');
  });

  it('refuses unknown actions with a usage error', async () => {
    expect((await etch(['cache', 'purge'])).code).toBe(2);
    expect((await etch(['cache'])).code).toBe(2);
  });
});
