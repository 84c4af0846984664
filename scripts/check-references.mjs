// Each package's tsconfig references must equal its workspace dependencies, or `tsc -b` builds in the
// wrong order (or not at all) while pnpm links fine: the drift would only show on a clean clone.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dirs = readdirSync(join(root, 'packages'));
const nameToDir = new Map(
  dirs.map((dir) => [JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')).name, dir]),
);
let failed = false;
for (const dir of dirs) {
  const pkg = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
  const tsconfig = JSON.parse(readFileSync(join(root, 'packages', dir, 'tsconfig.json'), 'utf8'));
  const deps = { ...pkg.dependencies, ...pkg.devDependencies };
  const wanted = Object.entries(deps)
    .filter(([, range]) => String(range).startsWith('workspace:'))
    .map(([name]) => `../${nameToDir.get(name)}`)
    .sort();
  const actual = (tsconfig.references ?? []).map((ref) => ref.path).sort();
  if (JSON.stringify(wanted) !== JSON.stringify(actual)) {
    failed = true;
    console.error(
      `packages/${dir}: tsconfig references ${JSON.stringify(actual)} but workspace dependencies are ${JSON.stringify(wanted)}`,
    );
  }
}
const rootRefs = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8'))
  .references.map((ref) => ref.path)
  .sort();
const allDirs = dirs.map((dir) => `packages/${dir}`).sort();
if (JSON.stringify(rootRefs) !== JSON.stringify(allDirs)) {
  failed = true;
  console.error(`tsconfig.json references ${JSON.stringify(rootRefs)} but packages are ${JSON.stringify(allDirs)}`);
}
if (failed) process.exit(1);
console.log(`tsconfig references match workspace dependencies in ${dirs.length} packages`);
