// The realistic workload of `pnpm bench`: images built by the engine itself from real distribution files
// (this machine's Debian /usr), thousands of files per layer, about the shape of a balena fleet release: a
// rootfs image, an app on top of it, and an image of eight layers. What random-data layers hide (tar
// parsing, per-entry work, compressible data) is what these cost.
import { existsSync } from 'node:fs';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '@etch/test-utils/system';

/** Directories of real files, their bytes and entries as the host has them; missing ones are skipped. */
export const ROOTFS_DIRS = [
  'usr/share/perl',
  'usr/lib/python3',
  'usr/share/zoneinfo',
  'usr/share/doc',
  'usr/share/i18n',
];
const APP_DIR = 'usr/include';
const LOCALES = ['de', 'fr', 'es', 'it', 'pt', 'nl', 'sv', 'pl'];

/** Entries and bytes under a directory, counted without reading the files. */
async function measureTree(path) {
  let entries = 0;
  let bytes = 0;
  const pending = [path];
  while (pending.length > 0) {
    const dir = pending.pop();
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      entries += 1;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile()) bytes += (await stat(full)).size;
    }
  }
  return { entries, bytes };
}

/**
 * Builds the three images with `engine` (docker import + `docker build` of COPY steps, no network) and
 * pushes them to `registry`. Returns their references and what they hold unpacked.
 */
export async function buildRealisticImages(work, engine, registry) {
  const rootfsDirs = ROOTFS_DIRS.filter((dir) => existsSync(join('/', dir)));
  const rootfsTar = join(work, 'real-rootfs.tar');
  await run('tar', ['--numeric-owner', '-C', '/', '-cf', rootfsTar, ...rootfsDirs]);
  const context = join(work, 'real-context');
  await mkdir(context, { recursive: true });
  await run('cp', ['-a', join('/', APP_DIR), join(context, 'app')]);
  const locales = LOCALES.filter((l) => existsSync(`/usr/share/locale/${l}`));
  for (const locale of locales)
    await run('cp', ['-a', `/usr/share/locale/${locale}`, join(context, `locale-${locale}`)]);

  const refs = {
    rootfs: `${registry.host}/real/rootfs:1`,
    app: `${registry.host}/real/app:1`,
    multi: `${registry.host}/real/multi:1`,
  };
  await engine.docker(['import', '-c', 'CMD ["/bin/true"]', rootfsTar, refs.rootfs]);
  const build = async (name, lines) => {
    await writeFile(join(context, `Dockerfile.${name}`), `FROM ${refs.rootfs}\n${lines.join('\n')}\n`);
    await engine.docker(
      ['build', '--network', 'none', '-f', join(context, `Dockerfile.${name}`), '-t', refs[name], context],
      {
        env: { ...process.env, DOCKER_BUILDKIT: '0' },
      },
    );
  };
  await build('app', ['COPY app /srv/app', 'ENV APP_MODE=production', 'WORKDIR /srv/app', 'CMD ["/bin/true"]']);
  await build(
    'multi',
    locales.map((l) => `COPY locale-${l} /usr/share/locale/${l}`),
  );
  for (const ref of Object.values(refs)) await engine.docker(['push', '-q', ref]);

  let entries = 0;
  let bytes = 0;
  for (const dir of [...rootfsDirs.map((d) => join('/', d)), context]) {
    const tree = await measureTree(dir);
    entries += tree.entries;
    bytes += tree.bytes;
  }
  const layers = 1 + 1 + locales.length + 1; // rootfs, app COPY, one per locale, WORKDIR's empty layer aside
  return { refs: Object.values(refs), entries, bytes, layers };
}
