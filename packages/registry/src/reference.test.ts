import { describe, expect, it } from 'vitest';
import { isEtchError } from '@etch/format';
import { familiarString, parseReference } from './reference.js';

describe('parseReference', () => {
  it.each([
    ['alpine', 'docker.io/library/alpine', 'alpine', undefined, undefined],
    ['alpine:3.20', 'docker.io/library/alpine:3.20', 'alpine', '3.20', undefined],
    ['library/alpine', 'docker.io/library/alpine', 'alpine', undefined, undefined],
    ['user/app:1', 'docker.io/user/app:1', 'user/app', '1', undefined],
    ['index.docker.io/user/app', 'docker.io/user/app', 'user/app', undefined, undefined],
    ['registry-1.docker.io/library/debian:12', 'docker.io/library/debian:12', 'debian', '12', undefined],
    ['docker.io/library/a/b', 'docker.io/library/a/b', 'library/a/b', undefined, undefined],
    ['127.0.0.1:5000/etch/a:v1', '127.0.0.1:5000/etch/a:v1', '127.0.0.1:5000/etch/a', 'v1', undefined],
    ['localhost/app', 'localhost/app', 'localhost/app', undefined, undefined],
    ['localhost:5000/app', 'localhost:5000/app', 'localhost:5000/app', undefined, undefined],
    ['Example.COM/app', 'example.com/app', 'example.com/app', undefined, undefined],
    ['[::1]:5000/app:tag', '[::1]:5000/app:tag', '[::1]:5000/app', 'tag', undefined],
  ])('%s', (input, canonical, familiar, tag, digest) => {
    const ref = parseReference(input);
    expect(String(ref)).toBe(canonical);
    expect(ref.familiarName).toBe(familiar);
    expect(ref.tag).toBe(tag);
    expect(ref.digest).toBe(digest);
  });

  it('keeps tag and digest together, and prints the familiar form docker shows', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const ref = parseReference(`ghcr.io/org/app:1.2@${digest}`);
    expect(ref).toMatchObject({ registry: 'ghcr.io', repository: 'org/app', tag: '1.2', digest });
    expect(String(ref)).toBe(`ghcr.io/org/app:1.2@${digest}`);
    expect(familiarString(parseReference(`alpine@${digest}`))).toBe(`alpine@${digest}`);
  });

  it.each([
    ['', 'empty'],
    ['Alpine', 'lower-case'],
    ['user/App', 'lower-case'],
    ['alpine:', 'tag'],
    ['alpine:-x', 'tag'],
    [`alpine:${'t'.repeat(129)}`, 'tag'],
    ['alpine@sha256:abc', 'digest'],
    ['alpine@md5:0123456789abcdef0123456789abcdef', 'digest'],
    [' alpine', 'white space'],
    ['a'.repeat(64), 'image ID'],
    ['example.com:/app', 'registry host'],
    ['foo//bar', 'path component'],
  ])('refuses %j (%s)', (input, why) => {
    let error: unknown;
    try {
      parseReference(input);
    } catch (e) {
      error = e;
    }
    expect(isEtchError(error, 'ETCH_USAGE'), String(error)).toBe(true);
    expect(String(error)).toMatch(new RegExp(why === 'digest' ? 'digest|algorithm' : why, 'i'));
  });
});
