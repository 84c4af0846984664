import { describe, expect, it } from 'vitest';
import { EtchOrderValidator, type EntryHeaderLike } from './entries.js';
import { parseEntryName } from './entry-name.js';
import { assertBaseImageName } from './base-image.js';

const code = (c: string) => expect.objectContaining({ code: c });
const file = (name: string, extra: Partial<EntryHeaderLike> = {}): EntryHeaderLike => ({
  name,
  type: 'file',
  size: 1,
  ...extra,
});

function started(version = '1.0'): EtchOrderValidator {
  const v = new EtchOrderValidator();
  expect(v.accept(file('VERSION'))).toEqual({ kind: 'version' });
  v.acceptVersion(version);
  return v;
}

describe('EtchOrderValidator', () => {
  it('accepts VERSION, one base image, then inject entries', () => {
    const v = started();
    expect(v.accept(file('balena.img'))).toEqual({ kind: 'base-image', name: 'balena.img', container: 'raw' });
    expect(v.accept({ name: 'inject/', type: 'directory' })).toEqual({ kind: 'inject-root' });
    expect(v.accept({ name: 'inject/6/docker', type: 'directory' })).toMatchObject({
      kind: 'inject',
      partition: 6,
      path: 'docker',
    });
    expect(v.accept(file('inject/6/docker/a'))).toMatchObject({ type: 'file' });
    expect(v.accept({ name: 'inject/6/docker/b', type: 'link', linkname: 'inject/6/docker/a' })).toMatchObject({
      type: 'link',
      hardlinkTarget: 'docker/a',
    });
    expect(v.accept({ name: 'inject/6/l', type: 'symlink', linkname: '../../../etc/passwd' })).toMatchObject({
      type: 'symlink',
    });
    expect(v.accept({ name: 'inject/6/.wh', type: 'character-device', devmajor: 0, devminor: 0 })).toMatchObject({
      type: 'character-device',
    });
    expect(() => v.finish()).not.toThrow();
  });

  it('accepts the legacy /VERSION name and 1:0 spelling', () => {
    const v = new EtchOrderValidator();
    v.accept(file('/VERSION'));
    expect(v.acceptVersion('1:0')).toEqual({ major: 1, minor: 0 });
  });

  it('refuses a missing or non-first VERSION', () => {
    expect(() => new EtchOrderValidator().accept(file('image.img'))).toThrow(code('ETCH_BAD_VERSION'));
    expect(() => new EtchOrderValidator().finish()).toThrow(code('ETCH_BAD_VERSION'));
    expect(() => new EtchOrderValidator().accept({ name: 'VERSION', type: 'directory' })).toThrow(
      code('ETCH_BAD_VERSION'),
    );
  });

  it('refuses another major version', () => {
    const v = new EtchOrderValidator();
    v.accept(file('VERSION'));
    expect(() => v.acceptVersion('2.0')).toThrow(code('ETCH_UNSUPPORTED_VERSION'));
  });

  it('refuses inject entries before the base image', () => {
    expect(() => started().accept(file('inject/6/x'))).toThrow(code('ETCH_BAD_ORDER'));
  });

  it('refuses a second base image and a second VERSION', () => {
    const v = started();
    v.accept(file('a.img'));
    expect(() => v.accept(file('b.zip'))).toThrow(code('ETCH_BAD_ORDER'));
    expect(() => v.accept(file('VERSION'))).toThrow(code('ETCH_BAD_ORDER'));
  });

  it('refuses a missing base image', () => {
    expect(() => started().finish()).toThrow(code('ETCH_BAD_ORDER'));
  });

  it('refuses unknown entries in a 1.0 file but skips them in a newer minor', () => {
    const v = started();
    v.accept(file('a.img'));
    expect(() => v.accept(file('meta/growth.json'))).toThrow(code('ETCH_BAD_ENTRY'));
    const newer = started('1.4');
    expect(newer.accept(file('meta/x.json'))).toEqual({ kind: 'unknown', name: 'meta/x.json' });
    expect(newer.accept(file('a.img'))).toMatchObject({ kind: 'base-image' });
    expect(newer.accept(file('meta/y.json'))).toEqual({ kind: 'unknown', name: 'meta/y.json' });
    // Even a newer minor cannot relax safety rules.
    expect(() => newer.accept(file('inject/6/../x'))).toThrow(code('ETCH_UNSAFE_PATH'));
  });

  it('takes requirements.json in a 1.1 file between the base image and the first inject entry, once', () => {
    const v = started('1.1');
    v.accept(file('a.img'));
    expect(v.accept(file('requirements.json'))).toEqual({ kind: 'requirements' });
    expect(() => v.accept(file('requirements.json'))).toThrow(code('ETCH_BAD_ORDER'));
    const late = started('1.1');
    late.accept(file('a.img'));
    late.accept(file('inject/6/x'));
    expect(() => late.accept(file('requirements.json'))).toThrow(code('ETCH_BAD_ORDER'));
    // In 1.0 it is an unexpected entry, and before the base image it is not allowed either.
    const old = started('1.0');
    old.accept(file('a.img'));
    expect(() => old.accept(file('requirements.json'))).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => started('1.1').accept(file('requirements.json'))).toThrow(code('ETCH_BAD_ENTRY'));
    const dir = started('1.1');
    dir.accept(file('a.img'));
    expect(() => dir.accept({ name: 'requirements.json', type: 'directory' })).toThrow(code('ETCH_BAD_ENTRY'));
  });

  it.each([
    [{ name: 'inject/6/dev', type: 'block-device' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/6/fifo', type: 'fifo' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/6/tty', type: 'character-device', devmajor: 4, devminor: 1 }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/6/', type: 'file' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/0/x', type: 'file' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/x/y', type: 'file' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/6/../../etc/passwd', type: 'file' }, 'ETCH_UNSAFE_PATH'],
    [{ name: 'inject/6/a\0b', type: 'file' }, 'ETCH_UNSAFE_PATH'],
    [{ name: 'inject/6/h', type: 'link', linkname: 'inject/5/a' }, 'ETCH_UNSAFE_PATH'],
    [{ name: 'inject/6/h', type: 'link', linkname: '/etc/shadow' }, 'ETCH_UNSAFE_PATH'],
    [{ name: 'inject/6/h', type: 'link', linkname: 'inject/6/h' }, 'ETCH_BAD_ENTRY'],
    [{ name: 'inject/6/s', type: 'symlink', linkname: '' }, 'ETCH_BAD_ENTRY'],
  ] as const)('refuses inject entry %j', (header, expected) => {
    const v = started();
    v.accept(file('a.img'));
    expect(() => v.accept(header)).toThrow(code(expected));
  });

  it('accepts device nodes and FIFOs from 1.2 only; c 0:0 stays a whiteout in every version', () => {
    const devices: EntryHeaderLike[] = [
      { name: 'inject/6/dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
      { name: 'inject/6/dev/tty', type: 'character-device', devmajor: 4, devminor: 1 },
      { name: 'inject/6/run/fifo', type: 'fifo' },
    ];
    for (const version of ['1.0', '1.1']) {
      const v = started(version);
      v.accept(file('a.img'));
      for (const header of devices)
        expect(() => v.accept(header), `${header.name} in ${version}`).toThrow(code('ETCH_BAD_ENTRY'));
      expect(v.accept({ name: 'inject/6/gone', type: 'character-device', devmajor: 0, devminor: 0 })).toMatchObject({
        kind: 'inject',
        type: 'character-device',
      });
    }
    for (const version of ['1.2', '1.3']) {
      const v = started(version);
      v.accept(file('a.img'));
      for (const header of devices)
        expect(v.accept(header), `${header.name} in ${version}`).toMatchObject({ kind: 'inject', type: header.type });
      // Devices are no way around the path rules.
      expect(() => v.accept({ name: 'inject/6/../dev/sda', type: 'block-device' })).toThrow(code('ETCH_UNSAFE_PATH'));
      expect(() => v.accept({ name: 'inject/6/', type: 'fifo' })).toThrow(code('ETCH_BAD_ENTRY'));
    }
  });

  it('refuses entries written through a symlink the archive created', () => {
    const v = started();
    v.accept(file('a.img'));
    v.accept({ name: 'inject/6/etc', type: 'symlink', linkname: '/etc' });
    expect(() => v.accept(file('inject/6/etc/passwd'))).toThrow(code('ETCH_UNSAFE_PATH'));
    expect(() => v.accept({ name: 'inject/6/h', type: 'link', linkname: 'inject/6/etc/shadow' })).toThrow(
      code('ETCH_UNSAFE_PATH'),
    );
    // The same name in another partition is unrelated, and replacing the symlink by a directory clears it.
    expect(v.accept(file('inject/5/etc/passwd'))).toMatchObject({ partition: 5 });
    v.accept({ name: 'inject/6/etc', type: 'directory' });
    expect(v.accept(file('inject/6/etc/passwd'))).toMatchObject({ path: 'etc/passwd' });
  });

  it('refuses a base image that is not a regular file or has a wrong name', () => {
    expect(() => started().accept({ name: 'a.img', type: 'directory' })).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => started().accept(file('image.tar'))).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => started().accept(file('dir/a.img'))).toThrow(code('ETCH_BAD_ENTRY'));
  });
});

describe('base image names', () => {
  it.each([
    ['balena.img', 'raw'],
    ['balena.IMG', 'raw'],
    ['x.rpi-sdimg', 'raw'],
    ['core-image.wic', 'raw'],
    ['balena.img.zip', 'zip'],
  ])('%s is %s', (name, container) => {
    expect(assertBaseImageName(name)).toBe(container);
  });
  it.each(['image', 'a.img.gz', '.img', 'inject', 'a/b.img', 'x.tar'])('refuses %j', (name) => {
    expect(() => assertBaseImageName(name)).toThrow(code('ETCH_BAD_ENTRY'));
  });
});

describe('parseEntryName', () => {
  it('classifies names', () => {
    expect(parseEntryName('/VERSION')).toEqual({ kind: 'version' });
    expect(parseEntryName('inject/1/boot/x')).toEqual({ kind: 'inject', partition: 1, path: 'boot/x' });
    expect(parseEntryName('inject/')).toEqual({ kind: 'inject-root' });
    expect(parseEntryName('a.zip')).toEqual({ kind: 'base-image', name: 'a.zip', container: 'zip' });
    expect(parseEntryName('README')).toEqual({ kind: 'other', name: 'README' });
  });
});
