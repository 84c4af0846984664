import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTempDir, type TempDir } from '@etch/test-utils';
import { runBinary } from '../binary.test.helper.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('etch-create-start-');
});
afterAll(() => dir.remove());

describe('etch create start-up', () => {
  it('loads the planning it shares with etch serve, not the server, its web framework or its metrics', async () => {
    // A resolve hook in the real binary's process lists what it loads.
    const hook = dir.join('list-modules.mjs');
    await writeFile(
      hook,
      `import { registerHooks } from 'node:module';
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    process.stderr.write('loaded ' + result.url + '\\n');
    return result;
  },
});
`,
    );
    const result = await runBinary(['create', '--help'], { cwd: dir.path, env: { NODE_OPTIONS: `--import=${hook}` } });
    expect(result.code, result.stderr).toBe(0);
    const loaded = result.stderr.match(/(?<=^loaded ).+$/gm) ?? [];
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
