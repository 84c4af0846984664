import { describe, expect, it } from 'vitest';
import {
  compareVersions,
  isEsr,
  parseRange,
  parseSelector,
  parseVersion,
  satisfies,
  selectTag,
  type Version,
} from './versions.js';

const v = (text: string) => parseVersion(text) as Version;

describe('parseVersion', () => {
  it.each([
    ['2.58.3', { major: 2, minor: 58, patch: 3, prerelease: [], rev: undefined }],
    ['v2.58.3', { major: 2, minor: 58, patch: 3 }],
    ['2.58.3+rev1', { rev: 1, build: ['rev1'] }],
    ['2.58.3_rev1', { rev: 1, build: ['rev1'] }],
    ['2.58.3+rev1.prod', { rev: 1, build: ['rev1', 'prod'] }],
    ['2.58.3.rev2', { rev: 2 }],
    ['2.80.0-beta.1', { prerelease: ['beta', 1] }],
    ['2.80.0-1612345678', { prerelease: [1612345678] }],
    ['2021.10.2', { major: 2021, minor: 10, patch: 2 }],
  ])('reads %s', (text, expected) => {
    expect(parseVersion(text)).toMatchObject(expected);
  });

  it.each([
    '',
    'latest',
    '2.58',
    'foo-2.58.3',
    '2.58.3-',
    '2.58.3 rubbish',
    '02.1.0',
    '2.58.3+',
    'v',
    '1.2.3.4',
    '2.58.3-beta..1',
    '2.58.3-01',
  ])('refuses %j (anchored, unlike image-manager)', (text) => {
    expect(parseVersion(text)).toBeUndefined();
  });

  it('orders by precedence, then rev; pre-releases first; ESR by year', () => {
    const sorted = [
      '2.58.3+rev2',
      '2.58.3',
      '2.80.0-beta.1',
      '2.58.3+rev1',
      '2.80.0',
      '2.9.0',
      '2.80.0-beta.10',
      '2.80.0-alpha',
      '2021.10.2',
      '2022.1.0',
    ]
      .map(v)
      .sort(compareVersions)
      .map((x) => x.raw);
    expect(sorted).toEqual([
      '2.9.0',
      '2.58.3',
      '2.58.3+rev1',
      '2.58.3+rev2',
      '2.80.0-alpha',
      '2.80.0-beta.1',
      '2.80.0-beta.10',
      '2.80.0',
      '2021.10.2',
      '2022.1.0',
    ]);
    expect(isEsr(v('2021.10.2'))).toBe(true);
    expect(isEsr(v('2.58.3'))).toBe(false);
  });
});

describe('ranges', () => {
  it.each([
    ['^2.58', '2.58.0', true],
    ['^2.58', '2.99.1', true],
    ['^2.58', '3.0.0', false],
    ['^2.58', '2.57.9', false],
    ['^0.2.3', '0.2.9', true],
    ['^0.2.3', '0.3.0', false],
    ['~2.58.3', '2.58.9+rev3', true],
    ['~2.58.3', '2.59.0', false],
    ['>=2.50 <2.60', '2.55.1', true],
    ['>=2.50 <2.60', '2.60.0', false],
    ['>= 2.50.0 < 2.60.0', '2.59.9', true],
    ['2.x', '2.1.0', true],
    ['2.58.*', '2.58.7', true],
    ['2.58.*', '2.59.0', false],
    ['1.2.3 - 2.3.4', '2.3.4', true],
    ['1.2.3 - 2.3.4', '2.3.5', false],
    ['<2.0.0 || >=3.1', '3.2.0', true],
    ['<2.0.0 || >=3.1', '2.5.0', false],
    ['^2.80', '2.80.1-beta.1', false],
    ['>=2.80.1-beta.0', '2.80.1-beta.1', true],
    ['>=2.80.1-beta.0', '2.81.0-beta.1', false],
    ['^2021.10', '2021.10.2', true],
    ['*', '1.0.0', true],
  ])('%s matches %s: %s', (range, version, expected) => {
    expect(satisfies(v(version), parseRange(range)!)).toBe(expected);
  });

  it.each(['>=', '^', 'a.b.c', '2.58.3 - ', '||', '>=2.50 <', '1.x.3', '^02.1'])('refuses the range %j', (text) => {
    expect(parseRange(text)).toBeUndefined();
  });
});

describe('selectors over tags', () => {
  const tags = [
    'latest',
    'v2.50.1',
    '2.58.3_rev1',
    '2.58.3_rev2',
    '2.58.4',
    '2.80.0-beta.1',
    '2.79.0',
    'nightly',
    '2.58.3_rev1.dev',
  ];
  it.each([
    ['latest', '2.80.0-beta.1'],
    ['recommended', '2.79.0'],
    ['default', '2.79.0'],
    ['2.58.3', '2.58.3_rev2'],
    ['2.58.3+rev1', '2.58.3_rev1'],
    ['2.58.3+rev1.dev', '2.58.3_rev1.dev'],
    ['2.50.1', 'v2.50.1'],
    ['^2.58', '2.79.0'],
    ['~2.58.0', '2.58.4'],
    ['<2.58', 'v2.50.1'],
    ['>=2.80.0-beta.0', '2.80.0-beta.1'],
  ])('%s picks %s', (selector, tag) => {
    expect(selectTag(tags, parseSelector(selector))).toBe(tag);
  });

  it('recommended fails when only pre-releases exist; default then falls back to latest', () => {
    const pre = ['2.80.0-beta.1', '2.80.0-beta.2', 'latest'];
    expect(() => selectTag(pre, parseSelector('recommended'))).toThrow(
      expect.objectContaining({ code: 'ETCH_NOT_FOUND', message: expect.stringContaining('only pre-releases') }),
    );
    expect(selectTag(pre, parseSelector('default'))).toBe('2.80.0-beta.2');
  });

  it('ESR versions are selected like any other', () => {
    expect(selectTag(['2021.10.2', '2022.1.1', '2022.1.0', '2.100.0'], parseSelector('^2022'))).toBe('2022.1.1');
    expect(selectTag(['2021.10.2', '2022.1.1'], parseSelector('2021.10.2'))).toBe('2021.10.2');
  });

  it('fails with ETCH_NOT_FOUND, listing the newest, when nothing matches', () => {
    expect(() => selectTag(tags, parseSelector('^3'))).toThrow(
      expect.objectContaining({ code: 'ETCH_NOT_FOUND', message: expect.stringContaining('2.80.0-beta.1') }),
    );
    expect(() => selectTag(tags, parseSelector('2.58.5'))).toThrow(expect.objectContaining({ code: 'ETCH_NOT_FOUND' }));
    expect(() => selectTag(['latest'], parseSelector('latest'))).toThrow(
      expect.objectContaining({ code: 'ETCH_NOT_FOUND', message: expect.stringContaining('no version tags') }),
    );
  });

  it.each(['newest', 'lat', 'foo 2.58.3', '2.58.3; rm -rf', 'v', '@@', '^', ''])(
    'refuses the garbage selector %j with ETCH_USAGE',
    (text) => {
      expect(() => parseSelector(text)).toThrow(expect.objectContaining({ code: 'ETCH_USAGE' }));
    },
  );
});
