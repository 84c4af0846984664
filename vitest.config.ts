import { mkdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';
import { integrationTestFiles } from './vitest.scope.js';
import { projects } from './vitest.workspace.js';

// Tests and `vitest` resolve workspace packages to their TypeScript sources, not dist.
const conditions = ['@etch/source'];
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/**
 * A PATH holding only `node`, for unit test files: one that spawns any other command fails with ENOENT instead
 * of quietly depending on the machine. Kept under node_modules so nothing is left in /tmp.
 */
function nodeOnlyPath(): string {
  const dir = here('./node_modules/.cache/etch-unit-path');
  const link = `${dir}/node`;
  mkdirSync(dir, { recursive: true });
  let current: string | undefined;
  try {
    current = readlinkSync(link);
  } catch {
    current = undefined;
  }
  if (current !== process.execPath) {
    // Another node ran the tests before: point the link at this one (a concurrent run may just have done so).
    rmSync(link, { force: true });
    try {
      symlinkSync(process.execPath, link);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  return dir;
}

/**
 * `vitest run` (what `pnpm test` runs): every test file, after the global setup installs the system tools.
 * `vitest run --mode unit` (`pnpm test:unit`): only the files that need nothing beyond Node (vitest.scope.ts
 * decides from their imports), with no global setup and `@etch/test-utils/system` replaced by a module that
 * throws. `--mode integration` (`pnpm test:integration`): only the other files, with the global setup. In every
 * mode a unit test file runs with a PATH holding only node, and `--project <package>` narrows the run to one package.
 */
export default defineConfig(({ mode }) => {
  // Inline projects with `extends: true` load this file again with the default mode: the root passes its own on.
  if (mode === 'unit' || mode === 'integration') process.env['ETCH_TEST_MODE'] = mode;
  const scope = process.env['ETCH_TEST_MODE'];
  const unit = scope === 'unit';
  const files = (dir: string) => {
    if (scope !== 'unit' && scope !== 'integration') return { include: ['src/**/*.test.ts'] };
    const integration = integrationTestFiles(here(`./packages/${dir}`));
    return unit
      ? { include: ['src/**/*.test.ts'], exclude: [...configDefaults.exclude, ...integration] }
      : { include: integration };
  };
  return {
    resolve: {
      conditions,
      ...(unit ? { alias: { '@etch/test-utils/system': here('./vitest.unit-guard.ts') } } : {}),
    },
    ssr: { resolve: { conditions } },
    test: {
      reporters: ['default', here('./scripts/vitest-summary-reporter.ts')],
      // Projects inherit this; the setup is idempotent, so running it once per project costs nothing.
      globalSetup: unit ? [] : [here('./vitest.global-setup.ts')],
      // Unit test files run with a PATH holding only node, in this run and in the full one (vitest.unit-setup.ts).
      env: { ETCH_NODE_ONLY_PATH: nodeOnlyPath() },
      setupFiles: [here('./vitest.unit-setup.ts')],
      // Unit tests need no process of their own each: threads start faster and cost about a third less CPU.
      ...(unit ? { pool: 'threads' as const } : {}),
      projects: projects.map((project) => ({
        extends: true,
        test: {
          name: project.name,
          root: `packages/${project.dir}`,
          ...files(project.dir),
          testTimeout: project.testTimeout ?? 20_000,
          hookTimeout: 600_000,
        },
      })),
    },
  };
});
