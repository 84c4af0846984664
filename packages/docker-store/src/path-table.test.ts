import { describe, expect, it } from 'vitest';
import { PathTable } from './path-table.js';

describe('PathTable', () => {
  it('remembers each path with its kind across growth, and nothing it was not given', () => {
    const table = new PathTable<'file' | 'directory' | 'symlink'>();
    const count = 50_000;
    for (let i = 0; i < count; i++) table.set(`d${i % 97}/f${i}`, i % 3 === 0 ? 'directory' : 'file');
    table.set('d1/f1', 'symlink');
    expect(table.size, 'paths held').toBe(count);
    for (let i = 0; i < count; i++) {
      const expected = i === 1 ? 'symlink' : i % 3 === 0 ? 'directory' : 'file';
      if (table.get(`d${i % 97}/f${i}`) !== expected)
        expect(table.get(`d${i % 97}/f${i}`), `kind of path ${i}`).toBe(expected);
    }
    expect(table.has('d0/f1'), 'a path never set').toBe(false);
    expect(table.get(''), 'the empty path').toBeUndefined();
  });

  it('adds a path only when it is absent, and keeps the kind it had', () => {
    const table = new PathTable<'file' | 'symlink'>();
    expect(table.add('a/b', 'file'), 'first add').toBe(true);
    expect(table.add('a/b', 'symlink'), 'second add of the same path').toBe(false);
    expect(table.get('a/b'), 'kind after the refused add').toBe('file');
    expect(table.size, 'paths held').toBe(1);
    for (let i = 0; i < 5000; i++) expect(table.add(`p${i}`, 'file'), `add p${i}`).toBe(true);
    expect(table.add('p4999', 'file'), 'a path added before growth').toBe(false);
    expect(table.size, 'paths held after growth').toBe(5001);
  });
});
