import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { createTempDir, rejectionOf, type TempDir } from '@etch/test-utils';
import {
  AtomicFile,
  removeOpenTemporaryFilesSync,
  removeStalePartials,
  temporaryPathFor,
  writeFileAtomic,
} from './atomic-file.js';

let dir: TempDir;

beforeEach(async () => {
  dir = await createTempDir('etch-disk-atomic-');
});

afterEach(async () => {
  await dir.remove();
});

describe('AtomicFile', () => {
  it('writes under a hidden temporary name beside the file and shows the file only at the commit', async () => {
    const file = await AtomicFile.create(dir.join('out.etch'));
    expect(file.temporaryPath, 'temporary path').toMatch(
      new RegExp(`/\\.out\\.etch\\.[^/]+-${process.pid}-[0-9a-f]{12}\\.partial$`),
    );
    await file.write(Buffer.from('hello '));
    await file.write('world');
    expect(await readdir(dir.path), 'files before the commit').toEqual([file.temporaryPath.split('/').pop()]);
    await file.commit();
    expect(await readdir(dir.path), 'files after the commit').toEqual(['out.etch']);
    expect(await readFile(dir.join('out.etch'), 'utf8'), 'content').toBe('hello world');
    expect(file.bytesWritten, 'bytesWritten').toBe(11);
    await file.abort();
    expect(await readdir(dir.path), 'abort after a commit removes nothing').toEqual(['out.etch']);
  });

  it('leaves the old file as it was and no temporary file when aborted', async () => {
    await writeFile(dir.join('out.etch'), 'old');
    const file = await AtomicFile.create(dir.join('out.etch'));
    await file.write('new and partial');
    await file.abort();
    expect(await readdir(dir.path), 'files').toEqual(['out.etch']);
    expect(await readFile(dir.join('out.etch'), 'utf8'), 'content').toBe('old');
  });

  it('never writes into an existing temporary file', async () => {
    await writeFile(dir.join('taken'), 'someone else');
    const error = await rejectionOf(AtomicFile.create(dir.join('out'), { temporaryPath: dir.join('taken') }));
    expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
    expect(await readFile(dir.join('taken'), 'utf8'), 'the other file').toBe('someone else');
  });

  it('commits to a path learnt from the content, from a temporary file elsewhere on the filesystem', async () => {
    await mkdir(dir.join('tmp'));
    await mkdir(dir.join('blobs'));
    const file = await AtomicFile.create({ temporaryPath: dir.join('tmp', 'upload-1'), sync: false });
    await file.write('content');
    await file.commit(dir.join('blobs', 'sha256-of-content'));
    expect(await readdir(dir.join('tmp')), 'tmp after the commit').toEqual([]);
    expect(await readFile(dir.join('blobs', 'sha256-of-content'), 'utf8'), 'content').toBe('content');
  });

  it('removes the temporary file when the rename fails, and names the final path', async () => {
    const file = await AtomicFile.create(dir.join('out'));
    await file.write('data');
    await mkdir(dir.join('out'));
    await writeFile(dir.join('out', 'keep'), 'a folder is in the way');
    const error = await rejectionOf(file.commit());
    expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
    expect((error as { details: unknown }).details, 'details').toEqual({ path: dir.join('out') });
    expect(await readdir(dir.path), 'files after the failed commit').toEqual(['out']);
  });
});

describe('removeOpenTemporaryFilesSync', () => {
  it('removes at once the temporary files not yet committed or aborted, and only those', async () => {
    const [open, committed, aborted] = await Promise.all(
      ['open.img', 'committed.img', 'aborted.img'].map(async (name) => AtomicFile.create(dir.join(name))),
    );
    await Promise.all([open, committed, aborted].map(async (file) => file?.write('data')));
    await committed?.commit();
    await aborted?.abort();
    expect(removeOpenTemporaryFilesSync(), 'paths removed').toEqual([open?.temporaryPath]);
    expect((await readdir(dir.path)).sort(), 'files left').toEqual(['committed.img']);
    expect(removeOpenTemporaryFilesSync(), 'paths removed by a second call').toEqual([]);
    await open?.abort();
  });
});

describe('writeFileAtomic', () => {
  it('writes bytes, text or chunks and resolves to the bytes written', async () => {
    expect(await writeFileAtomic(dir.join('a'), 'text'), 'text').toBe(4);
    expect(await writeFileAtomic(dir.join('b'), Buffer.from([1, 2, 3])), 'bytes').toBe(3);
    expect(await writeFileAtomic(dir.join('c'), [Buffer.from('one '), Buffer.from('two')]), 'chunks').toBe(7);
    expect(await readFile(dir.join('c'), 'utf8'), 'content of c').toBe('one two');
    expect((await readdir(dir.path)).sort(), 'files').toEqual(['a', 'b', 'c']);
  });

  it('leaves nothing behind when the source fails or the signal aborts', async () => {
    function* failing() {
      yield Buffer.from('partial');
      throw new Error('source broke');
    }
    expect(String(await rejectionOf(writeFileAtomic(dir.join('x'), failing()))), 'source error').toContain(
      'source broke',
    );
    const controller = new AbortController();
    function* endless() {
      for (;;) {
        yield Buffer.alloc(1024);
        controller.abort();
      }
    }
    const aborted = await rejectionOf(writeFileAtomic(dir.join('y'), endless(), { signal: controller.signal }));
    expect(isEtchError(aborted, 'ETCH_ABORTED'), String(aborted)).toBe(true);
    expect(await readdir(dir.path), 'files').toEqual([]);
  });

  it('fails with ETCH_IO naming the file when its folder does not exist', async () => {
    const error = await rejectionOf(writeFileAtomic(dir.join('missing', 'f'), 'x'));
    expect(isEtchError(error, 'ETCH_IO'), String(error)).toBe(true);
    expect(String(error)).toContain(dir.join('missing', 'f'));
  });
});

describe('removeStalePartials', () => {
  it('removes what killed runs of this host left, before a new file is written, and nothing else', async () => {
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
    // A pid above Linux's pid_max: that run is certainly gone.
    const left = {
      dead: `.old.etch.${host}-999999999-aaaaaaaaaaaa.partial`,
      live: `.old.etch.${host}-${process.pid}-bbbbbbbbbbbb.partial`,
      other: '.old.etch.another-host-999999999-cccccccccccc.partial',
      unrelated: '.notes.partial',
    };
    for (const name of Object.values(left)) await writeFile(dir.join(name), 'x');
    await writeFileAtomic(dir.join('new.etch'), 'new');
    expect((await readdir(dir.path)).sort(), 'files left').toEqual(
      [left.live, left.other, left.unrelated, 'new.etch'].sort(),
    );
    expect(await removeStalePartials(dir.path), 'nothing more to remove').toEqual([]);
  });

  it('leaves a folder that cannot be read alone', async () => {
    expect(await removeStalePartials(dir.join('missing'))).toEqual([]);
  });
});

describe('temporaryPathFor', () => {
  it('is hidden, in the same folder, and new each time', () => {
    const a = temporaryPathFor('/data/out.etch');
    expect(a, 'temporary path').toMatch(
      new RegExp(`^/data/\\.out\\.etch\\.[^/]+-${process.pid}-[0-9a-f]{12}\\.partial$`),
    );
    expect(temporaryPathFor('/data/out.etch'), 'second call').not.toBe(a);
  });
});
