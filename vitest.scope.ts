import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/**
 * Which test files are integration tests, decided from their source so that a new or moved file is classified
 * with no list to keep: a test file is an integration test when it imports `@etch/test-utils/system` (system
 * commands, apt tools, servers), directly or through a relative module it imports (a shared `*.test.helper.ts`).
 * Every other test file is a unit test and runs in `pnpm test:unit` with nothing beyond Node.
 */

const SYSTEM_ENTRY = /['"]@etch\/test-utils\/system['"]/;
// `from './x.js'`, `import './x.js'`, `import('./x.js')`: the local modules a file pulls in.
const RELATIVE_IMPORT = /(?:\bfrom|\bimport)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g;

function sourceOf(specifier: string, importer: string): string | undefined {
  const path = resolve(dirname(importer), specifier);
  const candidates = [path.replace(/\.(m?)js$/, '.$1ts'), path, `${path}.ts`, join(path, 'index.ts')];
  return candidates.find((candidate) => candidate.endsWith('.ts') && existsSync(candidate));
}

function reachesSystem(file: string, seen: Map<string, boolean>): boolean {
  const known = seen.get(file);
  if (known !== undefined) return known;
  seen.set(file, false); // an import cycle adds nothing new
  const text = readFileSync(file, 'utf8');
  let found = SYSTEM_ENTRY.test(text);
  for (const match of text.matchAll(RELATIVE_IMPORT)) {
    if (found) break;
    const imported = sourceOf(match[1], file);
    if (imported) found = reachesSystem(imported, seen);
  }
  seen.set(file, found);
  return found;
}

/** Whether the test file at `file` (absolute) is an integration test. */
export function needsSystem(file: string): boolean {
  return reachesSystem(file, new Map());
}

/** The test files under `packageDir/src` (paths relative to `packageDir`) that need more than Node. */
export function integrationTestFiles(packageDir: string): string[] {
  const src = join(packageDir, 'src');
  if (!existsSync(src)) return [];
  const seen = new Map<string, boolean>();
  return readdirSync(src, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.test.ts'))
    .map((name) => join(src, name))
    .filter((file) => reachesSystem(file, seen))
    .map((file) => relative(packageDir, file))
    .sort();
}
