import { afterAll, expect } from 'vitest';
import { needsSystem } from './vitest.scope.js';

// Runs before each test file, in every mode. A unit test file (one that does not import @etch/test-utils/system)
// gets a PATH holding only node for as long as it runs, so a system command it spawns fails with ENOENT in
// `pnpm test` as in `pnpm test:unit`, instead of passing on a machine that happens to have the tool.
const file = expect.getState().testPath;
const nodeOnly = process.env['ETCH_NODE_ONLY_PATH'];
if (file !== undefined && nodeOnly !== undefined && !needsSystem(file)) {
  const path = process.env['PATH'];
  process.env['PATH'] = nodeOnly;
  afterAll(() => {
    process.env['PATH'] = path;
  });
}
