import { describe, expect, it } from 'vitest';
import { injectPath, normalizeRelativePath, parseInjectName, parsePartition, resolveHardlinkTarget } from './paths.js';

const code = (c: string) => expect.objectContaining({ code: c });

describe('partitions', () => {
  it.each([
    ['1', 1],
    ['5', 5],
    ['6', 6],
    ['128', 128],
  ])('parses %s', (text, n) => {
    expect(parsePartition(text)).toBe(n);
  });
  it.each(['0', '06', '-1', 'a', '1.5', ' 1', '', '99999', 'resin-data'])('refuses %j', (text) => {
    expect(() => parsePartition(text)).toThrow(code('ETCH_BAD_ENTRY'));
  });
});

describe('normalizeRelativePath', () => {
  it('folds //, . and trailing /', () => {
    expect(normalizeRelativePath('a//b/./c/')).toBe('a/b/c');
    expect(normalizeRelativePath('./')).toBe('');
  });
  it.each(['/etc/passwd', 'a/../../b', '..', 'a/..', 'x\0y'])('refuses %j', (path) => {
    expect(() => normalizeRelativePath(path)).toThrow(code('ETCH_UNSAFE_PATH'));
  });
  it('keeps names that merely contain dots', () => {
    expect(normalizeRelativePath('a/..b/c..')).toBe('a/..b/c..');
  });
});

describe('injectPath', () => {
  it('builds inject/<partition>/<path>', () => {
    expect(injectPath(6, 'docker/image/overlay2/repositories.json')).toBe(
      'inject/6/docker/image/overlay2/repositories.json',
    );
    expect(injectPath(1, '/config.json')).toBe('inject/1/config.json');
    expect(injectPath(5, '/')).toBe('inject/5/');
  });
  it('refuses partition 0 and escaping paths', () => {
    expect(() => injectPath(0, 'x')).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => injectPath(1, '../x')).toThrow(code('ETCH_UNSAFE_PATH'));
  });
});

describe('parseInjectName', () => {
  it('parses and normalises', () => {
    expect(parseInjectName('inject/6/apps.json')).toEqual({ partition: 6, path: 'apps.json' });
    expect(parseInjectName('inject/6/')).toEqual({ partition: 6, path: '' });
    expect(parseInjectName('inject/6')).toEqual({ partition: 6, path: '' });
    expect(parseInjectName('inject/1/a//b/')).toEqual({ partition: 1, path: 'a/b' });
  });
  it('returns undefined outside inject/', () => {
    expect(parseInjectName('injected/1/x')).toBeUndefined();
    expect(parseInjectName('image.img')).toBeUndefined();
  });
  it('refuses malformed names', () => {
    expect(() => parseInjectName('inject//x')).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => parseInjectName('inject/0/x')).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => parseInjectName('inject/data/x')).toThrow(code('ETCH_BAD_ENTRY'));
    expect(() => parseInjectName('inject/1/../../etc/shadow')).toThrow(code('ETCH_UNSAFE_PATH'));
  });
});

describe('resolveHardlinkTarget', () => {
  it('resolves a target in the same partition', () => {
    expect(resolveHardlinkTarget('inject/6/docker/a', 6, 'inject/6/docker/b')).toBe('docker/a');
  });
  it.each([
    ['inject/5/a', 'another partition'],
    ['/etc/shadow', 'absolute'],
    ['a', 'relative name outside inject'],
    ['inject/6/../../x', 'escaping'],
    ['inject/6/', 'the partition root'],
  ])('refuses %j (%s)', (linkname) => {
    expect(() => resolveHardlinkTarget(linkname, 6, 'inject/6/b')).toThrow(code('ETCH_UNSAFE_PATH'));
  });
});
