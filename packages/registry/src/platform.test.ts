import { describe, expect, it } from 'vitest';
import { formatPlatform, normalizePlatform, parsePlatform, platformRank } from './platform.js';

describe('platforms', () => {
  it.each([
    ['linux/x86_64', 'linux/amd64'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/6', 'linux/arm/v6'],
    ['linux/i386', 'linux/386'],
    ['aarch64', 'linux/arm64'],
    ['LINUX/AMD64', 'linux/amd64'],
  ])('normalises %s to %s as containerd does', (input, expected) => {
    expect(formatPlatform(parsePlatform(input))).toBe(expected);
  });

  it('refuses malformed platforms', () => {
    expect(() => parsePlatform('linux//arm')).toThrow(/os\/architecture/);
    expect(() => parsePlatform('linux/arm/v7/extra')).toThrow();
  });

  it('ranks older compatible variants after the exact one, and never a newer one', () => {
    const v7 = { os: 'linux', architecture: 'arm', variant: 'v7' };
    expect(platformRank(v7, v7)).toBe(0);
    expect(platformRank(v7, { os: 'linux', architecture: 'arm', variant: 'v6' })).toBe(1);
    expect(platformRank({ os: 'linux', architecture: 'arm', variant: 'v6' }, v7)).toBeUndefined();
    expect(
      platformRank(normalizePlatform({ os: 'linux', architecture: 'aarch64' }), {
        os: 'linux',
        architecture: 'arm64',
        variant: 'v8',
      }),
    ).toBe(0);
    expect(
      platformRank({ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }),
    ).toBeUndefined();
  });
});
