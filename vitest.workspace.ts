/**
 * The test projects, one per package, named after it. Vitest 4 no longer reads this file by itself;
 * `vitest.config.ts` imports the list, so this stays the one place that names the projects. Each project holds
 * both kinds of test of its package; `pnpm test:unit` (`--mode unit`) keeps only its unit tests (vitest.scope.ts).
 */
export interface EtchTestProject {
  /** Project name shown by vitest: the package name. */
  name: string;
  /** Package folder under packages/. */
  dir: string;
  /** Per-test timeout; suites that start daemons need more. */
  testTimeout?: number;
}

export const projects: EtchTestProject[] = [
  { name: '@etch/format', dir: 'format' },
  { name: '@etch/disk', dir: 'disk' },
  { name: '@etch/tar', dir: 'tar' },
  { name: '@etch/registry', dir: 'registry', testTimeout: 120_000 },
  { name: '@etch/image', dir: 'image', testTimeout: 180_000 },
  { name: '@etch/baseimage', dir: 'baseimage', testTimeout: 120_000 },
  { name: '@etch/balena', dir: 'balena' },
  { name: '@etch/core', dir: 'core', testTimeout: 120_000 },
  { name: '@etch/apply', dir: 'apply', testTimeout: 120_000 },
  { name: 'dotetch', dir: 'dotetch', testTimeout: 120_000 },
  { name: '@etch/docker-store', dir: 'docker-store', testTimeout: 120_000 },
  { name: '@etch/serve', dir: 'serve', testTimeout: 120_000 },
];

export default projects;
