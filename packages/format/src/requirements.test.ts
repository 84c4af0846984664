import { describe, expect, it } from 'vitest';
import { parseRequirements, serializeRequirements } from './requirements.js';

const code = (c: string) => expect.objectContaining({ code: c });

describe('requirements.json', () => {
  it('round-trips and ignores fields a later minor may add', () => {
    const requirements = { partitions: { '1': { bytes: 12, entries: 2 }, '6': { bytes: 104_857_600, entries: 3000 } } };
    expect(parseRequirements(serializeRequirements(requirements))).toEqual(requirements);
    expect(parseRequirements('{"partitions":{"6":{"bytes":1,"entries":1,"inodes":9}},"future":true}')).toEqual({
      partitions: { '6': { bytes: 1, entries: 1 } },
    });
  });

  it.each([
    ['not json', '{'],
    ['no partitions', '{}'],
    ['a partition name', '{"partitions":{"resin-data":{"bytes":1,"entries":1}}}'],
    ['partition 0', '{"partitions":{"0":{"bytes":1,"entries":1}}}'],
    ['a negative size', '{"partitions":{"6":{"bytes":-1,"entries":1}}}'],
    ['a fractional count', '{"partitions":{"6":{"bytes":1,"entries":1.5}}}'],
    ['a missing count', '{"partitions":{"6":{"bytes":1}}}'],
  ])('refuses %s', (_what, text) => {
    expect(() => parseRequirements(text)).toThrow(code('ETCH_BAD_ENTRY'));
  });
});
