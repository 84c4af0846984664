import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { projects } from './vitest.workspace.js';

// Tests and `vitest` resolve workspace packages to their TypeScript sources, not dist.
const conditions = ['@etch/source'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    reporters: ['default', fileURLToPath(new URL('./scripts/vitest-summary-reporter.ts', import.meta.url))],
    // Projects inherit this; the setup is idempotent, so running it once per project costs nothing.
    globalSetup: [fileURLToPath(new URL('./vitest.global-setup.ts', import.meta.url))],
    projects: projects.map((project) => ({
      extends: true,
      test: {
        name: project.name,
        root: `packages/${project.dir}`,
        include: ['src/**/*.test.ts'],
        testTimeout: project.testTimeout ?? 20_000,
        hookTimeout: 600_000,
      },
    })),
  },
});
