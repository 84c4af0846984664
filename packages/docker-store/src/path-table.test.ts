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
});
