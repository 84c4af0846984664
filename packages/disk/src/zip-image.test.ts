import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import yauzl from 'yauzl';
import { isEtchError } from '@etch/format';
import { collect, createTempDir, rejectionOf, type TempDir } from '@etch/test-utils';
import { run } from '@etch/test-utils/system';
import { findZipImage, readZipImage } from './zip-image.js';

let work: TempDir;
let image: Buffer;

function openZip(name: string): Promise<yauzl.ZipFile> {
  return yauzl.openPromise(work.join(name), { lazyEntries: true, autoClose: false });
}

beforeAll(async () => {
  work = await createTempDir('etch-disk-zip-');
  image = randomBytes(300 * 1024);
  await mkdir(work.join('disk'));
  await mkdir(work.join('__MACOSX'));
  await writeFile(work.join('disk/os.img'), image);
  await writeFile(work.join('small.raw'), randomBytes(1024));
  // Larger than the image, and each one left out by a different rule.
  await writeFile(work.join('.hidden.img'), randomBytes(400 * 1024));
  await writeFile(work.join('__MACOSX/._os.img'), randomBytes(500 * 1024));
  await writeFile(work.join('readme.txt'), randomBytes(600 * 1024));
  const zip = (args: string[]) => run('zip', ['-q', ...args], { cwd: work.path });
  await zip(['-0', 'stored.zip', 'readme.txt', 'small.raw', '.hidden.img', '__MACOSX/._os.img', 'disk/os.img']);
  await zip(['-9', 'deflated.zip', 'small.raw', 'disk/os.img']);
  await writeFile(work.join('notes.txt'), 'no image here\n');
  await zip(['no-image.zip', 'readme.txt', 'notes.txt']);
  await zip(['-P', 'secret', 'encrypted.zip', 'disk/os.img']);
  await zip(['-Z', 'bzip2', 'bzip2.zip', 'disk/os.img']);
  const stored = await readFile(work.join('stored.zip'));
  const at = stored.indexOf(image.subarray(1000, 1032));
  stored[at + 5] = (stored[at + 5] as number) ^ 0xff;
  await writeFile(work.join('bad-crc.zip'), stored);
});

afterAll(async () => {
  await work?.remove();
});

describe('findZipImage and readZipImage', () => {
  it.each(['stored.zip', 'deflated.zip'])(
    'choose the largest image entry of %s, skipping folders, hidden files and __MACOSX, and read it whole',
    async (name) => {
      const zip = await openZip(name);
      const found = await findZipImage(zip, `The base image ${name}`);
      expect({ entry: found.entry.fileName, name: found.name }, 'chosen entry').toEqual({
        entry: 'disk/os.img',
        name: 'os.img',
      });
      const bytes = await collect(readZipImage(zip, found.entry, `The base image ${name}`));
      expect(bytes.equals(image), 'bytes of the image entry').toBe(true);
      expect(zip.isOpen, 'zip still open after reading').toBe(false);
    },
  );

  it('says which entries a zip without an image has', async () => {
    const zip = await openZip('no-image.zip');
    const error = await rejectionOf(findZipImage(zip, 'The base image no-image.zip'));
    zip.close();
    expect(isEtchError(error, 'ETCH_NOT_FOUND'), String(error)).toBe(true);
    expect((error as { details: unknown }).details, 'details').toEqual({ entries: ['readme.txt', 'notes.txt'] });
    expect(String(error)).toContain('The base image no-image.zip holds no disk image');
  });

  it.each([
    ['encrypted.zip', /encrypted/],
    ['bzip2.zip', /compression method 12/],
  ])('refuses %s, which a flasher could not read', async (name, message) => {
    const zip = await openZip(name);
    const error = await rejectionOf(findZipImage(zip, name));
    zip.close();
    expect(isEtchError(error, 'ETCH_UNSUPPORTED_COMPRESSION'), String(error)).toBe(true);
    expect(String(error)).toMatch(message);
  });

  it('fails at the end of an entry whose CRC-32 does not match, and closes the zip', async () => {
    const zip = await openZip('bad-crc.zip');
    const found = await findZipImage(zip, 'bad-crc.zip');
    const error = await rejectionOf(collect(readZipImage(zip, found.entry, 'bad-crc.zip')));
    expect(isEtchError(error, 'ETCH_DIGEST_MISMATCH'), String(error)).toBe(true);
    expect(String(error)).toContain('bad-crc.zip (entry disk/os.img) is corrupt: its CRC-32 is');
    expect(zip.isOpen, 'zip still open after the failure').toBe(false);
  });

  it('closes the zip when the reader stops early', async () => {
    const zip = await openZip('stored.zip');
    const found = await findZipImage(zip, 'stored.zip');
    for await (const chunk of readZipImage(zip, found.entry, 'stored.zip')) {
      expect(chunk.length, 'first chunk length').toBeGreaterThan(0);
      break;
    }
    expect(zip.isOpen, 'zip still open after the reader stopped').toBe(false);
  });
});
