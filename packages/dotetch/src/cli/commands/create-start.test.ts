import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { modulesLoadedBy } from '../binary.test.helper.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('etch-create-start-');
});
afterAll(() => dir.remove());

describe('etch create start-up', () => {
  it('loads the planning it shares with etch serve, not the server, its web framework or its metrics', async () => {
    const { code, stderr, urls: loaded } = await modulesLoadedBy(['create', '--help'], dir.path);
    expect(code, stderr).toBe(0);
    expect(
      loaded.some((url) => /\/packages\/serve\/(dist|src)\/etch-options\.[jt]s$/.test(url)),
      'serve/etch-options loaded',
    ).toBe(true);
    for (const [what, pattern] of [
      ["serve's index", /\/packages\/serve\/(dist|src)\/index\.[jt]s$/],
      ["serve's server", /\/packages\/serve\/(dist|src)\/server\.[jt]s$/],
      ['fastify', /\/fastify@/],
      ['prom-client', /\/prom-client@/],
      ['OpenTelemetry', /\/@opentelemetry\+api@/],
    ] as const)
      expect(
        loaded.filter((url) => pattern.test(url)),
        `${what} loaded by etch create`,
      ).toEqual([]);
  });
});
