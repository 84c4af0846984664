import { describe, expect, it } from 'vitest';
import { parseChallenges } from './challenge.js';

describe('parseChallenges', () => {
  it('keeps commas and colons inside a quoted scope', () => {
    const [challenge] = parseChallenges(
      'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:127.0.0.1:5000/a/b:pull,push"',
    );
    expect(challenge).toEqual({
      scheme: 'bearer',
      params: {
        realm: 'https://auth.example.com/token',
        service: 'registry.example.com',
        scope: 'repository:127.0.0.1:5000/a/b:pull,push',
      },
    });
  });

  it('reads parameters in any order, with odd spacing, case-insensitive keys and escapes', () => {
    const [challenge] = parseChallenges('BEARER   Service = "svc" ,  REALM="http://h/t?a=\\"b\\""');
    expect(challenge).toEqual({ scheme: 'bearer', params: { service: 'svc', realm: 'http://h/t?a="b"' } });
  });

  it('reads several challenges on one line and across header lines', () => {
    const one = parseChallenges(
      'Basic realm="Registry Realm", Bearer realm="https://a/token",service="x", error="insufficient_scope"',
    );
    expect(one.map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(one[1]?.params).toEqual({ realm: 'https://a/token', service: 'x', error: 'insufficient_scope' });
    expect(parseChallenges(['Basic realm="r"', 'Bearer realm="t"']).map((c) => c.params['realm'])).toEqual(['r', 't']);
  });

  it('accepts unquoted token values and ignores garbage instead of throwing', () => {
    expect(parseChallenges('Bearer realm=https://a/token,service=reg')[0]?.params).toEqual({
      realm: 'https://a/token',
      service: 'reg',
    });
    expect(parseChallenges('')).toEqual([]);
    expect(parseChallenges(undefined)).toEqual([]);
    expect(() => parseChallenges('Bearer realm="unterminated')).not.toThrow();
  });
});
